"""Workdir ownership: one run per workdir (the lock), and a config must continue the run it holds."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from distill_jax import defaults
from distill_jax import train
from distill_jax import workdir as workdir_lib

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'train_worker.py')


def _dead_pid() -> int:
  process = subprocess.Popen([sys.executable, '-c', 'pass'])
  process.wait()
  return process.pid


def test_a_held_lock_refuses_a_second_run_and_is_released(tmp_path):
  with workdir_lib.lock(str(tmp_path)):
    holder = json.load(open(tmp_path / workdir_lib.LOCK_FILE))
    assert holder['pid'] == os.getpid() and holder['host'] == socket.gethostname()
    with pytest.raises(workdir_lib.WorkdirBusyError,
                       match=f'in use by another run \\(pid {os.getpid()} on host'):
      with workdir_lib.lock(str(tmp_path)):
        pass
  assert not (tmp_path / workdir_lib.LOCK_FILE).exists()


def test_a_killed_runs_lock_is_taken_over_but_another_hosts_is_not(tmp_path, capsys):
  path = tmp_path / workdir_lib.LOCK_FILE
  path.write_text(json.dumps({'pid': _dead_pid(), 'host': socket.gethostname(), 'started': 0}))
  with workdir_lib.lock(str(tmp_path)):
    assert json.load(open(path))['pid'] == os.getpid()
  assert 'a stale lock' in capsys.readouterr().out
  path.write_text(json.dumps({'pid': 1, 'host': 'tpu-host-7', 'started': 0}))
  with pytest.raises(workdir_lib.WorkdirBusyError, match='on host tpu-host-7.*remove'):
    with workdir_lib.lock(str(tmp_path)):
      pass


def test_another_run_in_the_workdir_is_refused_before_anything_is_written(
    data_dir, small_config, tmp_path):
  workdir = str(tmp_path / 'run')
  train.run(small_config(data_dir), workdir)
  saved = open(os.path.join(workdir, 'config.json')).read()
  other = small_config(data_dir, **{'student.kwargs.hidden_sizes': (64,)})
  with pytest.raises(workdir_lib.WorkdirConflictError,
                     match=r'holds another run .*student.kwargs.hidden_sizes: \[32\] -> \[64\]'):
    train.run(other, workdir)
  assert open(os.path.join(workdir, 'config.json')).read() == saved
  faster = small_config(data_dir, **{'optim.learning_rate': 0.5, 'train.num_steps': 8})
  with pytest.raises(workdir_lib.WorkdirConflictError,
                     match=r'other settings \(optim.learning_rate: 0.05 -> 0.5\)\. .*'
                           'resume_with_changes=True'):
    train.run(faster, workdir)
  assert open(os.path.join(workdir, 'config.json')).read() == saved
  faster.train.resume_with_changes = True
  results = train.run(faster, workdir)
  assert results['steps'] == 8
  history = [json.loads(line) for line in open(os.path.join(workdir, workdir_lib.HISTORY_FILE))]
  assert history[0]['step'] == 6
  assert history[0]['changes'] == {'optim.learning_rate': [0.05, 0.5],
                                   'train.num_steps': [6, 8]}
  assert json.load(open(os.path.join(workdir, 'config.json')))['optim']['learning_rate'] == 0.5
  longer = small_config(data_dir, **{'optim.learning_rate': 0.5, 'train.num_steps': 10})
  assert train.run(longer, workdir)['steps'] == 10  # the run's length alone: no switch


def test_two_processes_on_one_workdir(data_dir, tmp_path):
  """The second run stops at once with the holder named; the first finishes, and
  metrics.jsonl has each step once."""
  workdir = str(tmp_path / 'run')
  first = subprocess.Popen([sys.executable, WORKER, workdir, data_dir, '40', '0.3'],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  try:
    deadline = time.time() + 120
    while not os.path.exists(os.path.join(workdir, workdir_lib.LOCK_FILE)):
      assert time.time() < deadline and first.poll() is None, first.stdout.read()
      time.sleep(0.2)
    sys.path.insert(0, os.path.dirname(WORKER))
    from train_worker import worker_config  # pylint: disable=g-import-not-at-top
    started = time.time()
    with pytest.raises(workdir_lib.WorkdirBusyError, match=f'pid {first.pid} on host'):
      train.run(worker_config(data_dir, 40), workdir)
    assert time.time() - started < 60
    assert first.wait(timeout=120) == 0
  finally:
    first.kill()
  steps = [json.loads(line)['step'] for line in open(os.path.join(workdir, 'metrics.jsonl'))
           if 'train/loss' in line]
  assert steps == sorted(set(steps)) and steps[-1] == 40


def test_keys_added_since_a_run_was_saved_are_no_change():
  config = defaults.default_config()
  saved = json.loads(config.to_json_best_effort())
  del saved['optim']['grad_clip_norm']  # As an older version wrote it.
  assert workdir_lib.config_changes(saved, config) == {}
  config.optim.grad_clip_norm = 1.0
  assert workdir_lib.config_changes(saved, config) == {
      'optim.grad_clip_norm': ('(absent)', 1.0)}
