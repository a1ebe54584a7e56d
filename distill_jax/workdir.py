"""Who owns a workdir, and whether a config may continue the run in it.

* ``lock``: one run per workdir. Process 0 creates ``<workdir>/.lock``
  (``{'pid', 'host', 'started'}``) exclusively and removes it on exit; a second
  run on the same workdir stops at once with ``WorkdirBusyError`` naming the
  holder. A lock left by a killed run on this host (its pid is gone) is stale
  and taken over, with a log line; one from another host is never guessed at.
* ``check_continues``: a workdir with a checkpoint holds a run. A config that
  differs from its ``config.json`` in what the run *is* (``IDENTITY_KEYS``:
  the task, the models, the data, the method, the scheme) is refused with the
  differing keys; one that differs in other values (learning rate, cadences,
  ...) is refused too unless ``train.resume_with_changes=True``. The run's
  length and its teachers' checkpoints (``FREE_KEYS``) may change without
  it: a finished run is trained on by raising ``train.num_steps``. Allowed
  changes are appended to ``config_history.jsonl`` before ``config.json`` is
  rewritten; nothing is written before these checks.
"""

import contextlib
import json
import os
import socket
import time
from typing import Any, Iterator

import jax
import ml_collections
import numpy as np

from distill_jax import checkpoint
from distill_jax import defaults
from distill_jax import metrics

LOCK_FILE = '.lock'
HISTORY_FILE = 'config_history.jsonl'
# Dotted config prefixes that say what a run is: another value is another run.
IDENTITY_KEYS = ('task', 'student', 'teacher', 'data.name', 'method.name', 'scheme.name')
# Free to change on resume (recorded): how long the run trains, and the
# teachers' checkpoints (a retrained teacher run: its new step and SHA-256).
FREE_KEYS = ('train.num_steps', 'train.num_epochs', 'teacher_checkpoints')
# Never compared: switches that allow something (other settings, a teacher run).
_UNCOMPARED = ('train.resume_with_changes', 'teacher.allow_unfinished',
               'teacher.allow_other_data')
_ABSENT = '(absent)'


class WorkdirBusyError(RuntimeError):
  """Another run holds the workdir's lock."""


class WorkdirConflictError(ValueError):
  """The workdir holds a run the config does not continue."""


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def _take(path: str) -> dict[str, Any] | None:
  """Creates the lock file; None when it was created, else the holder's record."""
  record = {'pid': os.getpid(), 'host': socket.gethostname(), 'started': time.time()}
  try:
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
  except FileExistsError:
    try:
      with open(path) as f:
        return json.load(f)
    except (OSError, ValueError):
      return {'pid': None, 'host': None}  # Half-written: its writer died at once.
  with os.fdopen(fd, 'w') as f:
    json.dump(record, f)
  return None


def _acquire(workdir: str) -> str | None:
  """Process 0's attempt: None on success, else why it failed."""
  path = os.path.join(workdir, LOCK_FILE)
  holder = _take(path)
  if holder is None:
    return None
  here = socket.gethostname()
  if holder.get('host') in (here, None) and not (holder.get('pid') and _pid_alive(holder['pid'])):
    metrics.log(f'{path}: a stale lock (pid {holder.get("pid")} on {holder.get("host")} is '
                'gone, its run was killed); taking it over.')
    os.remove(path)
    return None if _take(path) is None else f'{path}: another run took the lock just now.'
  return (f'{workdir} is in use by another run (pid {holder.get("pid")} on host '
          f'{holder.get("host")}, {LOCK_FILE} written at '
          f'{time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))}); '
          'wait for it, use another --workdir, or, if no run is using it, remove '
          f'{path}.')


@contextlib.contextmanager
def lock(workdir: str) -> Iterator[None]:
  """Holds ``workdir``'s lock for the ``with`` block (creating ``workdir``).

  Raises:
    WorkdirBusyError: another live run holds it (every process raises).
  """
  os.makedirs(workdir, exist_ok=True)
  error = _acquire(workdir) if jax.process_index() == 0 else None
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    failed = multihost_utils.broadcast_one_to_all(np.int32(error is not None))
    error = error or (f'{workdir}: process 0 could not lock it (another run holds it).'
                      if failed else None)
  if error:
    raise WorkdirBusyError(error)
  try:
    yield
  finally:
    if jax.process_index() == 0:
      with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(workdir, LOCK_FILE))


def _flat(tree: Any, prefix: str = '') -> dict[str, Any]:
  if isinstance(tree, dict):
    out = {}
    for key, value in tree.items():
      out.update(_flat(value, f'{prefix}{key}.'))
    return out
  return {prefix[:-1]: tree}


def config_changes(saved: dict[str, Any], config: ml_collections.ConfigDict
                   ) -> dict[str, tuple[Any, Any]]:
  """``{dotted key: (saved value, new value)}`` where ``config`` differs from
  the ``config.json`` contents ``saved`` (compared as JSON).

  A key the saved config lacks is no change when the new value is its default
  (a key added by a later version of distill_jax, whose default is the old
  behaviour); one the new config lacks (a key since removed) is ignored.
  """
  old = _flat(saved)
  new = _flat(json.loads(config.to_json_best_effort()))
  default = _flat(json.loads(defaults.default_config(config.task).to_json_best_effort()))

  def changed(key):
    if key in _UNCOMPARED or key not in new:
      return False
    if key not in old:
      return key not in default or new[key] != default[key]
    return old[key] != new[key]
  return {key: (old.get(key, _ABSENT), new[key]) for key in sorted({*old, *new})
          if changed(key)}


def _format(changes: dict[str, tuple[Any, Any]]) -> str:
  show = lambda v: v if v == _ABSENT else json.dumps(v)
  return '; '.join(f'{key}: {show(old)} -> {show(new)}' for key, (old, new) in changes.items())


def _is_identity(key: str) -> bool:
  return any(key == prefix or key.startswith(prefix + '.') for prefix in IDENTITY_KEYS)


def check_continues(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Refuses a config that does not continue the run ``workdir`` holds (module
  docstring); with ``train.resume_with_changes`` records the allowed changes.

  Raises:
    WorkdirConflictError: the config is another run, or changes values without
      ``train.resume_with_changes=True``.
  """
  step = checkpoint.latest_step(workdir)
  if step is None:
    return  # No checkpoint: nothing to continue (a start that failed is redone).
  try:
    saved = checkpoint.read_config(workdir)
  except (FileNotFoundError, ValueError):
    return
  changes = config_changes(saved, config)
  if not changes:
    return
  identity = {k: v for k, v in changes.items() if _is_identity(k)}
  if identity:
    raise WorkdirConflictError(
        f'{workdir} holds another run (its config.json differs in what the run is: '
        f'{_format(identity)}); use another --workdir (nothing in this one was changed).')
  settings = {k: v for k, v in changes.items() if k not in FREE_KEYS}
  if settings and not config.train.resume_with_changes:
    raise WorkdirConflictError(
        f'{workdir} holds a run with other settings ({_format(settings)}). Resume it with '
        'its own config, or pass --config.train.resume_with_changes=True to continue with '
        f'these (recorded in {HISTORY_FILE}).')
  if jax.process_index() == 0:
    with open(os.path.join(workdir, HISTORY_FILE), 'a') as f:
      f.write(json.dumps({'time': time.strftime('%Y-%m-%d %H:%M:%S'),
                          'step': step,
                          'changes': {k: list(v) for k, v in changes.items()}}) + '\n')
  metrics.log(f'Resuming {workdir} with changed settings: {_format(changes)} '
              f'(recorded in {HISTORY_FILE}).')
