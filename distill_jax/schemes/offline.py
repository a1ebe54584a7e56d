"""``offline``: a frozen, pre-trained teacher; its forward runs inside the jitted step.

The default scheme. The teacher is the latest checkpoint of the run in
``config.teacher.workdir`` (its model read from that run's ``config.json``);
without one, only teacher-free methods (``ce``) run. ``config.teacher.view``
chooses what the teacher sees (``data.views``: consistent, independent or
clean), which with ``config.data.mixing`` gives Beyer et al.'s consistent
teaching / function matching.
"""

import functools

from distill_jax import compile as compile_lib
from distill_jax import state as state_lib
from distill_jax import steps
from distill_jax.registry import register
from distill_jax.schemes import base
from distill_jax.schemes import teachers


def load_config_teacher(context: base.Context) -> teachers.LoadedModel | None:
  """The teacher of ``config.teacher`` (None when no workdir is set).

  Raises:
    ValueError: the method needs a teacher and none is configured.
  """
  config = context.config
  if not config.teacher.workdir:
    if context.method.needs_teacher:
      raise ValueError(f'Method {config.method.name!r} needs a teacher: set '
                       'config.teacher.workdir to the teacher run\'s workdir.')
    return None
  model_config = teachers.saved_model_config(config.teacher.workdir, config.teacher)
  return teachers.load_trained(
      config.teacher.workdir, model_config, num_classes=context.spec.num_classes,
      sample_images=context.sample_images, mesh=context.mesh,
      rules=config.sharding.teacher_rules or config.sharding.rules, role='teacher',
      config=config)


@register('schemes', 'offline')
def build(context: base.Context) -> compile_lib.Compiled:
  """Offline distillation of ``config.student`` from ``config.teacher``."""
  config, method = context.config, context.method
  teacher = load_config_teacher(context)
  teacher_fn = functools.partial(steps.teacher_forward, teacher.module) if teacher else None
  boxed_init = functools.partial(
      state_lib.init_boxed_state, student=context.student, method=method,
      optimizer=context.optimizer, sample_images=context.sample_images,
      teacher_features=teacher.features if teacher else None, num_train=context.num_train)
  train_step = functools.partial(
      steps.train_step, student=context.student,
      teacher_fn=teacher_fn if method.needs_teacher else None, method=method,
      optimizer=context.optimizer, schedule=context.schedule,
      view_kwargs=context.view_kwargs, teacher_view=config.teacher.view)
  eval_step = functools.partial(steps.eval_step, student=context.student,
                                teacher_fn=teacher_fn, mean=context.spec.mean,
                                std=context.spec.std)
  return base.compile_scheme(
      context, boxed_init=boxed_init, train_step=train_step, eval_step=eval_step,
      teacher_variables=teacher.variables if teacher else None,
      teacher_sources=(teacher.source,) if teacher else (),
      model_names={'student': repr(config.student.model),
                   'teacher': teacher.description if teacher else '(none)'})
