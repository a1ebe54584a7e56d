"""Checkpoints (orbax) of the student state, and loading a teacher from its run.

A run's workdir holds ``checkpoints/<step>/``; orbax writes each step to a
temporary folder (``<step>.orbax-checkpoint-tmp``) and renames it when
complete, so a checkpoint being written when a job is killed is never picked
up: the previous one is used, and the manager deletes the leftover.
Preemption (``distill_jax.preemption``) saves through the same path.
A teacher is the ``params`` (+ ``model_state``) of the latest checkpoint in
the teacher run's workdir, restored alone (partial restore) and checked
against the teacher model's shapes first.
"""

import json
import os
from typing import Any

import flax.serialization
import jax
import ml_collections
import orbax.checkpoint as ocp

from distill_jax.state import DistillState

CHECKPOINT_DIR = 'checkpoints'
CONFIG_FILE = 'config.json'


def make_manager(workdir: str, keep: int) -> ocp.CheckpointManager:
  """The run's checkpoint manager; it deletes what a killed save left half-written."""
  return ocp.CheckpointManager(
      os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR),
      options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           cleanup_tmp_directories=True),
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


def restore_latest(manager: ocp.CheckpointManager,
                   abstract_state: DistillState) -> DistillState | None:
  """The latest saved state in the shardings of ``abstract_state`` (or None)."""
  step = manager.latest_step()
  return None if step is None else restore_step(manager, abstract_state, step)


def restore_step(manager: ocp.CheckpointManager, abstract_state: Any, step: int) -> Any:
  """The state saved at ``step``, in the shardings of ``abstract_state``."""
  restored = _restore(manager, step, flax.serialization.to_state_dict(abstract_state),
                      partial=False)
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
  directory = os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)
  if not os.path.isdir(directory):
    return None
  return ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(create=False),
                               item_handlers=ocp.PyTreeCheckpointHandler())


def latest_step(workdir: str) -> int | None:
  """The step of the latest complete checkpoint of the run in ``workdir`` (None: none)."""
  manager = _read_only_manager(workdir)
  return manager.latest_step() if manager else None


def load_teacher(teacher_workdir: str, abstract_variables: dict[str, Any],
                 description: str, role: str = 'teacher') -> dict[str, Any]:
  """The trained model's variables from its run's latest checkpoint.

  Args:
    teacher_workdir: the run's workdir.
    abstract_variables: ``{'params': ..., other collections}`` of
      ``jax.ShapeDtypeStruct`` with shardings, from the model.
    description: how to name the model in errors.
    role: what the model is to the caller, in errors (``teacher``; the export
      tool loads a ``student``).

  Raises:
    FileNotFoundError: no checkpoint there.
    ValueError: the checkpoint's shapes differ from the model's (each listed).
  """
  directory = os.path.join(os.path.abspath(teacher_workdir), CHECKPOINT_DIR)
  manager = _read_only_manager(teacher_workdir)
  step = manager.latest_step() if manager else None
  if step is None:
    raise FileNotFoundError(
        f'No {role} checkpoint in {directory!r}; train the {role} there first.')
  expected = {'params': abstract_variables['params'],
              'model_state': {k: v for k, v in abstract_variables.items() if k != 'params'}}
  saved = manager.item_metadata(step).tree
  problems = _shape_mismatches({k: saved.get(k, {}) for k in expected}, expected)
  if problems:
    shown = '\n  '.join(problems[:12])
    more = f'\n  ... and {len(problems) - 12} more' if len(problems) > 12 else ''
    raise ValueError(
        f'The {role} checkpoint {directory}/{step} does not fit the {role} model '
        f'{description}:\n  {shown}{more}')
  restored = _restore(manager, step, expected, partial=True)
  return {'params': restored['params'], **restored['model_state']}
