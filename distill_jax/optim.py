"""The optimizer and learning-rate schedule from ``config.optim``."""

from typing import Callable

import jax
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


def make_optimizer(optim: ml_collections.ConfigDict,
                   schedule: Callable[[jax.Array], jax.Array]
                   ) -> optax.GradientTransformation:
  """SGD (PyTorch-style coupled weight decay), Adam or AdamW, optional clipping."""
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
  return optax.chain(*parts)
