"""Image classification: registered image data sets, vision models, training schemes.

``build`` checks the config, reads the data set's facts, makes the shared
``schemes.Context`` and hands it to the scheme named ``config.scheme.name``
(offline, multi_teacher, dml, deep_to_shallow), which loads its teachers and
compiles its steps. The loop logs ``loss`` and ``accuracy``; evaluation
reports top-1/top-5 accuracy, cross-entropy and, with a teacher, agreement and
KL on ``config.data.eval_split`` (``metrics.eval_summary``).
"""

import itertools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections

from distill_jax import compile as compile_lib
from distill_jax import data
from distill_jax import methods
from distill_jax import metrics as metrics_lib
from distill_jax import optim
from distill_jax import schemes
from distill_jax import sharding
from distill_jax.data import mixing
from distill_jax.data import views
from distill_jax.tasks import base


def evaluate_with(config: ml_collections.ConfigDict, mesh,
                  eval_fn: Callable[[dict[str, jax.Array]], dict[str, jax.Array]],
                  max_batches: int | None = None) -> dict[str, float]:
  """``metrics.eval_summary`` of ``eval_fn(global batch)`` summed over
  ``config.data.eval_split`` (its first ``max_batches`` batches; None = all)."""
  local_batches = itertools.islice(data.eval_batches(
      config.data.name, data_dir=config.data.data_dir or None,
      split=config.data.eval_split, global_batch_size=config.train.eval_batch_size,
      process_index=jax.process_index(), process_count=jax.process_count()), max_batches)
  return metrics_lib.eval_summary(
      base.sum_over(local_batches, sharding.batch_sharding(mesh), eval_fn))


def build(config: ml_collections.ConfigDict, devices=None) -> base.Experiment:
  """Checks the config and builds data facts, models, state layout and steps."""
  scheme = schemes.get(config)
  method = methods.from_config(config.method)
  base.check_method_task(config, method)
  views.check_teacher_view(config.teacher.view)
  compile_lib.check_sharding_mode(config)
  mixing.alphas(config.data.mixing)
  data_dir = config.data.data_dir or None
  spec = data.dataset_spec(config.data.name)
  for key in ('train_split', 'eval_split'):
    data.check_split(config.data.name, config.data[key], data_dir, key=f'data.{key}')
  num_train = data.num_examples(config.data.name, config.data.train_split, data_dir)
  mesh = base.make_mesh(config, devices)
  steps_per_epoch, total, schedule = base.schedule_steps(config, num_train, config.data.name)
  size = config.train.batch_size
  context = schemes.Context(
      config=config, mesh=mesh, spec=spec, num_train=num_train,
      steps_per_epoch=steps_per_epoch, total_steps=total, method=method,
      student=schemes.build_model(config.student, spec.num_classes, 'student'),
      optimizer=optim.make_optimizer(config.optim, schedule), schedule=schedule,
      sample_images=jnp.zeros((1, *spec.image_shape), jnp.float32),
      abstract_batch={'image': jax.ShapeDtypeStruct((size, *spec.image_shape), jnp.uint8),
                      'label': jax.ShapeDtypeStruct((size,), jnp.int32),
                      'index': jax.ShapeDtypeStruct((size,), jnp.int32)})
  compiled = scheme(context)

  def train_batches(start_step: int):
    return data.train_batches(
        config.data.name, data_dir=data_dir, split=config.data.train_split,
        global_batch_size=size, seed=config.seed, start_step=start_step,
        process_index=jax.process_index(), process_count=jax.process_count())

  def evaluate(state: Any, max_batches: int | None = None) -> dict[str, float]:
    return evaluate_with(config, mesh, lambda batch: compiled.eval_fn(
        state, compiled.teacher_variables, batch), max_batches)

  def progress(scalars: dict[str, float]) -> str:
    return f'loss {scalars["loss"]:.4f} acc {scalars["accuracy"]:.4f}'

  description = (f'{config.scheme.name}: {config.student.model} ({compiled.num_params:,} '
                 f'params), method {config.method.name}; {num_train} training examples, '
                 f'{steps_per_epoch} steps/epoch, {total} steps')
  return base.Experiment(
      config=config, mesh=mesh, compiled=compiled, steps_per_epoch=steps_per_epoch,
      total_steps=total, description=description,
      train_batches=train_batches, evaluate=evaluate, progress=progress,
      items_per_step=(size, 'ex'), context=context)
