"""The trainer end to end on real data (scikit-learn digits, 8 simulated devices)."""

import json
import os

import jax
import numpy as np
import pytest

from distill_jax import checkpoint
from distill_jax import train


@pytest.fixture(scope='module')
def teacher_dir(data_dir, small_config, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('runs') / 'teacher')
  train.run(small_config(data_dir, **{'train.num_steps': 20}), workdir)
  return workdir


def test_run_writes_the_workdir(teacher_dir):
  files = set(os.listdir(teacher_dir))
  assert {'config.json', 'metrics.jsonl', 'results.json', 'checkpoints', 'tensorboard'} <= files
  assert os.listdir(os.path.join(teacher_dir, 'tensorboard'))
  rows = [json.loads(line) for line in open(os.path.join(teacher_dir, 'metrics.jsonl'))]
  train_rows = [r for r in rows if 'train/loss' in r]
  assert [r['step'] for r in train_rows] == list(range(2, 21, 2))
  assert all(np.isfinite(r['train/loss']) for r in train_rows)
  assert all(0.0 <= r['train/input_wait_fraction'] <= 1.0 for r in train_rows)
  results = json.load(open(os.path.join(teacher_dir, 'results.json')))
  assert results['steps'] == 20
  assert results['eval']['examples'] == 360
  assert 0.0 <= results['eval']['accuracy'] <= 1.0
  assert results['eval']['errors'] == round(360 * (1 - results['eval']['accuracy']))
  assert checkpoint.read_config(teacher_dir)['student']['kwargs'] == {'hidden_sizes': [32]}


def test_distilled_student_reports_teacher_figures(teacher_dir, data_dir, small_config, tmp_path):
  config = small_config(data_dir, **{'teacher.workdir': teacher_dir})
  config.method.name = 'kd'
  config.method.temperature = 4.0
  results = train.run(config, str(tmp_path / 'kd'))['eval']
  teacher_results = json.load(open(os.path.join(teacher_dir, 'results.json')))['eval']
  assert results['teacher_accuracy'] == pytest.approx(teacher_results['accuracy'])
  assert 0.0 <= results['agreement'] <= 1.0
  assert results['kl_teacher_student'] >= 0.0


def _params(workdir, config):
  exp = train.build(config)
  manager = checkpoint.make_manager(workdir, 2)
  return checkpoint.restore_latest(manager, exp.compiled.abstract_state).params


def test_resume_continues_exactly(data_dir, small_config, tmp_path):
  straight = str(tmp_path / 'straight')
  resumed = str(tmp_path / 'resumed')
  config = small_config(data_dir, **{'train.num_steps': 4})
  train.run(config, straight)
  train.run(small_config(data_dir, **{'train.num_steps': 2}), resumed)
  train.run(config, resumed)
  rows = [json.loads(line) for line in open(os.path.join(resumed, 'metrics.jsonl'))]
  assert [r['step'] for r in rows if 'train/loss' in r] == [2, 4]
  jax.tree.map(np.testing.assert_array_equal, _params(straight, config),
               _params(resumed, config))


def _batch(exp, step):
  return train.global_batch(next(exp.train_batches(step)), exp.compiled.batch_sharding)


def _train_steps(exp, num_steps):
  state = exp.compiled.init_fn(jax.random.PRNGKey(0))
  for step in range(num_steps):
    state, step_metrics = exp.compiled.train_fn(state, exp.compiled.teacher_variables,
                                                _batch(exp, step))
  return state, step_metrics


def test_step_is_traced_and_compiled_once_before_training(data_dir, small_config, monkeypatch):
  traces = []
  real_step = train.schemes.offline.steps.train_step

  def counting_step(*args, **kwargs):
    traces.append(1)
    return real_step(*args, **kwargs)

  monkeypatch.setattr(train.schemes.offline.steps, 'train_step', counting_step)
  exp = train.build(small_config(data_dir))
  assert len(traces) == 1   # Traced (and compiled) by build, before any data.
  assert isinstance(exp.compiled.train_fn, jax.stages.Compiled)   # It cannot recompile.
  _train_steps(exp, 5)
  assert len(traces) == 1
  assert exp.compiled.memory['step_temp'] >= 0 and exp.compiled.memory['params'] > 0


def test_one_and_eight_devices_agree(data_dir, small_config):
  assert jax.device_count() == 8
  config = small_config(data_dir, **{'student.kwargs.dropout_rate': 0.3,
                                     'data.augment.crop_padding': 1})
  one, metrics_one = _train_steps(train.build(config, devices=jax.devices()[:1]), 3)
  eight, metrics_eight = _train_steps(train.build(config), 3)
  assert all(len(x.sharding.device_set) == 8 for x in jax.tree.leaves(eight.params))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               one.params, eight.params)
  np.testing.assert_allclose(metrics_one['loss'], metrics_eight['loss'], rtol=1e-5)
