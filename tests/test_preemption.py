"""Preemption and resume: a run killed (SIGKILL) or preempted (SIGTERM) mid-way
and resumed ends with the very state (params, optimizer state, step, rng) of an
uninterrupted run; half-written checkpoints are never restored.

The interrupted runs are real processes (``train_worker.py``, 8 simulated
devices as in conftest); the reruns to completion run in this process.
"""

import importlib.util
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading

import jax
import numpy as np
import pytest

from distill_jax import checkpoint
from distill_jax import preemption
from distill_jax import train

NUM_STEPS = 24
_WORKER_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'train_worker.py')
_spec = importlib.util.spec_from_file_location('train_worker', _WORKER_PATH)
worker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(worker)


def _final_state(workdir, straight):
  manager = checkpoint.make_manager(workdir, 3)
  state = checkpoint.restore_latest(manager, straight['abstract_state'])
  manager.close()
  return jax.device_get(state)


def _assert_same_state(a, b):
  """Bit for bit: params, optimizer state, step, rng (every leaf of the state)."""
  assert jax.tree.structure(a) == jax.tree.structure(b)
  jax.tree.map(np.testing.assert_array_equal, a, b)


@pytest.fixture(scope='module')
def straight(data_dir, tmp_path_factory):
  """The uninterrupted run: ``config``, ``workdir``, ``abstract_state``, final ``state``."""
  config = worker.worker_config(data_dir, NUM_STEPS)
  workdir = str(tmp_path_factory.mktemp('straight') / 'run')
  train.run(config, workdir)
  run = {'config': config, 'workdir': workdir,
         'abstract_state': train.build(config).compiled.abstract_state}
  return {**run, 'state': _final_state(workdir, run)}


@pytest.fixture(scope='module')
def compilation_cache(tmp_path_factory):
  """A persistent XLA cache shared by the worker processes (they compile the same steps)."""
  return {'JAX_COMPILATION_CACHE_DIR': str(tmp_path_factory.mktemp('xla_cache')),
          'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0',
          'JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES': '0'}


def _interrupt(workdir, data_dir, at_step, sig, env):
  """Runs the worker, sends ``sig`` once it has logged ``at_step``; returns (rc, output)."""
  process = subprocess.Popen(
      [sys.executable, _WORKER_PATH, workdir, data_dir, str(NUM_STEPS), '0.05'],
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, **env})
  watchdog = threading.Timer(120, process.kill)
  watchdog.start()
  lines, sent = [], False
  try:
    for line in process.stdout:
      lines.append(line)
      if not sent and line.split('] step ')[-1].startswith(f'{at_step}/{NUM_STEPS}'):
        process.send_signal(sig)
        sent = True
    rc = process.wait()
  finally:
    watchdog.cancel()
  output = ''.join(lines)
  assert sent, f'the worker never logged step {at_step}:\n{output}'
  return rc, output


def _train_rows(workdir):
  rows = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))]
  return [r['step'] for r in rows if 'train/loss' in r]


def test_sigkill_at_a_random_step_then_resume_is_bit_exact(straight, data_dir, tmp_path,
                                                            compilation_cache):
  config, expected = straight['config'], straight['state']
  at_step = random.randrange(2, NUM_STEPS - 3)
  workdir = str(tmp_path / 'run')
  rc, output = _interrupt(workdir, data_dir, at_step, signal.SIGKILL, compilation_cache)
  assert rc == -signal.SIGKILL, output
  saved = checkpoint.latest_step(workdir)
  assert saved is None or saved < NUM_STEPS, (at_step, saved)
  assert not os.path.exists(os.path.join(workdir, 'results.json'))
  train.run(config, workdir)
  _assert_same_state(_final_state(workdir, straight), expected)
  # Rows the killed run logged past its checkpoint were dropped, then redone.
  assert _train_rows(workdir) == list(range(1, NUM_STEPS + 1)), f'killed at step {at_step}'


def test_sigterm_saves_at_the_step_boundary_exits_0_and_resumes_bit_exact(
    straight, data_dir, tmp_path, compilation_cache):
  config, expected = straight['config'], straight['state']
  at_step = 9  # Not a checkpoint step (every 4).
  workdir = str(tmp_path / 'run')
  rc, output = _interrupt(workdir, data_dir, at_step, signal.SIGTERM, compilation_cache)
  assert rc == 0, output
  assert 'WORKER DONE preempted=True' in output
  results = json.load(open(os.path.join(workdir, 'results.json')))
  assert results['preempted'] is True
  step = results['step']
  assert at_step <= step < NUM_STEPS
  assert f'SIGTERM received: saved the checkpoint at step {step}' in output
  assert checkpoint.latest_step(workdir) == step
  train.run(config, workdir)
  assert 'preempted' not in json.load(open(os.path.join(workdir, 'results.json')))
  _assert_same_state(_final_state(workdir, straight), expected)


def test_half_written_checkpoint_is_ignored(straight, data_dir, tmp_path, capsys):
  config, expected = straight['config'], straight['state']
  workdir = str(tmp_path / 'run')
  train.run(worker.worker_config(data_dir, 8), workdir)
  # A save of step 12 killed half-way: orbax's temporary folder, unrenamed,
  # with a truncated array file and no commit marker.
  directory = os.path.join(workdir, 'checkpoints')
  partial = os.path.join(directory, '12.orbax-checkpoint-tmp')
  shutil.copytree(os.path.join(directory, '8'), partial)
  os.remove(os.path.join(partial, 'commit_success.txt'))
  files = [os.path.join(root, f) for root, _, names in os.walk(partial) for f in names]
  biggest = max(files, key=os.path.getsize)
  with open(biggest, 'r+b') as f:
    f.truncate(os.path.getsize(biggest) // 2)
  assert checkpoint.latest_step(workdir) == 8
  capsys.readouterr()
  train.run(config, workdir)
  assert 'Resumed from the checkpoint at step 8' in capsys.readouterr().out
  _assert_same_state(_final_state(workdir, straight), expected)
  assert not any('orbax-checkpoint-tmp' in name for name in os.listdir(directory))


def test_a_notice_before_training_resumes_stops_at_once(straight, tmp_path, monkeypatch):
  """A notice during start-up (compiling, restoring) stops before the first step."""
  workdir = str(tmp_path / 'run')
  shutil.copytree(straight['workdir'], workdir)
  directory = os.path.join(workdir, 'checkpoints')
  first, *later = sorted(int(d) for d in os.listdir(directory))
  for step in later:
    shutil.rmtree(os.path.join(directory, str(step)))
  original = train.build

  def build_then_sigterm(*args, **kwargs):
    exp = original(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGTERM)  # Handled: the notice is set, nothing dies.
    return exp
  monkeypatch.setattr(train, 'build', build_then_sigterm)
  previous = signal.getsignal(signal.SIGTERM)
  results = train.run(straight['config'], workdir)
  assert results['preempted'] is True and results['step'] == first < NUM_STEPS
  assert checkpoint.latest_step(workdir) == first
  assert signal.getsignal(signal.SIGTERM) is previous  # The handler was restored.
  assert preemption._active is None  # pylint: disable=protected-access
