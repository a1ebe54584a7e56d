"""Checkpoints (orbax) of the student state, and loading a teacher from its run.

A run's workdir holds ``checkpoints/<step>/``; orbax writes each step to a
temporary folder (``<step>.orbax-checkpoint-tmp``) and renames it when
complete, so a checkpoint being written when a job is killed is never picked
up: the previous one is used, and the manager deletes the leftover.
Preemption (``distill_jax.preemption``) saves through the same path.
Integrity (``distill_jax.checksums``): process 0 writes each save's
``checksums.json`` (size and SHA-256 of every file) into the folder before the
rename. A resuming run restores the newest step that verifies: a step folder
that does not (a file missing, truncated or altered) is reported by path and
moved to ``<workdir>/corrupt_checkpoints/`` once an older step verifies (when
none does, nothing is moved and the run stops, listing them).
A teacher is the ``params`` (+ ``model_state``) of the newest verified
checkpoint in the teacher run's workdir, restored alone (partial restore) and
checked against the teacher model's shapes first.
"""

import dataclasses
import functools
import json
import os
import shutil
from typing import Any, Callable

import flax.serialization
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from distill_jax import checksums
from distill_jax import metrics

CHECKPOINT_DIR = 'checkpoints'
CORRUPT_DIR = 'corrupt_checkpoints'
CONFIG_FILE = 'config.json'
RESULTS_FILE = 'results.json'  # a run's final results (train.run writes it)
_SAVING_SUFFIX = '.orbax-checkpoint-tmp'  # orbax's name for a step folder being written
# orbax's step metadata (timestamps), updated after the callback: not sealed.
_UNSEALED = ('_CHECKPOINT_METADATA',)


class CheckpointError(RuntimeError):
  """No checkpoint of a run can be verified or read."""


def _seal_saves(directory: str) -> None:
  """Writes the manifest of the finished save orbax is about to rename to its step.

  orbax's post-finalization callback: it runs on process 0 only, after every
  process has written its files and before the rename (one save is in flight
  at a time: the newest temporary folder is it).
  """
  saving = [int(name[:-len(_SAVING_SUFFIX)]) for name in os.listdir(directory)
            if name.endswith(_SAVING_SUFFIX) and name[:-len(_SAVING_SUFFIX)].isdigit()]
  if saving:
    checksums.write_manifest(os.path.join(directory, f'{max(saving)}{_SAVING_SUFFIX}'),
                             skip=_UNSEALED)


def checkpoints_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)


def make_manager(workdir: str, keep: int) -> ocp.CheckpointManager:
  """The run's checkpoint manager; it deletes what a killed save left half-written
  and seals each save with its checksum manifest."""
  directory = checkpoints_dir(workdir)
  return ocp.CheckpointManager(
      directory,
      options=ocp.CheckpointManagerOptions(
          max_to_keep=keep, create=True, cleanup_tmp_directories=True,
          async_options=ocp.AsyncOptions(
              post_finalization_callback=functools.partial(_seal_saves, directory))),
      item_handlers=ocp.PyTreeCheckpointHandler())


def save(manager: ocp.CheckpointManager, state: Any) -> int:
  """Saves ``state`` at its step (asynchronously; ``manager.wait_until_finished``).

  Returns the step. The arrays are copied to host memory before this returns,
  so the caller may donate ``state`` to the next step right away.
  """
  step = int(jax.device_get(state.step))
  manager.save(step, args=ocp.args.PyTreeSave(flax.serialization.to_state_dict(state)))
  return step


def step_dir(manager: ocp.CheckpointManager, step: int) -> str:
  """The folder of the checkpoint at ``step``."""
  return os.path.join(str(manager.directory), str(step))


def _restore(manager: ocp.CheckpointManager, step: int, abstract: Any,
             partial: bool) -> Any:
  return manager.restore(step, args=ocp.args.PyTreeRestore(
      item=abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
      partial_restore=partial))


@dataclasses.dataclass(frozen=True)
class Verified:
  """A step folder whose files match its manifest.

  Attributes:
    step: the step.
    path: the step folder.
    sha256: ``checksums.digest`` of the folder; None when it was saved
      without a manifest (before checksums were kept) and so is unverified.
  """
  step: int
  path: str
  sha256: str | None


def saved_steps(directory: str) -> list[int]:
  """The finished step folders in a checkpoints ``directory``, newest first
  (from the folder names alone: no orbax manager, which is a collective)."""
  names = os.listdir(directory) if os.path.isdir(directory) else ()
  return sorted((int(name) for name in names if name.isdigit()), reverse=True)


def _set_aside(path: str, folder: str) -> str:
  """Moves step folder ``path`` into ``folder`` under a name not taken; returns it."""
  os.makedirs(folder, exist_ok=True)
  target, n = os.path.join(folder, os.path.basename(path)), 0
  while os.path.exists(target):
    n += 1
    target = os.path.join(folder, f'{os.path.basename(path)}.{n}')
  shutil.move(path, target)
  return target


def newest_verified(directory: str, *, move_failed_to: str | None = None) -> Verified | None:
  """The newest step in ``directory`` whose files match its manifest (None: no steps).

  Each newer step that fails is logged with its path and what is wrong; with
  ``move_failed_to`` those steps are moved there once a verified step is found
  (so the run can save them again). A step without a manifest is used
  unverified, with a log line.

  Raises:
    CheckpointError: there are steps, and none verifies (nothing is moved).
  """
  failures = []
  for step in saved_steps(directory):
    path = os.path.join(directory, str(step))
    problem = checksums.verify(path)
    if problem is not None:
      failures.append(f'{path}: {problem}')
      metrics.log(f'Checkpoint {path} fails verification: {problem}. Trying the step before.')
      continue
    digest = checksums.digest(path)
    if digest is None:
      metrics.log(f'{path} has no {checksums.MANIFEST} (saved before checksums were kept): '
                  'using it unverified.')
    for failed in saved_steps(directory) if move_failed_to else ():
      if failed > step:
        target = _set_aside(os.path.join(directory, str(failed)), move_failed_to)
        metrics.log(f'Moved the failed checkpoint of step {failed} to {target}.')
    return Verified(step, path, digest)
  if failures:
    raise CheckpointError(
        f'No checkpoint in {directory} verifies:\n  ' + '\n  '.join(failures) +
        '\nNothing was moved: move or delete them to start this run from scratch.')
  return None


def _agreed(directory: str, choose: Callable[[], Verified | None]) -> Verified | None:
  """``choose()`` run on process 0, its step agreed by every process (theirs has
  no ``sha256``); an error on process 0 is raised on every process."""
  found, error = None, None
  if jax.process_index() == 0:
    try:
      found = choose()
    except Exception as e:  # pylint: disable=broad-except  (re-raised below, everywhere)
      error = e
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    step = int(multihost_utils.broadcast_one_to_all(
        np.int32(-2 if error else -1 if found is None else found.step)))
    if jax.process_index() != 0:
      error = CheckpointError(f'{directory}: process 0 could not choose a checkpoint (its '
                              'error says why).') if step == -2 else None
      found = None if step < 0 else Verified(step, os.path.join(directory, str(step)), None)
  if error:
    raise error
  return found


def resume_point(workdir: str) -> Verified | None:
  """The newest verified checkpoint of the run in ``workdir`` (None: none saved),
  chosen by process 0 (which moves newer failed steps to ``corrupt_checkpoints/``)
  and agreed by every process.

  Raises:
    CheckpointError: the run has checkpoints, and none verifies.
  """
  directory = checkpoints_dir(workdir)
  return _agreed(directory, lambda: newest_verified(
      directory, move_failed_to=os.path.join(workdir, CORRUPT_DIR)))


def restore_latest(manager: ocp.CheckpointManager, abstract_state: Any) -> Any:
  """The newest verified state in ``manager``'s folder (``abstract_state``'s layout),
  or None when nothing is saved; failed steps are logged and left in place."""
  found = newest_verified(str(manager.directory))
  return None if found is None else restore_step(manager, abstract_state, found.step)


def restore_step(manager: ocp.CheckpointManager, abstract_state: Any, step: int) -> Any:
  """The state saved at ``step``, in the shardings of ``abstract_state``.

  Raises:
    CheckpointError: orbax cannot read it (the message names the folder).
  """
  try:
    restored = _restore(manager, step, flax.serialization.to_state_dict(abstract_state),
                        partial=False)
  except (KeyError, ValueError, OSError, RuntimeError) as e:
    raise CheckpointError(
        f'The checkpoint {step_dir(manager, step)} cannot be read ({type(e).__name__}: '
        f'{str(e).splitlines()[0] if str(e) else ""}); move it out of '
        f'{manager.directory} to resume from the step before.') from e
  return flax.serialization.from_state_dict(abstract_state, restored)


def write_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  with open(os.path.join(workdir, CONFIG_FILE), 'w') as f:
    f.write(config.to_json_best_effort(indent=2))


def read_config(workdir: str) -> dict[str, Any]:
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(
        f'No {CONFIG_FILE} in {workdir!r}: it is not a distill_jax run directory '
        '(train the teacher first with python -m distill_jax.main --config=... '
        f'--workdir={workdir}).')
  with open(path) as f:
    return json.load(f)


def _shape_mismatches(saved: Any, expected: Any, path: str = '') -> list[str]:
  """Human-readable differences between saved metadata and expected shapes."""
  if isinstance(expected, dict):
    saved = saved if isinstance(saved, dict) else {}
    problems = [f'{path}{k}: in the model, missing from the checkpoint'
                for k in expected if k not in saved]
    problems += [f'{path}{k}: in the checkpoint, not in the model'
                 for k in saved if k not in expected]
    for k in expected:
      if k in saved:
        problems += _shape_mismatches(saved[k], expected[k], f'{path}{k}/')
    return problems
  if tuple(saved.shape) != tuple(expected.shape):
    return [f'{path.rstrip("/")}: checkpoint {tuple(saved.shape)} vs model {tuple(expected.shape)}']
  return []


def _read_only_manager(workdir: str) -> ocp.CheckpointManager | None:
  directory = checkpoints_dir(workdir)
  if not os.path.isdir(directory):
    return None
  return ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(create=False),
                               item_handlers=ocp.PyTreeCheckpointHandler())


def latest_step(workdir: str) -> int | None:
  """The step of the latest complete checkpoint of the run in ``workdir`` (None: none)."""
  steps = saved_steps(checkpoints_dir(workdir))
  return steps[0] if steps else None


@dataclasses.dataclass(frozen=True)
class Loaded:
  """A trained model's variables and the checkpoint they came from."""
  variables: dict[str, Any]
  checkpoint: Verified


def load_teacher(teacher_workdir: str, abstract_variables: dict[str, Any],
                 description: str, role: str = 'teacher') -> Loaded:
  """The trained model's variables from its run's newest verified checkpoint.

  Args:
    teacher_workdir: the run's workdir.
    abstract_variables: ``{'params': ..., other collections}`` of
      ``jax.ShapeDtypeStruct`` with shardings, from the model.
    description: how to name the model in errors.
    role: what the model is to the caller, in errors (``teacher``; the export
      tool loads a ``student``).

  Raises:
    FileNotFoundError: no checkpoint there.
    CheckpointError: none of its checkpoints verifies (each listed).
    ValueError: the checkpoint's shapes differ from the model's (each listed).
  """
  directory = checkpoints_dir(teacher_workdir)
  try:
    found = _agreed(directory, lambda: newest_verified(directory))
  except CheckpointError as e:
    raise CheckpointError(f'The {role} run in {teacher_workdir!r} has no usable checkpoint. '
                          f'{e}') from e
  if found is None:
    raise FileNotFoundError(
        f'No {role} checkpoint in {directory!r}; train the {role} there first.')
  manager = _read_only_manager(teacher_workdir)
  expected = {'params': abstract_variables['params'],
              'model_state': {k: v for k, v in abstract_variables.items() if k != 'params'}}
  saved = manager.item_metadata(found.step).tree
  problems = _shape_mismatches({k: saved.get(k, {}) for k in expected}, expected)
  if problems:
    shown = '\n  '.join(problems[:12])
    more = f'\n  ... and {len(problems) - 12} more' if len(problems) > 12 else ''
    raise ValueError(
        f'The {role} checkpoint {found.path} does not fit the {role} model '
        f'{description}:\n  {shown}{more}')
  restored = _restore(manager, found.step, expected, partial=True)
  return Loaded({'params': restored['params'], **restored['model_state']}, found)
