"""Numerical guards: a NaN/Inf loss or gradient never reaches the state or a checkpoint.

A known step is poisoned by wrapping the ``ce`` method's loss (pytest's
monkeypatch, undone after each test): ``loss`` adds +Inf to the loss value,
``grad_norm`` leaves the value alone and turns the gradient into NaN.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax import checkpoint
from distill_jax import steps
from distill_jax import train
from distill_jax.methods.ce import CrossEntropy
from distill_jax.state import DistillState

BAD_STEP = 5  # The 5th update (from state.step 4); checkpoints and logs count updates.


@jax.custom_vjp
def _nan_gradient(x, bad):
  return x


_nan_gradient.defvjp(lambda x, bad: (x, bad),
                     lambda bad, g: (jnp.where(bad, jnp.nan, g), None))


@pytest.fixture
def poison(monkeypatch):
  """``poison('loss' | 'grad_norm')``: the ``ce`` loss goes non-finite at ``BAD_STEP``."""
  original = CrossEntropy.loss

  def apply(kind):
    def loss(self, student_out, teacher_out, batch, aux, step):
      value, metrics = original(self, student_out, teacher_out, batch, aux, step)
      bad = step == BAD_STEP - 1
      if kind == 'loss':
        return value + jnp.where(bad, jnp.inf, 0.0), metrics
      return _nan_gradient(value, bad), metrics
    monkeypatch.setattr(CrossEntropy, 'loss', loss)
  return apply


def _config(small_config, data_dir, policy, checkpoint_every_steps, **overrides):
  steps_per_epoch = 1437 // 16  # digits' training split at batch 16 (train._every rounds).
  return small_config(data_dir, **{
      'train.num_steps': 8, 'train.log_every_steps': 4, 'train.eval_every_epochs': 0.0,
      'train.nan_policy': policy, 'train.keep_checkpoints': 10,
      'train.checkpoint_every_epochs': checkpoint_every_steps / steps_per_epoch, **overrides})


def _states(workdir, config, *at_steps):
  """The states saved at ``at_steps``, on the host."""
  abstract_state = train.build(config).compiled.abstract_state
  manager = checkpoint.make_manager(workdir, 10)
  states = [jax.device_get(checkpoint.restore_step(manager, abstract_state, s)) for s in at_steps]
  manager.close()
  return states


@pytest.mark.parametrize('kind', ['loss', 'grad_norm'])
def test_stop_names_the_step_metric_and_last_good_checkpoint(
    kind, poison, data_dir, small_config, tmp_path):
  poison(kind)
  workdir = str(tmp_path / 'run')
  # Checkpoints every 2 steps, logs every 4: the bad step 5 is found at the
  # checkpoint of step 6, which must not be written.
  with pytest.raises(train.NonFiniteError) as error:
    train.run(_config(small_config, data_dir, 'stop', 2), workdir)
  message = str(error.value)
  assert f'Step {BAD_STEP}: the {kind} is not finite' in message
  assert 'last good checkpoint is step 4' in message and '(verified; ' in message
  assert os.path.join(workdir, 'checkpoints', '4') in message
  assert 'train.nan_policy=skip' in message
  assert checkpoint.latest_step(workdir) == 4
  assert sorted(int(d) for d in os.listdir(os.path.join(workdir, 'checkpoints'))) == [2, 4]
  assert not os.path.exists(os.path.join(workdir, 'results.json'))


def test_skip_drops_the_step_and_goes_on(poison, data_dir, small_config, tmp_path):
  poison('grad_norm')
  workdir = str(tmp_path / 'run')
  config = _config(small_config, data_dir, 'skip', 1)
  results = train.run(config, workdir)
  assert results['nonfinite_steps'] == 1
  rows = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))]
  train_rows = {r['step']: r for r in rows if 'train/loss' in r}
  assert train_rows[4]['train/nonfinite_steps'] == 0
  assert train_rows[8]['train/nonfinite_steps'] == 1
  assert np.isfinite(train_rows[8]['train/grad_norm'])  # The mean leaves the bad step out.
  before, skipped, after = _states(workdir, config, BAD_STEP - 1, BAD_STEP, BAD_STEP + 1)
  assert int(skipped.step) == BAD_STEP
  # Everything but the step is what it was before the bad step ...
  jax.tree.map(np.testing.assert_array_equal, skipped.replace(step=before.step), before)
  # ... and training went on from there.
  assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(after.params),
                                                       jax.tree.leaves(skipped.params)))
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(after))


def _assert_equal_but_step(a, b):
  for (path, x), (_, y) in zip(jax.tree_util.tree_leaves_with_path(a),
                               jax.tree_util.tree_leaves_with_path(b), strict=True):
    if getattr(path[-1], 'name', None) != 'step':
      np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))


@pytest.mark.parametrize('scheme, overrides', [
    ('dml', {}), ('deep_to_shallow', {'student.kwargs.hidden_sizes': (32, 16)})])
def test_every_scheme_step_drops_a_nonfinite_update(scheme, overrides, poison, data_dir,
                                                    small_config, tmp_path):
  poison('loss')
  workdir = str(tmp_path / 'run')
  config = _config(small_config, data_dir, 'skip', 1, **{
      'scheme.name': scheme, 'train.num_steps': BAD_STEP, **overrides})
  assert train.run(config, workdir)['nonfinite_steps'] == 1
  before, skipped = _states(workdir, config, BAD_STEP - 1, BAD_STEP)
  assert int(skipped.step) == BAD_STEP
  _assert_equal_but_step(skipped, before)


def test_keep_if_finite_only_advances_the_step():
  old = DistillState(step=jnp.int32(3), params={'w': jnp.ones(2)}, model_state={},
                     aux_params={}, opt_state=(jnp.zeros(2),), method_state={},
                     rng=jnp.zeros(2, jnp.uint32))
  new = old.replace(step=jnp.int32(4), params={'w': jnp.full(2, jnp.nan)},
                    opt_state=(jnp.ones(2),))
  kept = steps.keep_if_finite(steps.is_finite_update(jnp.float32(1.0), jnp.float32(jnp.inf)),
                              new, old)
  assert int(kept.step) == 4
  np.testing.assert_array_equal(kept.params['w'], old.params['w'])
  np.testing.assert_array_equal(kept.opt_state[0], old.opt_state[0])
  taken = steps.keep_if_finite(steps.is_finite_update(jnp.float32(1.0), jnp.float32(2.0)),
                               new, old)
  jax.tree.map(np.testing.assert_array_equal, taken, new)


def test_unknown_policy_is_refused_before_anything_is_written(data_dir, small_config, tmp_path):
  with pytest.raises(ValueError, match="nan_policy='ignore'.*'stop'.*'skip'"):
    train.run(small_config(data_dir, **{'train.nan_policy': 'ignore'}), str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run')
