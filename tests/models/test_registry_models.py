"""Contract checks shared by every registered model (distill_jax.models).

Each family has its own test file for shapes, parameter counts and
train/eval behaviour; this one checks what the trainer relies on for every
name: construction through the registry, ``(logits, features)`` outputs,
logical axis annotations, unboxing, and a sharded forward pass on the 8
simulated CPU devices.
"""

import flax.linen as nn
from flax import traverse_util
from flax.linen import meta
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax import registry

MODEL_NAMES = (
    'mlp', 'cnn', 'resnet_cifar', 'resnet8', 'resnet14', 'resnet20',
    'resnet32', 'resnet44', 'resnet56', 'resnet110', 'resnet8x4',
    'resnet32x4', 'wide_resnet', 'wrn_16_1', 'wrn_16_2', 'wrn_40_1',
    'wrn_40_2')

# The logical names every parameter must carry, by (module kind, leaf name).
CONV_KERNEL = (None, None, 'conv_in', 'conv_out')


def _expected_axes(path: tuple[str, ...], ndim: int):
  """The logical axes the house rules give a parameter at ``path``."""
  module, leaf = path[-2], path[-1]
  if leaf == 'kernel' and ndim == 4:
    return CONV_KERNEL
  if module == 'fc':
    return ('mlp', 'classes') if leaf == 'kernel' else ('classes',)
  if leaf == 'kernel':
    return ('embed', 'mlp')
  if leaf in ('scale', 'bias') and 'bn' in module:
    return ('conv_out',)
  if leaf == 'bias':
    return ('mlp',)
  raise AssertionError(f'unexpected parameter {path}')


def test_registry_lists_every_model():
  assert set(MODEL_NAMES) <= set(registry.names('models'))


def test_unknown_model_name_is_a_clear_error():
  with pytest.raises(ValueError, match='resnet8x4'):
    registry.get('models', 'resnet9')


def _fill(abstract_variables):
  """Concrete float32 variables for an abstract (``eval_shape``) init.

  Cheaper than ``model.init`` for the larger models on CPU (no per-shape
  random-number kernels to compile); the family tests run the real init.
  """
  rng = np.random.default_rng(0)

  def fill(path, leaf):
    if path[-1].key == 'var':
      return jnp.ones(leaf.shape, leaf.dtype)
    if path[-1].key in ('scale',):
      return jnp.ones(leaf.shape, leaf.dtype)
    fan_in = int(np.prod(leaf.shape[:-1])) if len(leaf.shape) > 1 else 1
    return jnp.asarray(rng.normal(0, 1 / np.sqrt(fan_in), leaf.shape),
                       leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, abstract_variables)


@pytest.mark.parametrize('name', MODEL_NAMES)
def test_every_model_constructs_and_runs(name):
  model = registry.get('models', name)(num_classes=7)
  x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
  abstract = jax.eval_shape(
      lambda: model.init(jax.random.key(1), x, train=False))

  # Every parameter is annotated with the house logical axis names, and
  # get_partition_spec / unbox see the same tree.
  boxed = traverse_util.flatten_dict(abstract['params'])
  for path, leaf in boxed.items():
    assert isinstance(leaf, nn.LogicallyPartitioned), path
    assert leaf.names == _expected_axes(path, leaf.value.ndim), path
  specs = nn.get_partition_spec(abstract)
  plain = meta.unbox(abstract)
  assert jax.tree.structure(specs) == jax.tree.structure(plain)
  for leaf in jax.tree.leaves(plain):
    assert leaf.dtype == jnp.float32
  assert set(plain) <= {'params', 'batch_stats'}

  logits, features = model.apply(_fill(plain), x, train=False)
  assert logits.shape == (2, 7) and logits.dtype == jnp.float32
  assert np.all(np.isfinite(logits))
  assert features['pre_logits'].ndim == 2
  assert features['pre_logits'].shape[0] == 2


def test_sharded_forward_with_logical_rules():
  """Params placed by logical rules on a 4x2 mesh run under jit."""
  model = registry.get('models', 'resnet8')(num_classes=10)
  x = jnp.ones((8, 32, 32, 3))
  abstract = jax.eval_shape(
      lambda: model.init(jax.random.key(0), x, train=False))
  # jax.make_mesh defaults to Explicit axes; the Linen models use Auto.
  mesh = jax.make_mesh((4, 2), ('data', 'tensor'),
                       axis_types=(jax.sharding.AxisType.Auto,) * 2)
  rules = (('conv_out', 'tensor'), ('classes', 'tensor'), ('mlp', None),
           ('conv_in', None), ('embed', None))
  shardings = nn.logical_to_mesh_sharding(
      nn.get_partition_spec(abstract), mesh, rules)
  variables = jax.device_put(_fill(meta.unbox(abstract)), shardings)
  kernel = variables['params']['layer3_0']['conv2']['kernel']
  assert kernel.sharding.spec == jax.sharding.PartitionSpec(
      None, None, None, 'tensor')
  x = jax.device_put(
      x, jax.sharding.NamedSharding(mesh,
                                    jax.sharding.PartitionSpec('data')))
  logits, _ = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
  expected, _ = model.apply(jax.device_get(variables), jax.device_get(x),
                            train=False)
  np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
