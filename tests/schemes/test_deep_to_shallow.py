"""deep_to_shallow: exits learn from the deepest classifier, which learns from labels only."""

import jax
import numpy as np
import pytest

from distill_jax import train
from distill_jax.methods.ce import label_cross_entropy
from distill_jax.data import views
from distill_jax.schemes import deep_to_shallow


def _byot(small_config, data_dir, **overrides):
  return small_config(data_dir, **{
      'student.kwargs.hidden_sizes': (32, 16), 'method.name': 'kd', 'method.alpha': 0.5,
      'scheme.name': 'deep_to_shallow', 'optim.momentum': 0.0, **overrides})


def test_default_exits_are_the_intermediate_stages():
  shapes = {'stem': 0, 'stage1': 0, 'stage2': 0, 'stage10': 0, 'pre_logits': 0}
  assert deep_to_shallow.default_exits(shapes) == ('stage1', 'stage2')
  assert deep_to_shallow.default_exits({'hidden1': 0, 'hidden2': 0}) == ('hidden1',)


def test_deepest_classifier_learns_from_labels_only_and_exits_learn(small_config, data_dir):
  config = _byot(small_config, data_dir)
  exp = train.build(config)
  compiled, context = exp.compiled, exp.context
  state = jax.device_get(compiled.init_fn(jax.random.PRNGKey(0)))
  batches = exp.train_batches(0)
  batch = train.global_batch(next(batches), exp.compiled.batch_sharding)
  new_state, metrics = compiled.train_fn(jax.device_put(state), None, batch)
  images = views.augmented_view(jax.random.PRNGKey(0), batch, **context.view_kwargs)['image']

  def ce(fc_params):
    params = {**state.params, 'fc': fc_params}
    logits = context.student.apply({'params': params}, images, train=True)[0]
    return label_cross_entropy(logits, batch)

  grads = jax.grad(ce)(state.params['fc'])
  expected = jax.tree.map(lambda p, g: p - config.optim.learning_rate * g, state.params['fc'], grads)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               jax.device_get(new_state.params['fc']), expected)
  head_moved = jax.tree.map(lambda a, b: np.abs(a - b).max(),
                            jax.device_get(new_state.aux_params['heads']),
                            state.aux_params['heads'])
  assert max(jax.tree.leaves(head_moved)) > 0
  assert {'exit_hidden1_loss', 'exit_hidden1_accuracy', 'ce'} <= set(metrics)


def test_evaluation_reports_every_exit_and_the_ensemble(small_config, data_dir, tmp_path):
  results = train.run(_byot(small_config, data_dir), str(tmp_path / 'run'))['eval']
  assert {'accuracy', 'exit_hidden1_accuracy', 'ensemble_accuracy'} <= set(results)


@pytest.mark.parametrize('overrides, message', [
    ({'scheme.exits': ('hidden7',)}, 'no feature.*hidden7'),
    ({'student.kwargs.hidden_sizes': (32,)}, 'no intermediate stage'),
    ({'scheme.feature_weight': -1.0}, 'feature_weight must be >= 0'),
    ({'teacher.workdir': '/x'}, 'its own teacher'),
])
def test_bad_input(overrides, message, small_config, data_dir):
  with pytest.raises(ValueError, match=message):
    train.build(_byot(small_config, data_dir, **overrides))
