"""Tests for the small CNN (distill_jax/models/cnn.py)."""

import flax
from flax.linen import meta
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax import registry
from distill_jax.models import cnn


def _reference_count(in_channels, widths, num_classes):
  """Trainable parameters by hand: bias-free 3x3 convs + BN, then fc."""
  conv_bn = lambda cin, cout: cin * cout * 9 + 2 * cout
  total = conv_bn(in_channels, widths[0])
  for cin, cout in zip((widths[0],) + tuple(widths[:-1]), widths):
    total += conv_bn(cin, cout)
  return total + widths[-1] * num_classes + num_classes


def _abstract(model, x):
  return jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))


def _count(model, shape):
  abstract = _abstract(model, jnp.zeros(shape))
  return sum(x.size for x in jax.tree.leaves(meta.unbox(abstract['params'])))


def _apply(model, variables, x, **kwargs):
  return jax.jit(lambda v, x: model.apply(v, x, **kwargs))(variables, x)


@pytest.fixture(scope='module')
def mnist_cnn():
  """(model, variables, x): default CNN, dropout 0.5, [4, 28, 28, 1] batch."""
  model = registry.get('models', 'cnn')(num_classes=10, dropout_rate=0.5)
  x = 0.5 + jax.random.normal(jax.random.key(1), (4, 28, 28, 1))
  # 'rbg' keys compile faster on CPU than threefry; same initializers.
  init = jax.jit(lambda key, x: model.init(key, x, train=False))
  return model, meta.unbox(init(jax.random.key(0, impl='rbg'), x)), x


def test_param_counts():
  model = registry.get('models', 'cnn')(num_classes=10)
  assert _count(model, (1, 28, 28, 1)) == 103_466
  assert _count(model, (1, 28, 28, 1)) == _reference_count(
      1, (32, 64, 128), 10)
  assert _count(model, (1, 32, 32, 3)) == 104_042
  small = registry.get('models', 'cnn')(num_classes=100, widths=(8, 16))
  assert _count(small, (1, 32, 32, 3)) == _reference_count(3, (8, 16), 100)


@pytest.mark.parametrize('shape,sizes', [((2, 28, 28, 1), (28, 14, 7)),
                                         ((2, 32, 32, 3), (32, 16, 8))])
def test_output_and_feature_shapes(shape, sizes):
  model = registry.get('models', 'cnn')(num_classes=10, widths=(8, 16, 24))
  x = jnp.zeros(shape)
  logits, features = jax.eval_shape(
      lambda v: model.apply(v, x, train=False), _abstract(model, x))
  assert logits.shape == (2, 10) and logits.dtype == jnp.float32
  s1, s2, s3 = sizes
  assert {k: v.shape for k, v in features.items()} == {
      'stem': (2, s1, s1, 8),
      'stage1': (2, s1, s1, 8),
      'stage2': (2, s2, s2, 16),
      'stage3': (2, s3, s3, 24),
      'pre_logits': (2, 24),
  }


def test_two_stages_and_empty_widths_error():
  model = registry.get('models', 'cnn')(num_classes=10, widths=(8, 16))
  x = jnp.zeros((2, 28, 28, 1))
  _, features = jax.eval_shape(
      lambda v: model.apply(v, x, train=False), _abstract(model, x))
  assert sorted(features) == ['pre_logits', 'stage1', 'stage2', 'stem']
  with pytest.raises(ValueError, match='widths'):
    cnn.CNN(num_classes=10, widths=())


def test_feature_values(mnist_cnn):
  model, variables, x = mnist_cnn
  params = variables['params']
  logits, features = _apply(model, variables, x, train=False)
  for name in ('stem', 'stage1', 'stage2', 'stage3'):
    assert float(jnp.min(features[name])) >= 0  # after ReLU
  # stage2 = ReLU(BN(conv(max_pool(stage1)))); fresh BN stats: mean 0, var 1.
  pooled = jax.lax.reduce_window(features['stage1'], -jnp.inf, jax.lax.max,
                                 (1, 2, 2, 1), (1, 2, 2, 1), 'VALID')
  conv = jax.lax.conv_general_dilated(
      pooled, params['stage2_conv']['kernel'], (1, 1), ((1, 1), (1, 1)),
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  np.testing.assert_allclose(features['stage2'],
                             jax.nn.relu(conv / np.sqrt(1 + 1e-5)),
                             rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(features['pre_logits'],
                             features['stage3'].mean(axis=(1, 2)),
                             rtol=1e-5, atol=1e-6)
  fc = params['fc']
  np.testing.assert_allclose(
      logits, features['pre_logits'] @ fc['kernel'] + fc['bias'],
      rtol=1e-5, atol=1e-5)
  kernel = params['stage3_conv']['kernel']  # [3, 3, 64, 128]
  np.testing.assert_allclose(np.std(kernel), np.sqrt(2 / (9 * 128)),
                             rtol=0.03)


def test_train_mode_batch_stats_and_dropout(mnist_cnn):
  model, variables, x = mnist_cnn
  stats = variables['batch_stats']
  train = jax.jit(lambda v, x, r: model.apply(
      v, x, train=True, mutable=['batch_stats'], rngs={'dropout': r}))
  key = lambda seed: jax.random.key(seed, impl='rbg')  # fast CPU compile
  (a, features), updates = train(variables, x, key(0))
  (b, _), _ = train(variables, x, key(1))
  changed = jax.tree.map(lambda u, s: not np.allclose(u, s),
                         updates['batch_stats'], stats)
  assert all(jax.tree.leaves(changed))
  assert not np.allclose(a, b, atol=1e-4)  # dropout differs by rng
  # Dropout acts on the pooled vector only: the features do not depend on it.
  (_, features_b), _ = train(variables, x, key(1))
  np.testing.assert_array_equal(features['pre_logits'],
                                features_b['pre_logits'])
  with pytest.raises(flax.errors.InvalidRngError):
    jax.eval_shape(lambda: model.apply(variables, x, train=True,
                                       mutable=['batch_stats']))

  (eval_logits, _), eval_updates = _apply(model, variables, x, train=False,
                                          mutable=['batch_stats'])
  jax.tree.map(np.testing.assert_array_equal, eval_updates['batch_stats'],
               stats)
  again, _ = _apply(model, variables, x, train=False)
  np.testing.assert_array_equal(again, eval_logits)


def test_bfloat16_compute_gives_float32_logits(mnist_cnn):
  model, variables, x = mnist_cnn
  bf16 = model.clone(dtype=jnp.bfloat16)
  for leaf in jax.tree.leaves(meta.unbox(_abstract(bf16, x))):
    assert leaf.dtype == jnp.float32
  logits, features = _apply(bf16, variables, x, train=False)
  assert logits.dtype == jnp.float32 and logits.shape == (4, 10)
  assert features['stage3'].dtype == jnp.bfloat16
  reference, _ = _apply(model, variables, x, train=False)
  np.testing.assert_allclose(logits, reference, rtol=0.1, atol=0.1)
