"""``deep_to_shallow``: "Be Your Own Teacher" (Zhang et al., 2019), self-distillation in one model.

Auxiliary exit heads sit on intermediate features of the student
(``config.scheme.exits``; default every ``stageN``/``hiddenN`` but the
deepest). Each head pools its feature, projects it to a bottleneck as wide as
the student's ``pre_logits`` and classifies it. The deepest classifier learns
from the labels; every head ``e`` learns from the deepest one with the
configured method, ``method.loss((head_logits, {'pre_logits': bottleneck}),
stop_gradient(deepest output))`` (``kd`` = BYOT's ``(1-a) CE + a KL``), plus
``feature_weight * ||bottleneck - stop_gradient(pre_logits)||^2`` (BYOT's
feature hint). The heads are aux params: trained with the student, left out of
the exported student.

Evaluation reports the deepest classifier (``accuracy``), every head
(``exit_<feature>_accuracy``) and the ensemble of all of them.
"""

import functools
import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from distill_jax import compile as compile_lib
from distill_jax import state as state_lib
from distill_jax import steps
from distill_jax.data import views
from distill_jax.methods.base import Method
from distill_jax.methods.base import check_number
from distill_jax.methods.ce import label_cross_entropy
from distill_jax.registry import register
from distill_jax.schemes import base

_STAGE = re.compile(r'^(stage|hidden)(\d+)$')


class ExitHead(nn.Module):
  """Pool -> Dense(width) bottleneck -> ReLU -> Dense(num_classes).

  Attributes:
    num_classes: classifier outputs.
    width: bottleneck width (the student's ``pre_logits`` width).
  """
  num_classes: int
  width: int

  @nn.compact
  def __call__(self, feature: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``feature`` ``[B, ..., C]`` -> ``(logits [B, K], bottleneck [B, width])``."""
    x = feature.astype(jnp.float32)
    if x.ndim > 2:
      x = x.mean(axis=tuple(range(1, x.ndim - 1)))
    bottleneck = nn.Dense(self.width, name='bottleneck')(x)
    return nn.Dense(self.num_classes, name='classifier')(nn.relu(bottleneck)), bottleneck


def default_exits(features: dict[str, Any]) -> tuple[str, ...]:
  """Every ``stageN`` (or ``hiddenN``) feature but the deepest, shallow first."""
  found = sorted((int(m.group(2)), name) for name in features
                 if (m := _STAGE.match(name)))
  return tuple(name for _, name in found[:-1])


def init_state(rng: jax.Array, *, student: nn.Module, heads: dict[str, ExitHead],
               method: Method, optimizer: optax.GradientTransformation,
               sample_images: jax.Array, num_train: int) -> state_lib.DistillState:
  """A boxed ``DistillState``; ``aux_params = {'heads': {exit: ...}, 'method': {exit: ...}}``."""
  init_rng, dropout_rng, head_rng, state_rng = jax.random.split(rng, 4)
  params, model_state, features = state_lib.init_model(
      {'params': init_rng, 'dropout': dropout_rng}, student, sample_images)
  aux_params = {'heads': {}, 'method': {}}
  method_state = {}
  for i, (name, head) in enumerate(heads.items()):
    head_key, aux_key, state_key = jax.random.split(jax.random.fold_in(head_rng, i), 3)
    sample = jnp.zeros(features[name].shape, jnp.float32)
    aux_params['heads'][name] = head.init(head_key, sample)['params']
    head_features = {'pre_logits': jax.ShapeDtypeStruct(features['pre_logits'].shape,
                                                        jnp.float32)}
    aux_params['method'][name] = method.init_aux(aux_key, head_features, features)
    method_state[name] = method.init_state(state_key, head_features, features,
                                           num_train=num_train)
  return state_lib.DistillState(
      step=jnp.zeros((), jnp.int32), params=params, model_state=model_state,
      aux_params=aux_params, opt_state=optimizer.init({'student': params, 'aux': aux_params}),
      method_state=method_state, rng=state_rng)


def train_step(state: state_lib.DistillState, teacher_variables: Any, batch: steps.Batch, *,
               student: nn.Module, heads: dict[str, ExitHead], method: Method,
               feature_weight: float, optimizer: optax.GradientTransformation, schedule,
               view_kwargs: dict[str, Any]) -> tuple[state_lib.DistillState, dict[str, jax.Array]]:
  """One update of the student and its exit heads.

  Returns the new state and metrics: ``loss``, ``accuracy`` (deepest),
  ``ce`` (deepest), ``exit_<name>_loss``, ``exit_<name>_accuracy``,
  ``nonfinite`` (1.0: a NaN/Inf loss or gradient; the state was not updated).
  """
  del teacher_variables
  rng = jax.random.fold_in(state.rng, state.step)
  augment_rng, dropout_rng = jax.random.split(rng)
  model_batch = views.augmented_view(augment_rng, batch, **view_kwargs)

  def loss_fn(trainable):
    (logits, features), model_state = steps.forward_train(
        student, trainable['student'], state.model_state, model_batch['image'], dropout_rng)
    deepest = jax.lax.stop_gradient((logits, features))
    ce = label_cross_entropy(logits, model_batch)
    total, metrics, method_state = ce, {'ce': ce}, {}
    for name, head in heads.items():
      head_logits, bottleneck = head.apply({'params': trainable['aux']['heads'][name]},
                                           features[name])
      loss, _, method_state[name] = method.loss_with_state(
          (head_logits, {'pre_logits': bottleneck}), deepest, model_batch,
          trainable['aux']['method'][name], state.step, state.method_state[name])
      hint = jnp.mean(jnp.sum(jnp.square(bottleneck - deepest[1]['pre_logits']), axis=-1))
      total = total + loss + feature_weight * hint
      metrics[f'exit_{name}_loss'] = loss
      metrics[f'exit_{name}_accuracy'] = steps.accuracy(head_logits, batch['label'])
    metrics['accuracy'] = steps.accuracy(logits, batch['label'])
    return total, (model_state, method_state, metrics)

  return steps.update(state, loss_fn, optimizer=optimizer, schedule=schedule)


def eval_step(state: state_lib.DistillState, teacher_variables: Any, batch: steps.Batch, *,
              student: nn.Module, heads: dict[str, ExitHead], mean, std
              ) -> dict[str, jax.Array]:
  """Sums for the deepest classifier (no prefix), ``exit_<name>_`` and ``ensemble_``."""
  del teacher_variables
  images = steps.eval_images(batch, mean=mean, std=std)
  logits, features = student.apply(state.student_variables, images, train=False)
  return steps.ensemble_sums({'': logits, **{
      f'exit_{name}_': head.apply({'params': state.aux_params['heads'][name]},
                                  features[name])[0] for name, head in heads.items()}}, batch)


def exit_heads(context: base.Context) -> dict[str, ExitHead]:
  """One ``ExitHead`` per exit, checked against the student's features."""
  config = context.config
  variables = jax.eval_shape(lambda: nn.unbox(context.student.init(
      jax.random.PRNGKey(0), context.sample_images, train=False)))
  features = jax.eval_shape(
      lambda v: context.student.apply(v, context.sample_images, train=False), variables)[1]
  exits = tuple(config.scheme.exits) or default_exits(features)
  if not exits:
    raise ValueError(f'deep_to_shallow: model {config.student.model!r} has no intermediate '
                     f'stage to put an exit head on (features: {", ".join(features)}).')
  missing = [name for name in (*exits, 'pre_logits') if name not in features]
  if missing:
    raise ValueError(f'deep_to_shallow: model {config.student.model!r} has no feature(s) '
                     f'{", ".join(missing)}; it has: {", ".join(features)}.')
  width = features['pre_logits'].shape[-1]
  return {name: ExitHead(context.spec.num_classes, width) for name in exits}


@register('schemes', 'deep_to_shallow')
def build(context: base.Context) -> compile_lib.Compiled:
  """Self-distillation of ``config.student``'s exits from its deepest classifier."""
  config, method = context.config, context.method
  if config.teacher.workdir:
    raise ValueError('scheme deep_to_shallow is its own teacher; leave '
                     'config.teacher.workdir empty.')
  check_number('scheme.feature_weight', config.scheme.feature_weight, non_negative=True)
  heads = exit_heads(context)
  boxed_init = functools.partial(
      init_state, student=context.student, heads=heads, method=method,
      optimizer=context.optimizer, sample_images=context.sample_images,
      num_train=context.num_train)
  train_fn = functools.partial(
      train_step, student=context.student, heads=heads, method=method,
      feature_weight=config.scheme.feature_weight, optimizer=context.optimizer,
      schedule=context.schedule, view_kwargs=context.view_kwargs)
  eval_fn = functools.partial(eval_step, student=context.student, heads=heads,
                              mean=context.spec.mean, std=context.spec.std)
  return base.compile_scheme(
      context, boxed_init=boxed_init, train_step=train_fn, eval_step=eval_fn,
      teacher_variables=None,
      model_names={'student': f'{config.student.model!r} exit head',
                   'teacher': f'{config.student.model!r} (deepest classifier)'})
