"""Preemption notices: the training loop stops at a step boundary, saves, returns.

Schedulers announce a preemption with SIGTERM (Kubernetes, Slurm, spot VMs;
on Cloud TPU the JAX coordination service relays the maintenance notice).
``watch()`` turns it into a notice that ``train`` reads at every step
boundary: it then saves a checkpoint of that step, waits for it to be
written, writes ``results.json`` with ``"preempted": true`` and returns, so
the process exits with status 0. Rerunning the same command resumes.

Every host of a multi-process job must stop at the same step:

* with ``jax.distributed`` initialised and its preemption service on (the
  default), the coordination service receives the notice (it catches SIGTERM
  itself) and agrees on a step; ``multihost_utils.reached_preemption_sync_point``
  is True on every host at that step. ``watch`` installs no handler then.
* otherwise (one process, or the service turned off) a SIGTERM handler sets a
  flag; with several processes the flags are combined at log/checkpoint
  boundaries (one ``process_allgather`` there), so every host stops at the
  same boundary.
"""

import contextlib
import signal
import threading
from typing import Iterator

import jax
import numpy as np
from jax.experimental import multihost_utils


class Notice:
  """Whether the job has been asked to stop; read by the loop at step boundaries."""

  def __init__(self, use_sync_point: bool):
    self._use_sync_point = use_sync_point
    self._flag = False
    self.signal_name = None

  @property
  def uses_sync_point(self) -> bool:
    """The coordination service, not a signal handler, receives the notice."""
    return self._use_sync_point

  def set(self, signal_name: str = 'SIGTERM') -> None:
    """Records a stop request (what the signal handler calls; tests may call it)."""
    self.signal_name = self.signal_name or signal_name
    self._flag = True

  def reached(self, step: int, boundary: bool) -> bool:
    """True when the loop should save ``step`` and stop.

    Call it after every step, with the same ``step`` on every host;
    ``boundary``: the step is a log or checkpoint step (where several
    processes without the coordination service compare their flags).
    """
    if self._use_sync_point:
      if multihost_utils.reached_preemption_sync_point(step):
        self.signal_name = self.signal_name or 'preemption notice'
        return True
      return False
    if jax.process_count() == 1:
      return self._flag
    if not boundary:
      return False
    flags = multihost_utils.process_allgather(np.asarray(self._flag, np.int32))
    if np.any(flags) and not self._flag:
      self.set('a preemption notice (to another process)')
    return bool(np.any(flags))


def _coordination_service_watches() -> bool:
  """True when JAX's coordination service handles preemption notices."""
  if jax.process_count() == 1 or not jax.config.jax_enable_preemption_service:
    return False
  try:
    from jax._src import distributed  # pylint: disable=g-import-not-at-top
    return distributed.global_state.preemption_sync_manager is not None
  except (ImportError, AttributeError):  # A JAX without it: assume the default setup.
    return True


_active: Notice | None = None


@contextlib.contextmanager
def watch() -> Iterator[Notice]:
  """Watches for preemption notices while the block runs.

  Nested calls (a chain of runs in one process) share the outer notice. The
  previous SIGTERM handler is restored on exit. A SIGTERM handler can only be
  installed from the main thread: elsewhere the notice is never set (except
  through the coordination service).
  """
  global _active
  if _active is not None:
    yield _active
    return
  notice = Notice(use_sync_point=_coordination_service_watches())
  install = (not notice.uses_sync_point
             and threading.current_thread() is threading.main_thread())
  if install:
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: notice.set('SIGTERM'))
  _active = notice
  try:
    yield notice
  finally:
    _active = None
    if install:  # None: a handler not set from Python; the default is the nearest.
      signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
