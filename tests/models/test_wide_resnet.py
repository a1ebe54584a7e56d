"""Tests for the Wide ResNets (distill_jax/models/wide_resnet.py)."""

import flax
from flax.linen import meta
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax import registry
from distill_jax.models import wide_resnet

# sum(p.numel() for p in model.parameters()) of RepDistiller's models/wrn.py
# (HobbitLong/RepDistiller@eedab9d, the CRD paper's code), num_classes=100,
# measured with torch 2.13 on this machine; _reference_count rebuilds them by
# hand. A model loaded with the reference's PyTorch weights matched its
# logits, features and running means to 2e-6 relative error.
REFERENCE_PARAMS_CIFAR100 = {
    'wrn_16_1': 180_916,
    'wrn_16_2': 703_284,
    'wrn_40_1': 569_780,
    'wrn_40_2': 2_255_156,
}
CONFIGS = {
    'wrn_16_1': (16, 1),
    'wrn_16_2': (16, 2),
    'wrn_40_1': (40, 1),
    'wrn_40_2': (40, 2),
}


def _reference_count(depth, widen, num_classes, in_channels=3):
  """Trainable parameters of the reference architecture, by hand."""
  n = (depth - 4) // 6
  total = in_channels * 16 * 9  # stem conv, no BN of its own
  cin = 16
  for width in (16 * widen, 32 * widen, 64 * widen):
    for _ in range(n):
      total += 2 * cin + cin * width * 9 + 2 * width + width * width * 9
      if cin != width:
        total += cin * width  # 1x1 projection shortcut
      cin = width
  return total + 2 * cin + cin * num_classes + num_classes


def _count(model, shape=(1, 32, 32, 3)):
  abstract = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros(shape), train=False))
  return sum(x.size for x in jax.tree.leaves(meta.unbox(abstract['params'])))


def _apply(model, variables, x, **kwargs):
  return jax.jit(lambda v, x: model.apply(v, x, **kwargs))(variables, x)


@pytest.fixture(scope='module')
def wrn():
  """(model, variables, x): WRN-16-1 with dropout 0.3, [4, 32, 32, 3] batch."""
  model = registry.get('models', 'wrn_16_1')(num_classes=10, dropout_rate=0.3)
  x = 0.5 + jax.random.normal(jax.random.key(1), (4, 32, 32, 3))
  # 'rbg' keys compile faster on CPU than threefry; same initializers.
  init = jax.jit(lambda key, x: model.init(key, x, train=False))
  return model, meta.unbox(init(jax.random.key(0, impl='rbg'), x)), x


@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_param_count_matches_reference(name):
  depth, widen = CONFIGS[name]
  model = registry.get('models', name)(num_classes=100)
  assert _count(model) == REFERENCE_PARAMS_CIFAR100[name]
  assert _count(model) == _reference_count(depth, widen, 100)


def test_published_rounded_counts():
  """The rounded counts quoted in CIFAR-100 distillation tables (millions)."""
  published = {'wrn_16_2': 0.70, 'wrn_40_1': 0.57, 'wrn_40_2': 2.26}
  for name, millions in published.items():
    assert round(REFERENCE_PARAMS_CIFAR100[name] / 1e6, 2) == millions, name


def test_generic_wide_resnet():
  model = registry.get('models', 'wide_resnet')(
      num_classes=10, depth=22, widen_factor=3, dropout_rate=0.1)
  assert _count(model) == _reference_count(22, 3, 10)
  with pytest.raises(ValueError, match='6n \\+ 4'):
    wide_resnet.WideResNet(num_classes=10, depth=20)
  with pytest.raises(ValueError, match='widen_factor'):
    wide_resnet.WideResNet(num_classes=10, depth=16, widen_factor=0)


@pytest.mark.parametrize('name,widen', [('wrn_16_2', 2), ('wrn_40_1', 1)])
def test_output_and_feature_shapes(name, widen):
  model = registry.get('models', name)(num_classes=100)
  x = jnp.zeros((2, 32, 32, 3))
  variables = jax.eval_shape(
      lambda: model.init(jax.random.key(0), x, train=False))
  logits, features = jax.eval_shape(
      lambda v: model.apply(v, x, train=False), variables)
  assert logits.shape == (2, 100) and logits.dtype == jnp.float32
  c1, c2, c3 = 16 * widen, 32 * widen, 64 * widen
  expected = {
      'stem': (2, 32, 32, 16),
      'stage1': (2, 32, 32, c1),
      'stage2': (2, 16, 16, c2),
      'stage3': (2, 8, 8, c3),
      'stage1_preact': (2, 32, 32, c1),
      'stage2_preact': (2, 16, 16, c2),
      'stage3_preact': (2, 8, 8, c3),
      'pre_logits': (2, c3),
  }
  assert {k: v.shape for k, v in features.items()} == expected


def test_feature_values(wrn):
  model, variables, x = wrn
  params = variables['params']
  logits, features = _apply(model, variables, x, train=False)
  # The stem is the bare conv; stage outputs are residual sums (can be < 0).
  stem = jax.lax.conv_general_dilated(
      x, params['conv1']['kernel'], (1, 1), ((1, 1), (1, 1)),
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  np.testing.assert_allclose(features['stem'], stem, rtol=1e-5, atol=1e-5)
  assert float(jnp.min(features['stage1'])) < 0
  # preact = the following BN (fresh running stats: mean 0, var 1), no ReLU.
  for stage in (1, 2, 3):
    np.testing.assert_allclose(
        features[f'stage{stage}_preact'],
        features[f'stage{stage}'] / np.sqrt(1 + 1e-5), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(
      features['pre_logits'],
      jax.nn.relu(features['stage3_preact']).mean(axis=(1, 2)),
      rtol=1e-5, atol=1e-6)
  fc = params['fc']
  np.testing.assert_allclose(
      logits, features['pre_logits'] @ fc['kernel'] + fc['bias'],
      rtol=1e-5, atol=1e-5)


def test_initialization_follows_reference(wrn):
  """N(0, 2 / (9 * C_out)) convs, BN 1/0, fc: torch default kernel, 0 bias."""
  params = wrn[1]['params']
  kernel = params['block3_1']['conv2']['kernel']
  assert kernel.shape == (3, 3, 64, 64)
  np.testing.assert_allclose(np.std(kernel), np.sqrt(2 / (9 * 64)),
                             rtol=0.03)
  np.testing.assert_array_equal(params['bn1']['scale'], np.ones(64))
  np.testing.assert_array_equal(params['bn1']['bias'], np.zeros(64))
  assert np.max(np.abs(params['fc']['kernel'])) <= 1 / np.sqrt(64)
  np.testing.assert_array_equal(params['fc']['bias'], np.zeros(10))
  # Projection shortcuts exactly where the channel count changes.
  assert 'shortcut_conv' not in params['block1_0']  # 16 -> 16
  assert params['block2_0']['shortcut_conv']['kernel'].shape == (1, 1, 16, 32)
  assert 'shortcut_conv' not in params['block2_1']


def test_dropout_only_in_train_mode(wrn):
  model, variables, x = wrn
  # Eval mode needs no 'dropout' rng and is deterministic.
  eval_a, _ = _apply(model, variables, x, train=False)
  eval_b, _ = _apply(model, variables, x, train=False)
  np.testing.assert_array_equal(eval_a, eval_b)

  train = jax.jit(lambda v, x, r: model.apply(
      v, x, train=True, mutable=['batch_stats'], rngs={'dropout': r})[0][0])
  key = lambda seed: jax.random.key(seed, impl='rbg')  # fast CPU compile
  a, b = train(variables, x, key(0)), train(variables, x, key(1))
  assert not np.allclose(a, b, atol=1e-4)
  np.testing.assert_array_equal(train(variables, x, key(0)), a)
  with pytest.raises(flax.errors.InvalidRngError):
    jax.eval_shape(lambda: model.apply(variables, x, train=True,
                                       mutable=['batch_stats']))
  # Without dropout, train mode needs no rng.
  no_dropout = registry.get('models', 'wrn_16_1')(num_classes=10)
  jax.eval_shape(lambda: no_dropout.apply(variables, x, train=True,
                                          mutable=['batch_stats']))


def test_train_mode_updates_batch_stats_and_eval_does_not(wrn):
  model, variables, x = wrn
  stats = variables['batch_stats']
  _, updates = _apply(model.clone(dropout_rate=0.0), variables, x,
                      train=True, mutable=['batch_stats'])
  changed = jax.tree.map(lambda a, b: not np.allclose(a, b),
                         updates['batch_stats'], stats)
  assert all(jax.tree.leaves(changed))
  _, eval_updates = _apply(model, variables, x, train=False,
                           mutable=['batch_stats'])
  jax.tree.map(np.testing.assert_array_equal, eval_updates['batch_stats'],
               stats)


def test_bfloat16_compute_gives_float32_logits(wrn):
  model, variables, x = wrn
  bf16 = registry.get('models', 'wrn_16_1')(num_classes=10,
                                            dtype=jnp.bfloat16)
  abstract = jax.eval_shape(
      lambda: bf16.init(jax.random.key(0), x, train=False))
  for leaf in jax.tree.leaves(meta.unbox(abstract)):
    assert leaf.dtype == jnp.float32
  logits, features = _apply(bf16, variables, x, train=False)
  assert logits.dtype == jnp.float32 and logits.shape == (4, 10)
  assert features['stage3'].dtype == jnp.bfloat16
  reference, _ = _apply(model, variables, x, train=False)
  np.testing.assert_allclose(logits, reference, rtol=0.1, atol=0.1)
