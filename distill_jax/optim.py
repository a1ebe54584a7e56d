"""The optimizer and learning-rate schedule from ``config.optim``."""

from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

OPTIMIZERS = ('sgd', 'adam', 'adamw')
SCHEDULES = ('constant', 'cosine', 'step')


def make_schedule(optim: ml_collections.ConfigDict, *, steps_per_epoch: int,
                  total_steps: int) -> Callable[[jax.Array], jax.Array]:
  """Learning rate as a function of the step: linear warm-up, then the schedule.

  The warm-up lasts ``optim.warmup_steps`` steps (when > 0), else
  ``optim.warmup_epochs * steps_per_epoch``.
  """
  if optim.schedule not in SCHEDULES:
    raise ValueError(f'optim.schedule={optim.schedule!r}; choose one of {SCHEDULES}.')
  peak = optim.learning_rate
  warmup = optim.warmup_steps or int(round(optim.warmup_epochs * steps_per_epoch))
  if optim.schedule == 'constant':
    main = optax.constant_schedule(peak)
  elif optim.schedule == 'cosine':
    main = optax.cosine_decay_schedule(peak, max(total_steps - warmup, 1))
  else:
    boundaries = {int(round(e * steps_per_epoch)) - warmup: optim.decay_factor
                  for e in optim.decay_epochs}
    main = optax.piecewise_constant_schedule(peak, boundaries)
  if not warmup:
    return main
  return optax.join_schedules(
      [optax.linear_schedule(0.0, peak, warmup), main], [warmup])


def max_norm(limit: float) -> optax.GradientTransformation:
  """Keeps each unit's incoming weights at L2 norm <= ``limit`` after the update.

  The max-norm constraint of dropout training (Hinton et al., 2012;
  Srivastava et al., 2014): every kernel (a parameter of >= 2 axes, its last
  axis the output units: Dense ``[in, out]``, Conv ``[h, w, in, out]``) whose
  updated column ``p + u`` is longer than ``limit`` is scaled back onto the
  ball; the update returned is the projected parameter minus ``p``. Put last
  in the chain: it projects the final update.
  """
  def project(update, param):
    if param.ndim < 2:
      return update
    new = param + update
    norms = jnp.sqrt(jnp.sum(jnp.square(new), axis=tuple(range(new.ndim - 1)), keepdims=True))
    return new * jnp.minimum(1.0, limit / jnp.maximum(norms, 1e-12)) - param

  def update(updates, state, params=None):
    if params is None:
      raise ValueError('max_norm needs the params: optimizer.update(grads, state, params).')
    return jax.tree.map(project, updates, params), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def make_optimizer(optim: ml_collections.ConfigDict,
                   schedule: Callable[[jax.Array], jax.Array]
                   ) -> optax.GradientTransformation:
  """SGD (PyTorch-style coupled weight decay), Adam or AdamW, optional clipping
  and max-norm constraint."""
  if optim.name not in OPTIMIZERS:
    raise ValueError(f'optim.name={optim.name!r}; choose one of {OPTIMIZERS}.')
  parts = []
  if optim.grad_clip_norm:
    parts.append(optax.clip_by_global_norm(optim.grad_clip_norm))
  if optim.name == 'adamw':
    parts.append(optax.adamw(schedule, weight_decay=optim.weight_decay))
  else:
    if optim.weight_decay:
      parts.append(optax.add_decayed_weights(optim.weight_decay))
    if optim.name == 'sgd':
      parts.append(optax.sgd(schedule, momentum=optim.momentum or None,
                             nesterov=optim.nesterov))
    else:
      parts.append(optax.adam(schedule))
  if optim.max_norm:
    if optim.max_norm < 0:
      raise ValueError(f'optim.max_norm={optim.max_norm!r} must be > 0 (0 = off).')
    parts.append(max_norm(optim.max_norm))
  return optax.chain(*parts)
