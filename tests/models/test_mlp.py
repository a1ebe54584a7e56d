"""Tests for the MLP (distill_jax/models/mlp.py)."""

import flax
from flax.linen import meta
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax import registry

# Hinton, Vinyals & Dean 2015, Sec. 3 (MNIST).
TEACHER = dict(hidden_sizes=(1200, 1200), dropout_rate=0.5,
               input_dropout_rate=0.2)
STUDENT = dict(hidden_sizes=(800, 800))


def _reference_count(sizes):
  """Weights + biases of a fully connected net with layer sizes ``sizes``."""
  return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


def _abstract(model, x):
  return jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))


def _count(model, shape):
  abstract = _abstract(model, jnp.zeros(shape))
  return sum(x.size for x in jax.tree.leaves(meta.unbox(abstract['params'])))


@pytest.fixture(scope='module')
def teacher():
  """(model, variables, x): Hinton's MNIST teacher on a [8, 28, 28, 1] batch."""
  model = registry.get('models', 'mlp')(num_classes=10, **TEACHER)
  x = jax.random.uniform(jax.random.key(1), (8, 28, 28, 1))
  # 'rbg' keys compile faster on CPU than threefry; same initializers.
  init = jax.jit(lambda key, x: model.init(key, x, train=False))
  return model, meta.unbox(init(jax.random.key(0, impl='rbg'), x)), x


def test_hinton_param_counts():
  teacher = registry.get('models', 'mlp')(num_classes=10, **TEACHER)
  student = registry.get('models', 'mlp')(num_classes=10, **STUDENT)
  assert _count(teacher, (1, 28, 28, 1)) == 2_395_210
  assert _count(teacher, (1, 28, 28, 1)) == _reference_count(
      (784, 1200, 1200, 10))
  assert _count(student, (1, 28, 28, 1)) == 1_276_810
  assert _count(student, (1, 28, 28, 1)) == _reference_count(
      (784, 800, 800, 10))


@pytest.mark.parametrize('shape', [(2, 28, 28, 1), (2, 32, 32, 3)])
def test_output_and_feature_shapes(shape):
  model = registry.get('models', 'mlp')(num_classes=10,
                                        hidden_sizes=(64, 32, 16))
  x = jnp.zeros(shape)
  abstract = _abstract(model, x)
  assert set(abstract) == {'params'}  # no batch norm
  assert abstract['params']['dense1']['kernel'].value.shape == (
      np.prod(shape[1:]), 64)
  logits, features = jax.eval_shape(
      lambda v: model.apply(v, x, train=False), abstract)
  assert logits.shape == (2, 10) and logits.dtype == jnp.float32
  assert {k: v.shape for k, v in features.items()} == {
      'hidden1': (2, 64), 'hidden2': (2, 32), 'hidden3': (2, 16),
      'pre_logits': (2, 16)}


def test_logical_axes():
  abstract = _abstract(registry.get('models', 'mlp')(num_classes=10),
                       jnp.zeros((1, 28, 28, 1)))
  params = abstract['params']
  for layer in ('dense1', 'dense2'):
    assert params[layer]['kernel'].names == ('embed', 'mlp')
    assert params[layer]['bias'].names == ('mlp',)
  assert params['fc']['kernel'].names == ('mlp', 'classes')
  assert params['fc']['bias'].names == ('classes',)


def test_initialization_is_torch_linear_default(teacher):
  params = teacher[1]['params']
  for layer, fan_in in (('dense1', 784), ('dense2', 1200), ('fc', 1200)):
    bound = 1 / np.sqrt(fan_in)
    kernel, bias = params[layer]['kernel'], params[layer]['bias']
    assert np.max(np.abs(kernel)) <= bound
    np.testing.assert_allclose(np.std(kernel), bound / np.sqrt(3), rtol=0.02)
    assert np.max(np.abs(bias)) <= bound and np.std(bias) > 0


def test_features_and_dropout_in_eval_mode(teacher):
  model, variables, x = teacher
  apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
  logits, features = apply(variables, x)
  again, _ = apply(variables, x)
  np.testing.assert_array_equal(logits, again)  # no dropout, no rng needed
  params = variables['params']
  flat = x.reshape(8, -1)
  hidden1 = jax.nn.relu(flat @ params['dense1']['kernel'] +
                        params['dense1']['bias'])
  np.testing.assert_allclose(features['hidden1'], hidden1, rtol=1e-5,
                             atol=1e-5)
  np.testing.assert_array_equal(features['pre_logits'], features['hidden2'])
  np.testing.assert_allclose(
      logits, features['hidden2'] @ params['fc']['kernel'] +
      params['fc']['bias'], rtol=1e-5, atol=1e-5)


def test_dropout_in_train_mode(teacher):
  model, variables, x = teacher
  train = jax.jit(lambda v, x, r: model.apply(v, x, train=True,
                                              rngs={'dropout': r}))
  key = lambda seed: jax.random.key(seed, impl='rbg')  # fast CPU compile
  (a, fa), (b, _) = train(variables, x, key(0)), train(variables, x, key(1))
  assert not np.allclose(a, b, atol=1e-4)
  np.testing.assert_array_equal(train(variables, x, key(0))[0], a)
  eval_features = model.apply(variables, x, train=False)[1]
  assert not np.allclose(fa['hidden1'], eval_features['hidden1'])
  with pytest.raises(flax.errors.InvalidRngError, match='dropout'):
    jax.eval_shape(lambda: model.apply(variables, x, train=True))
  # The trainer's uniform call works too: there are no batch_stats to update.
  _, updates = jax.eval_shape(lambda: model.apply(
      variables, x, train=True, mutable=['batch_stats'],
      rngs={'dropout': key(0)}))
  assert not updates

  # Input dropout 1.0 drops every pixel: hidden1 = ReLU(bias) everywhere.
  blind = model.clone(input_dropout_rate=1.0)
  _, features = blind.apply(variables, x, train=True,
                            rngs={'dropout': key(2)})
  np.testing.assert_allclose(
      features['hidden1'],
      np.broadcast_to(jax.nn.relu(variables['params']['dense1']['bias']),
                      (8, 1200)), rtol=1e-6)


def test_bfloat16_compute_gives_float32_logits(teacher):
  model, variables, x = teacher
  bf16 = model.clone(dtype=jnp.bfloat16)
  for leaf in jax.tree.leaves(meta.unbox(_abstract(bf16, x))):
    assert leaf.dtype == jnp.float32
  logits, features = jax.jit(
      lambda v, x: bf16.apply(v, x, train=False))(variables, x)
  assert logits.dtype == jnp.float32 and logits.shape == (8, 10)
  assert features['hidden1'].dtype == jnp.bfloat16
  reference, _ = model.apply(variables, x, train=False)
  np.testing.assert_allclose(logits, reference, rtol=0.05, atol=0.05)


def test_no_hidden_layers_is_a_linear_classifier():
  model = registry.get('models', 'mlp')(num_classes=3, hidden_sizes=())
  x = jnp.zeros((2, 4, 4, 1))
  logits, features = jax.eval_shape(
      lambda v: model.apply(v, x, train=False), _abstract(model, x))
  assert logits.shape == (2, 3)
  assert {k: v.shape for k, v in features.items()} == {'pre_logits': (2, 16)}
