"""``multi_teacher``: several frozen teachers, one combined soft target.

``config.scheme.teachers`` lists the teacher runs' workdirs (their models may
differ; each is read from its run). Every step runs all teachers on the
student's view (resized to ``scheme.teacher_resolutions[i]`` when given) and
combines their logits with the registered rule ``scheme.combine``
(``combiners.py``) into the "teacher logits" the method sees; feature methods
see the features of teacher ``scheme.feature_teacher``. With one teacher this
is offline distillation (equal losses, up to float rounding).

Evaluation reports the student, every teacher (``teacher<i>_accuracy``) and
the teachers' ensemble (``teacher_accuracy``: the probability average with
``scheme.weights``; label-free, also for the ``confidence`` rule).
"""

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from distill_jax import compile as compile_lib
from distill_jax import registry
from distill_jax import state as state_lib
from distill_jax import steps
from distill_jax.registry import register
from distill_jax.schemes import base
from distill_jax.schemes import combiners
from distill_jax.schemes import teachers


def teacher_weights(weights: Sequence[float], count: int) -> np.ndarray:
  """``weights`` normalised to sum 1 (``()`` = equal), float32 ``[count]``.

  Raises:
    ValueError: wrong length, a non-number, a negative weight, or a sum <= 0.
  """
  if not weights:
    return np.full(count, 1.0 / count, np.float32)
  if len(weights) != count:
    raise ValueError(f'config.scheme.weights has {len(weights)} entries for {count} teachers.')
  for w in weights:
    if isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0:
      raise ValueError(f'config.scheme.weights must be numbers >= 0, got {tuple(weights)}.')
  total = float(sum(weights))
  if total <= 0:
    raise ValueError(f'config.scheme.weights must sum to a positive number, got {tuple(weights)}.')
  return np.asarray(weights, np.float32) / total


def _resolutions(config, count: int) -> list[tuple[int, int] | None]:
  resolutions = tuple(config.scheme.teacher_resolutions)
  if not resolutions:
    return [None] * count
  if len(resolutions) != count:
    raise ValueError(f'config.scheme.teacher_resolutions has {len(resolutions)} entries for '
                     f'{count} teachers (use () for the data\'s resolution).')
  return [tuple(r) if r else None for r in resolutions]


def resize(images: jax.Array, resolution: tuple[int, int] | None) -> jax.Array:
  """Bilinear resize of ``[B, H, W, C]`` to ``[B, *resolution, C]`` (None: unchanged)."""
  if resolution is None or tuple(images.shape[1:3]) == resolution:
    return images
  return jax.image.resize(images, (images.shape[0], *resolution, images.shape[3]), 'bilinear')


def teacher_logits(modules, resolutions, teacher_variables, images):
  """Every teacher's ``(logits, features)`` on ``images`` (resized per teacher)."""
  return [steps.teacher_forward(module, variables, resize(images, resolution))
          for module, resolution, variables in zip(modules, resolutions, teacher_variables)]


def combined_teacher(teacher_variables: Any, images: jax.Array, batch: steps.Batch, *,
                     modules, resolutions, combine, weights, temperature: float,
                     feature_teacher: int) -> steps.ModelOutput:
  """``(combined logits [B, K], features of teacher feature_teacher)``: a ``TeacherFn``."""
  outputs = teacher_logits(modules, resolutions, teacher_variables, images)
  logits = combine([out[0] for out in outputs], batch['label'],
                   weights=jnp.asarray(weights), temperature=temperature)
  return logits, outputs[feature_teacher][1]


def eval_step(state, teacher_variables, batch, *, student, modules, resolutions, weights,
              mean, std) -> dict[str, jax.Array]:
  """``steps.eval_step`` against the teachers' ensemble, plus each teacher's sums."""
  ensemble = functools.partial(
      combined_teacher, modules=modules, resolutions=resolutions,
      combine=combiners.weighted, weights=weights, temperature=1.0, feature_teacher=0)
  sums = steps.eval_step(state, teacher_variables, batch, student=student,
                         teacher_fn=ensemble, mean=mean, std=std)
  images = steps.eval_images(batch, mean=mean, std=std)
  for i, (logits, _) in enumerate(teacher_logits(modules, resolutions, teacher_variables, images)):
    sums.update(steps.classification_sums(logits, batch, prefix=f'teacher{i}_'))
  return sums


@register('schemes', 'multi_teacher')
def build(context: base.Context) -> compile_lib.Compiled:
  """Distillation of ``config.student`` from the teachers of ``config.scheme.teachers``."""
  config, method, scheme = context.config, context.method, context.config.scheme
  workdirs = tuple(scheme.teachers)
  if not workdirs:
    raise ValueError('scheme multi_teacher needs config.scheme.teachers: a tuple of the '
                     'teacher runs\' workdirs (it is empty).')
  if config.teacher.workdir:
    raise ValueError('scheme multi_teacher reads its teachers from config.scheme.teachers; '
                     'leave config.teacher.workdir empty.')
  if not method.needs_teacher:
    raise ValueError(f'Method {config.method.name!r} uses no teacher; multi_teacher needs '
                     'a distillation method (kd, dkd, ...).')
  weights = teacher_weights(tuple(scheme.weights), len(workdirs))
  combine = registry.get('teacher_combiners', scheme.combine)
  resolutions = _resolutions(config, len(workdirs))
  if not 0 <= scheme.feature_teacher < len(workdirs):
    raise ValueError(f'config.scheme.feature_teacher={scheme.feature_teacher} is not the index '
                     f'of one of the {len(workdirs)} teachers.')
  loaded = []
  for i, (workdir, resolution) in enumerate(zip(workdirs, resolutions)):
    model_config = teachers.saved_model_config(workdir)
    model_config.dtype = config.teacher.dtype
    sample = resize(context.sample_images, resolution)
    loaded.append(teachers.load_trained(
        workdir, model_config, num_classes=context.spec.num_classes, sample_images=sample,
        mesh=context.mesh, rules=config.sharding.teacher_rules or config.sharding.rules,
        role=f'scheme.teachers[{i}]', config=config))
  modules = tuple(t.module for t in loaded)
  teacher_fn = functools.partial(
      combined_teacher, modules=modules, resolutions=resolutions, combine=combine,
      weights=weights, temperature=scheme.combine_temperature,
      feature_teacher=scheme.feature_teacher)
  boxed_init = functools.partial(
      state_lib.init_boxed_state, student=context.student, method=method,
      optimizer=context.optimizer, sample_images=context.sample_images,
      teacher_features=loaded[scheme.feature_teacher].features, num_train=context.num_train)
  train_step = functools.partial(
      steps.train_step, student=context.student, teacher_fn=teacher_fn, method=method,
      optimizer=context.optimizer, schedule=context.schedule,
      view_kwargs=context.view_kwargs, teacher_view=config.teacher.view)
  eval_fn = functools.partial(eval_step, student=context.student, modules=modules,
                              resolutions=resolutions, weights=weights,
                              mean=context.spec.mean, std=context.spec.std)
  return base.compile_scheme(
      context, boxed_init=boxed_init, train_step=train_step, eval_step=eval_fn,
      teacher_variables=tuple(t.variables for t in loaded),
      teacher_sources=tuple(t.source for t in loaded),
      model_names={'student': repr(config.student.model),
                   'teacher': loaded[scheme.feature_teacher].description})
