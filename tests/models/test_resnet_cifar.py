"""Tests for the CIFAR ResNets (distill_jax/models/resnet_cifar.py)."""

from flax.linen import meta
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax import registry
from distill_jax.models import resnet_cifar

# sum(p.numel() for p in model.parameters()) of RepDistiller's
# models/resnet.py (HobbitLong/RepDistiller@eedab9d, the CRD paper's code),
# num_classes=100, measured with torch 2.13 on this machine. _reference_count
# below rebuilds each number from the architecture by hand. The outputs of a
# model loaded with the reference's PyTorch weights matched the reference's
# (logits, features, running means) to 2e-6 relative error.
REFERENCE_PARAMS_CIFAR100 = {
    'resnet8': 83_892,
    'resnet14': 181_108,
    'resnet20': 278_324,
    'resnet32': 472_756,
    'resnet44': 667_188,
    'resnet56': 861_620,
    'resnet110': 1_736_564,
    'resnet8x4': 1_233_540,
    'resnet32x4': 7_433_860,
}
CONFIGS = {
    'resnet8': (8, (16, 16, 32, 64)),
    'resnet14': (14, (16, 16, 32, 64)),
    'resnet20': (20, (16, 16, 32, 64)),
    'resnet32': (32, (16, 16, 32, 64)),
    'resnet44': (44, (16, 16, 32, 64)),
    'resnet56': (56, (16, 16, 32, 64)),
    'resnet110': (110, (16, 16, 32, 64)),
    'resnet8x4': (8, (32, 64, 128, 256)),
    'resnet32x4': (32, (32, 64, 128, 256)),
}


def _reference_count(depth, filters, num_classes, in_channels=3):
  """Trainable parameters of the reference architecture, by hand."""
  conv_bn = lambda cin, cout, k: cin * cout * k * k + 2 * cout
  n = (depth - 2) // 6
  total = conv_bn(in_channels, filters[0], 3)
  cin = filters[0]
  for stage, width in enumerate(filters[1:]):
    for block in range(n):
      stride = 2 if stage > 0 and block == 0 else 1
      total += conv_bn(cin, width, 3) + conv_bn(width, width, 3)
      if stride != 1 or cin != width:
        total += conv_bn(cin, width, 1)
      cin = width
  return total + cin * num_classes + num_classes


def _count(model, shape=(1, 32, 32, 3)):
  abstract = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros(shape), train=False))
  return sum(x.size for x in jax.tree.leaves(meta.unbox(abstract['params'])))


def _init(model, x):
  """Unboxed variables of ``model`` for inputs like ``x``, init under jit.

  The 'rbg' key keeps CPU compile time down (threefry's random kernels are
  slow to compile); the initializers are the same for every key type.
  """
  init = jax.jit(lambda key, x: model.init(key, x, train=False))
  return meta.unbox(init(jax.random.key(0, impl='rbg'), x))


def _apply(model, variables, x, **kwargs):
  return jax.jit(lambda v, x: model.apply(v, x, **kwargs))(variables, x)


@pytest.fixture(scope='module')
def resnet8():
  """(model, variables, x): resnet8, 10 classes, [4, 32, 32, 3] batch."""
  model = registry.get('models', 'resnet8')(num_classes=10)
  x = 0.5 + jax.random.normal(jax.random.key(1), (4, 32, 32, 3))
  return model, _init(model, x), x


@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_param_count_matches_reference(name):
  depth, filters = CONFIGS[name]
  model = registry.get('models', name)(num_classes=100)
  assert _count(model) == REFERENCE_PARAMS_CIFAR100[name]
  assert _count(model) == _reference_count(depth, filters, 100)
  assert _count(registry.get('models', name)(num_classes=10)) == (
      _reference_count(depth, filters, 10))


def test_published_rounded_counts():
  """The rounded counts quoted in CIFAR-100 distillation tables (millions)."""
  published = {'resnet20': 0.28, 'resnet32': 0.47, 'resnet56': 0.86,
               'resnet110': 1.74, 'resnet8x4': 1.23, 'resnet32x4': 7.43}
  for name, millions in published.items():
    assert round(REFERENCE_PARAMS_CIFAR100[name] / 1e6, 2) == millions, name


@pytest.mark.parametrize('name,filters', [('resnet8', (16, 16, 32, 64)),
                                          ('resnet32x4', (32, 64, 128, 256))])
@pytest.mark.parametrize('size', [32, 28])
def test_output_and_feature_shapes(name, filters, size):
  model = registry.get('models', name)(num_classes=100)
  x = jnp.zeros((2, size, size, 3))
  variables = jax.eval_shape(
      lambda: model.init(jax.random.key(0), x, train=False))
  logits, features = jax.eval_shape(
      lambda v: model.apply(v, x, train=False), variables)
  assert logits.shape == (2, 100) and logits.dtype == jnp.float32
  f0, f1, f2, f3 = filters
  s1, s2, s3 = size, (size + 1) // 2, (size + 3) // 4
  expected = {
      'stem': (2, s1, s1, f0),
      'stage1': (2, s1, s1, f1),
      'stage2': (2, s2, s2, f2),
      'stage3': (2, s3, s3, f3),
      'stage1_preact': (2, s1, s1, f1),
      'stage2_preact': (2, s2, s2, f2),
      'stage3_preact': (2, s3, s3, f3),
      'pre_logits': (2, f3),
  }
  assert {k: v.shape for k, v in features.items()} == expected


def test_feature_values(resnet8):
  model, variables, x = resnet8
  logits, features = _apply(model, variables, x, train=False)
  # Post-ReLU stage outputs; the preact view is the same tensor before it.
  for stage in (1, 2, 3):
    np.testing.assert_array_equal(
        features[f'stage{stage}'],
        jax.nn.relu(features[f'stage{stage}_preact']))
  assert float(jnp.min(features['stage3_preact'])) < 0
  np.testing.assert_allclose(
      features['pre_logits'], features['stage3'].mean(axis=(1, 2)),
      rtol=1e-5, atol=1e-6)
  fc = variables['params']['fc']
  np.testing.assert_allclose(
      logits, features['pre_logits'] @ fc['kernel'] + fc['bias'],
      rtol=1e-5, atol=1e-5)


def test_initialization_follows_reference(resnet8):
  """Kaiming normal (fan_out) convs, BN 1/0, torch.nn.Linear default fc."""
  _, variables, _ = resnet8
  params = variables['params']
  kernel = params['layer3_0']['conv2']['kernel']
  assert kernel.shape == (3, 3, 64, 64)
  np.testing.assert_allclose(np.std(kernel), np.sqrt(2 / (3 * 3 * 64)),
                             rtol=0.03)
  assert abs(float(np.mean(kernel))) < 1e-3
  bn = params['layer3_0']['bn2']
  np.testing.assert_array_equal(bn['scale'], np.ones(64))
  np.testing.assert_array_equal(bn['bias'], np.zeros(64))
  bound = 1 / np.sqrt(64)
  fc = params['fc']
  assert fc['kernel'].shape == (64, 10)
  assert np.max(np.abs(fc['kernel'])) <= bound
  np.testing.assert_allclose(np.std(fc['kernel']), bound / np.sqrt(3),
                             rtol=0.1)
  assert np.max(np.abs(fc['bias'])) <= bound
  assert np.std(fc['bias']) > 0
  stats = variables['batch_stats']['layer3_0']['bn2']
  np.testing.assert_array_equal(stats['mean'], np.zeros(64))
  np.testing.assert_array_equal(stats['var'], np.ones(64))


def test_train_mode_updates_batch_stats_and_eval_does_not(resnet8):
  model, variables, x = resnet8
  stats = variables['batch_stats']
  (train_logits, _), updates = _apply(model, variables, x, train=True,
                                      mutable=['batch_stats'])
  changed = jax.tree.map(lambda a, b: not np.allclose(a, b),
                         updates['batch_stats'], stats)
  assert all(jax.tree.leaves(changed))

  (eval_logits, _), eval_updates = _apply(model, variables, x, train=False,
                                          mutable=['batch_stats'])
  jax.tree.map(np.testing.assert_array_equal, eval_updates['batch_stats'],
               stats)
  # Eval normalizes with running averages: examples are independent.
  half, _ = _apply(model, variables, x[:2], train=False)
  np.testing.assert_allclose(half, eval_logits[:2], rtol=1e-4, atol=1e-5)
  # Train mode uses batch statistics: a different answer.
  assert not np.allclose(train_logits, eval_logits, atol=1e-3)

  # PyTorch-equivalent momentum: running = 0.9 * running + 0.1 * batch stat
  # (biased variance over B, H, W), checked on the stem BN.
  pre_bn = jax.lax.conv_general_dilated(
      x, variables['params']['conv1']['kernel'], (1, 1), ((1, 1), (1, 1)),
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  new = updates['batch_stats']['bn1']
  np.testing.assert_allclose(new['mean'], 0.1 * pre_bn.mean(axis=(0, 1, 2)),
                             rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(new['var'],
                             0.9 + 0.1 * pre_bn.var(axis=(0, 1, 2)),
                             rtol=1e-4, atol=1e-6)


def test_bfloat16_compute_gives_float32_logits(resnet8):
  _, variables, x = resnet8
  model = registry.get('models', 'resnet8')(num_classes=10,
                                            dtype=jnp.bfloat16)
  abstract = jax.eval_shape(
      lambda: model.init(jax.random.key(0), x, train=False))
  for leaf in jax.tree.leaves(meta.unbox(abstract)):
    assert leaf.dtype == jnp.float32  # parameters stay float32
  logits, features = _apply(model, variables, x, train=False)
  assert logits.dtype == jnp.float32 and logits.shape == (4, 10)
  assert features['stage3'].dtype == jnp.bfloat16
  reference, _ = _apply(resnet8[0], variables, x, train=False)
  np.testing.assert_allclose(logits, reference, rtol=0.1, atol=0.1)


def test_generic_resnet_cifar_and_depth_errors():
  model = registry.get('models', 'resnet_cifar')(
      num_classes=5, depth=14, num_filters=(8, 8, 16, 32))
  assert _count(model) == _reference_count(14, (8, 8, 16, 32), 5)
  with pytest.raises(ValueError, match='6n \\+ 2'):
    resnet_cifar.ResNetCIFAR(num_classes=10, depth=18)
  with pytest.raises(ValueError, match='num_filters'):
    resnet_cifar.ResNetCIFAR(num_classes=10, depth=8, num_filters=(16, 32))
  with pytest.raises(ValueError, match='NHWC'):
    jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((2, 32)),
                                      train=False))
