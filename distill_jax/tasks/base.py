"""The interface between the one training loop (``distill_jax.train``) and a task.

A task is a module with ``build(config, devices=None) -> Experiment``
listed in ``tasks.TASKS`` under its ``config.task`` name. ``build`` checks
everything that can be wrong, loads teachers and data, and compiles the steps
(through ``distill_jax.compile``) before the loop touches the workdir. The loop
owns the rest: workdir, restore, cadence, NaN guard, preemption, metrics,
progress line and ``results.json``.
"""

import dataclasses
import math
from typing import Any, Callable, Iterator

import jax
import ml_collections

from distill_jax import compile as compile_lib
from distill_jax import metrics as metrics_lib
from distill_jax import optim
from distill_jax import registry
from distill_jax import sharding

Batch = dict[str, Any]


@dataclasses.dataclass
class Experiment:
  """Everything the loop needs, built before the workdir is touched.

  Attributes:
    config: the run's config.
    mesh: the device mesh.
    compiled: the state layout and compiled steps (``compile.Compiled``).
    steps_per_epoch: updates per pass over the training examples.
    total_steps: updates of the whole run.
    description: the start-up line (models, method, data, steps).
    train_batches: ``start_step -> iterator`` of this process's part of every
      global train batch from ``start_step`` on (``data.pipeline``).
    evaluate: ``(state, max_batches=None) -> summary`` (floats) over the
      evaluation data (its first ``max_batches`` batches; None = all).
    progress: ``window mean metrics -> str``, the task's part of a progress
      line (``loss 0.41 acc 0.88``).
    items_per_step: what one step consumes, for the rate in the progress
      line: ``(count, unit)``, e.g. ``(128, 'ex')`` or ``(4096, 'tokens')``.
    prepare: ``(state, global batch, step) -> (batch, extra metrics)`` run on
      the host before each step (on-policy generation); None = the batch as is.
    context: the task's build context (classification: ``schemes.Context``).
    report: ``(final state, last eval summary) -> (dict, markdown)`` run after
      the last step: ``results.json``'s ``report`` and the workdir's
      ``report.md``; None = no report.
  """
  config: ml_collections.ConfigDict
  mesh: jax.sharding.Mesh
  compiled: compile_lib.Compiled
  steps_per_epoch: int
  total_steps: int
  description: str
  train_batches: Callable[[int], Iterator[Batch]]
  evaluate: Callable[..., dict[str, Any]]
  progress: Callable[[dict[str, float]], str]
  items_per_step: tuple[float, str]
  prepare: Callable[[Any, Batch, int], tuple[Batch, dict[str, float]]] | None = None
  context: Any = None
  report: Callable[[Any, dict[str, float]], tuple[dict[str, Any], str]] | None = None


def global_batch(local: Batch, batch_sharding: Any) -> dict[str, jax.Array]:
  """This process's rows ``local`` as global arrays split over the batch axes."""
  return {k: jax.make_array_from_process_local_data(batch_sharding, v)
          for k, v in local.items()}


def sum_over(local_batches: Iterator[Batch], batch_sharding: Any,
             eval_fn: Callable[[dict[str, jax.Array]], dict[str, jax.Array]]) -> dict[str, Any]:
  """``eval_fn(global batch)`` summed over every batch (on device)."""
  total = None
  for local in local_batches:
    total = metrics_lib.add_sums(total, eval_fn(global_batch(local, batch_sharding)))
  return total


def make_mesh(config: ml_collections.ConfigDict, devices=None) -> jax.sharding.Mesh:
  """``config.mesh`` over ``devices``, checked against the train and eval batch sizes."""
  mesh = sharding.make_mesh(config.mesh, devices)
  for key in ('batch_size', 'eval_batch_size'):
    sharding.check_batch_size(f'train.{key}', config.train[key], mesh)
  return mesh


def schedule_steps(config: ml_collections.ConfigDict, num_train: int, what: str
                   ) -> tuple[int, int, Callable[[jax.Array], jax.Array]]:
  """``(steps_per_epoch, total_steps, learning-rate schedule)`` of ``num_train``
  examples (``what`` names them in the error): ``train.num_steps``, else
  ``ceil(train.num_epochs * steps_per_epoch)``."""
  steps_per_epoch = num_train // config.train.batch_size
  if steps_per_epoch == 0:
    raise ValueError(f'train.batch_size={config.train.batch_size} is larger than the '
                     f'{num_train} training examples of {what}.')
  total = config.train.num_steps or math.ceil(config.train.num_epochs * steps_per_epoch)
  return steps_per_epoch, total, optim.make_schedule(
      config.optim, steps_per_epoch=steps_per_epoch, total_steps=total)


def check_method_task(config: ml_collections.ConfigDict, method: Any) -> None:
  """Refuses a method of another task (``Method.task``), before anything is built."""
  if method.task != config.task:
    raise ValueError(
        f'method.name={config.method.name!r} is a {method.task} method but config.task is '
        f'{config.task!r}: choose one of the {config.task} methods '
        f'({", ".join(methods_of(config.task))}) or set config.task.')


def methods_of(task: str) -> list[str]:
  """The registered method names whose ``Method.task`` is ``task``."""
  return [name for name in registry.names('methods')
          if registry.get('methods', name).task == task]
