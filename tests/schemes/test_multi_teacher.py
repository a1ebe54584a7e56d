"""multi_teacher: one teacher equals offline KD; combination rules; bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax import registry
from distill_jax import train
from distill_jax.schemes import multi_teacher


def _kd(small_config, data_dir, **overrides):
  return small_config(data_dir, **{'method.name': 'kd', 'method.temperature': 4.0,
                                   'method.alpha': 0.5, **overrides})


def _train(config, steps=3):
  exp = train.build(config)
  compiled = exp.compiled
  state = compiled.init_fn(jax.random.PRNGKey(0))
  batches = exp.train_batches(0)
  losses = []
  for _ in range(steps):
    batch = train.global_batch(next(batches), exp.compiled.batch_sharding)
    state, metrics = compiled.train_fn(state, compiled.teacher_variables, batch)
    losses.append(float(metrics['loss']))
  return state, losses


@pytest.mark.parametrize('combine', ['weighted', 'confidence', 'log_mean'])
def test_one_teacher_equals_offline_kd(combine, small_config, data_dir, digits_teachers):
  teacher = digits_teachers['cnn']
  offline, offline_losses = _train(_kd(small_config, data_dir, **{'teacher.workdir': teacher}))
  multi, multi_losses = _train(_kd(small_config, data_dir, **{
      'scheme.name': 'multi_teacher', 'scheme.teachers': (teacher,),
      'scheme.combine': combine, 'scheme.combine_temperature': 4.0}))
  np.testing.assert_allclose(multi_losses, offline_losses, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               multi.params, offline.params)


def test_weighted_is_the_average_of_softened_distributions():
  rng = np.random.default_rng(0)
  logits = [jnp.asarray(rng.normal(size=(4, 6)), jnp.float32) for _ in range(3)]
  weights = jnp.asarray([0.5, 0.3, 0.2])
  combined = multi_teacher.combiners.weighted(logits, None, weights=weights, temperature=2.0)
  expected = sum(w * jax.nn.softmax(z / 2.0) for w, z in zip(weights, logits))
  np.testing.assert_allclose(jax.nn.softmax(combined / 2.0), expected, rtol=1e-5)


def test_log_mean_is_a_weighted_geometric_mean():
  rng = np.random.default_rng(1)
  logits = [jnp.asarray(rng.normal(size=(4, 6)), jnp.float32) for _ in range(2)]
  combined = multi_teacher.combiners.log_mean(logits, None, weights=jnp.asarray([0.25, 0.75]),
                                              temperature=1.0)
  geometric = jax.nn.softmax(logits[0]) ** 0.25 * jax.nn.softmax(logits[1]) ** 0.75
  np.testing.assert_allclose(jax.nn.softmax(combined), geometric / geometric.sum(-1, keepdims=True),
                             rtol=1e-5)


def test_confidence_prefers_the_teacher_that_is_right():
  right = jnp.asarray([[5.0, 0.0, 0.0]])
  wrong = jnp.asarray([[0.0, 5.0, 0.0]])
  combined = multi_teacher.combiners.confidence([right, wrong], jnp.asarray([0]),
                                                weights=jnp.asarray([0.5, 0.5]), temperature=1.0)
  probs = jax.nn.softmax(combined)[0]
  assert probs[0] > 0.9 and probs[1] < 0.1
  assert set(registry.names('teacher_combiners')) == {'weighted', 'confidence', 'log_mean'}


def test_evaluation_reports_every_teacher_and_the_ensemble(small_config, data_dir,
                                                           digits_teachers, tmp_path):
  config = _kd(small_config, data_dir, **{
      'scheme.name': 'multi_teacher',
      'scheme.teachers': (digits_teachers['mlp'], digits_teachers['cnn'])})
  results = train.run(config, str(tmp_path / 'run'))['eval']
  for key in ('accuracy', 'teacher0_accuracy', 'teacher1_accuracy', 'teacher_accuracy'):
    assert 0.0 <= results[key] <= 1.0, key


@pytest.mark.parametrize('overrides, message', [
    ({'scheme.teachers': ()}, 'needs config.scheme.teachers'),
    ({'scheme.weights': (0.0, 0.0)}, 'sum to a positive number'),
    ({'scheme.weights': (1.0, -1.0)}, '>= 0'),
    ({'scheme.weights': (1.0,)}, '1 entries for 2 teachers'),
    ({'scheme.weights': ('a', 1.0)}, 'must be numbers'),
    ({'scheme.combine': 'median'}, 'median'),
    ({'scheme.feature_teacher': 2}, 'feature_teacher=2'),
    ({'teacher.workdir': '/x'}, 'leave config.teacher.workdir empty'),
    ({'method.name': 'ce'}, 'uses no teacher'),
])
def test_bad_input(overrides, message, small_config, data_dir, digits_teachers, tmp_path):
  config = _kd(small_config, data_dir, **{
      'scheme.name': 'multi_teacher',
      'scheme.teachers': (digits_teachers['mlp'], digits_teachers['cnn']), **overrides})
  if overrides.get('method.name') == 'ce':
    config.method = {'name': 'ce'}
  with pytest.raises(ValueError, match=message):
    train.run(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()


def test_missing_teacher_run(small_config, data_dir, tmp_path):
  config = _kd(small_config, data_dir, **{'scheme.name': 'multi_teacher',
                                          'scheme.teachers': (str(tmp_path / 'nowhere'),)})
  with pytest.raises(FileNotFoundError, match='nowhere'):
    train.build(config)
