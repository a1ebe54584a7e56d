"""The training loop: ``run(config, workdir)``.

Order of work: check everything that can be wrong (config keys, names, data,
batch sizes, the teacher checkpoint) and compile the step, then create the
workdir, restore or initialise the state, and loop. A failed check leaves no
workdir behind, so the corrected command can simply be rerun; a rerun of an
interrupted run resumes from its latest checkpoint.
"""

import dataclasses
import functools
import json
import math
import os
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from distill_jax import checkpoint
from distill_jax import data
from distill_jax import defaults
from distill_jax import methods
from distill_jax import metrics as metrics_lib
from distill_jax import optim
from distill_jax import registry
from distill_jax import sharding
from distill_jax import state as state_lib
from distill_jax import steps

RESULTS_FILE = 'results.json'


def build_model(model_config: ml_collections.ConfigDict, num_classes: int,
                role: str) -> nn.Module:
  """``registry.get('models', name)(num_classes=..., dtype=..., **kwargs)``."""
  cls = registry.get('models', model_config.model)
  kwargs = model_config.kwargs.to_dict()
  try:
    return cls(num_classes=num_classes, dtype=jnp.dtype(model_config.dtype), **kwargs)
  except TypeError as e:
    raise ValueError(
        f'config.{role}: model {model_config.model!r} does not accept the '
        f'arguments {kwargs}: {e}') from e


def _teacher_model_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The teacher's model config, read from (and checked against) its workdir."""
  saved = checkpoint.read_config(config.teacher.workdir)['student']
  teacher = ml_collections.ConfigDict(config.teacher.to_dict())
  if not teacher.model:
    teacher.model = saved['model']
    teacher.kwargs = ml_collections.ConfigDict(saved['kwargs'])
  elif (teacher.model, teacher.kwargs.to_dict()) != (saved['model'], saved['kwargs']):
    raise ValueError(
        f'config.teacher asks for model {teacher.model!r} {teacher.kwargs.to_dict()}, '
        f'but the run in {config.teacher.workdir!r} trained {saved["model"]!r} '
        f'{saved["kwargs"]}. Leave config.teacher.model empty to use the saved one.')
  return teacher


@dataclasses.dataclass
class Experiment:
  """Everything ``run`` builds before touching the workdir."""
  config: ml_collections.ConfigDict
  mesh: Any
  spec: Any
  num_train: int
  steps_per_epoch: int
  total_steps: int
  student: nn.Module
  teacher: nn.Module | None
  teacher_variables: Any
  abstract_state: Any
  init_fn: Any
  train_fn: Any
  eval_fn: Any


def _every(epochs: float, steps_per_epoch: int, total_steps: int) -> int:
  return max(1, int(round(epochs * steps_per_epoch))) if epochs > 0 else total_steps


def build(config: ml_collections.ConfigDict, devices=None) -> Experiment:
  """Checks the config and builds models, data facts, state layout and steps."""
  defaults.validate(config)
  data_dir = config.data.data_dir or None
  spec = data.dataset_spec(config.data.name)
  num_train = data.num_examples(config.data.name, config.data.train_split, data_dir)
  mesh = sharding.make_mesh(config.mesh, devices)
  sharding.check_batch_size('train.batch_size', config.train.batch_size, mesh)
  sharding.check_batch_size('train.eval_batch_size', config.train.eval_batch_size, mesh)
  steps_per_epoch = num_train // config.train.batch_size
  if steps_per_epoch == 0:
    raise ValueError(f'train.batch_size={config.train.batch_size} is larger than the '
                     f'{num_train} training examples of {config.data.name}.')
  total_steps = config.train.num_steps or math.ceil(config.train.num_epochs * steps_per_epoch)

  method = methods.from_config(config.method)
  student = build_model(config.student, spec.num_classes, 'student')
  teacher = teacher_variables = teacher_features = None
  rules = config.sharding.rules
  sample = jnp.zeros((1, *spec.image_shape), jnp.float32)
  if config.teacher.workdir:
    teacher_config = _teacher_model_config(config)
    teacher = build_model(teacher_config, spec.num_classes, 'teacher')
    boxed = jax.eval_shape(functools.partial(teacher.init, train=False),
                           jax.random.PRNGKey(0), sample)
    abstract = sharding.with_shardings(boxed, sharding.logical_shardings(boxed, mesh, rules))
    teacher_variables = checkpoint.load_teacher(
        config.teacher.workdir, abstract,
        f'{teacher_config.model!r} {teacher_config.kwargs.to_dict()}')
    teacher_features = jax.eval_shape(
        lambda v: teacher.apply(v, sample, train=False), teacher_variables)[1]
  elif method.needs_teacher:
    raise ValueError(f'Method {config.method.name!r} needs a teacher: set '
                     'config.teacher.workdir to the teacher run\'s workdir.')

  schedule = optim.make_schedule(config.optim, steps_per_epoch=steps_per_epoch,
                                 total_steps=total_steps)
  optimizer = optim.make_optimizer(config.optim, schedule)
  boxed_init = functools.partial(
      state_lib.init_boxed_state, student=student, method=method, optimizer=optimizer,
      sample_images=sample, teacher_features=teacher_features, num_train=num_train)
  try:
    boxed_state = jax.eval_shape(boxed_init, jax.random.PRNGKey(0))
  except methods.MissingFeatureError as e:
    model = config.student.model if e.role == 'student' else teacher_config.model
    raise ValueError(f'config.{e.role}: model {model!r}: {e}') from e
  state_shardings = sharding.logical_shardings(boxed_state, mesh, rules)
  abstract_state = sharding.with_shardings(boxed_state, state_shardings)
  init_fn = jax.jit(lambda rng: nn.unbox(boxed_init(rng)), out_shardings=state_shardings)

  batch_sharding = sharding.batch_sharding(mesh)
  replicated = sharding.replicated(mesh)
  teacher_shardings = (jax.tree.map(lambda x: x.sharding, teacher_variables)
                       if teacher is not None else None)
  train_fn = jax.jit(
      functools.partial(
          steps.train_step, student=student,
          teacher=teacher if method.needs_teacher else None, method=method,
          optimizer=optimizer, schedule=schedule, mean=spec.mean, std=spec.std,
          augment_config=config.data.augment),
      in_shardings=(state_shardings, teacher_shardings, batch_sharding),
      out_shardings=(state_shardings, replicated), donate_argnums=0)
  eval_fn = jax.jit(
      functools.partial(steps.eval_step, student=student, teacher=teacher,
                        mean=spec.mean, std=spec.std),
      out_shardings=replicated)
  return Experiment(config, mesh, spec, num_train, steps_per_epoch, total_steps,
                    student, teacher, teacher_variables, abstract_state, init_fn,
                    train_fn, eval_fn)


def _global_batch(local: dict[str, Any], batch_sharding) -> dict[str, jax.Array]:
  return {k: jax.make_array_from_process_local_data(batch_sharding, v)
          for k, v in local.items()}


def evaluate(exp: Experiment, state: state_lib.DistillState) -> dict[str, float]:
  """Accuracy etc. of the student (and teacher) on ``config.data.eval_split``."""
  config = exp.config
  batch_sharding = sharding.batch_sharding(exp.mesh)
  total = None
  for local in data.eval_batches(
      config.data.name, data_dir=config.data.data_dir or None,
      split=config.data.eval_split, global_batch_size=config.train.eval_batch_size,
      process_index=jax.process_index(), process_count=jax.process_count()):
    sums = exp.eval_fn(state.student_variables, exp.teacher_variables,
                       _global_batch(local, batch_sharding))
    total = metrics_lib.add_sums(total, sums)
  return metrics_lib.eval_summary(total)


def _format_duration(seconds: float) -> str:
  seconds = int(seconds)
  return f'{seconds // 3600}h{seconds // 60 % 60:02d}m' if seconds >= 3600 else (
      f'{seconds // 60}m{seconds % 60:02d}s')


def _log(message: str) -> None:
  """Progress output on process 0 (stdout, so library INFO logs can stay off)."""
  if jax.process_index() == 0:
    print(f'[{time.strftime("%H:%M:%S")}] {message}', flush=True)


def _prepare_workdir(workdir: str) -> str:
  workdir = os.path.abspath(workdir)
  parent = os.path.dirname(workdir)
  if not os.path.isdir(parent):
    raise FileNotFoundError(
        f'The workdir\'s parent folder {parent!r} does not exist; create it first '
        'or choose another --workdir.')
  return workdir


def run(config: ml_collections.ConfigDict, workdir: str, devices=None) -> dict[str, Any]:
  """Trains ``config``'s student in ``workdir`` (resuming if it has checkpoints).

  Returns the final results (also written to ``workdir/results.json``).
  """
  start_time = time.time()
  workdir = _prepare_workdir(workdir)
  exp = build(config, devices)
  num_params = sum(x.size for x in jax.tree.leaves(exp.abstract_state.params))
  _log(f'{config.student.model}: {num_params:,} params; {exp.num_train} training '
       f'examples, {exp.steps_per_epoch} steps/epoch, {exp.total_steps} steps; '
       f'mesh {dict(exp.mesh.shape)}')

  os.makedirs(workdir, exist_ok=True)
  if jax.process_index() == 0:
    checkpoint.write_config(workdir, config)
  manager = checkpoint.make_manager(workdir, config.train.keep_checkpoints)
  state = checkpoint.restore_latest(manager, exp.abstract_state)
  if state is None:
    state = exp.init_fn(jax.random.PRNGKey(config.seed))
  start_step = int(jax.device_get(state.step))
  if start_step:
    _log(f'Resumed from the checkpoint at step {start_step} in {workdir}.')

  writer = metrics_lib.MetricWriter(workdir)
  results = _train_loop(exp, state, manager, writer, start_step)
  results.update(num_params=num_params, wall_time_s=time.time() - start_time,
                 steps=exp.total_steps, workdir=workdir)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, RESULTS_FILE), 'w') as f:
      json.dump(results, f, indent=2)
  writer.close()
  manager.close()
  return results


def _train_loop(exp: Experiment, state, manager, writer, start_step: int) -> dict[str, Any]:
  config, total = exp.config, exp.total_steps
  eval_every = _every(config.train.eval_every_epochs, exp.steps_per_epoch, total)
  checkpoint_every = _every(config.train.checkpoint_every_epochs, exp.steps_per_epoch, total)
  batch_sharding = sharding.batch_sharding(exp.mesh)
  batches = data.train_batches(
      config.data.name, data_dir=config.data.data_dir or None,
      split=config.data.train_split, global_batch_size=config.train.batch_size,
      seed=config.seed, start_step=start_step, process_index=jax.process_index(),
      process_count=jax.process_count())
  pending = []
  window_start, window_step = time.time(), start_step
  for step in range(start_step + 1, total + 1):
    state, step_metrics = exp.train_fn(state, exp.teacher_variables,
                                       _global_batch(next(batches), batch_sharding))
    pending.append(step_metrics)
    if step % config.train.log_every_steps == 0 or step == total:
      scalars = metrics_lib.mean_of(pending)
      pending = []
      now = time.time()
      rate = (step - window_step) / max(now - window_start, 1e-9)
      window_start, window_step = now, step
      writer.write(step, {f'train/{k}': v for k, v in scalars.items()} |
                   {'train/steps_per_second': rate})
      _log(f'step {step}/{total} (epoch {step / exp.steps_per_epoch:.2f}) | '
           f'loss {scalars["loss"]:.4f} acc {scalars["accuracy"]:.4f} | '
           f'{rate:.1f} steps/s, {rate * config.train.batch_size:.0f} ex/s | '
           f'ETA {_format_duration((total - step) / max(rate, 1e-9))}')
    if step % eval_every == 0 or step == total:
      summary = evaluate(exp, state)
      writer.write(step, {f'eval/{k}': v for k, v in summary.items()})
      _log(f'eval at step {step}: ' + ', '.join(
          f'{k} {v:.4f}' if isinstance(v, float) else f'{k} {v}'
          for k, v in summary.items()))
      window_start, window_step = time.time(), step  # Eval time is not training speed.
    if step % checkpoint_every == 0 or step == total:
      checkpoint.save(manager, state)
  manager.wait_until_finished()
  if start_step >= total:
    summary = evaluate(exp, state)
  return {'test': summary}
