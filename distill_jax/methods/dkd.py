"""``dkd``: Zhao et al. (2022), "Decoupled Knowledge Distillation" (CVPR).

The KD loss splits into a target-class term and a non-target term::

  KD = TCKD + (1 - p_t^gt) NCKD
  TCKD = T**2 KL([p_t^gt, 1 - p_t^gt] || [p_s^gt, 1 - p_s^gt])   (binary)
  NCKD = T**2 KL(p_t^{not gt} || p_s^{not gt})   (softmax over the other classes)

DKD weighs them independently:
``loss = ce_weight * CE + w(step) * (alpha * TCKD + beta * NCKD)`` with the
linear warm-up ``w(step) = min((step + 1) / warmup_steps, 1)`` (mdistiller
warms up over 20 epochs, per epoch; here per step). NCKD is
``losses.kl_divergence`` with the target class masked out (``where``), which
is exactly mdistiller's ``- 1000 * gt_mask``.
"""

import dataclasses

import jax
import jax.numpy as jnp

from distill_jax import losses
from distill_jax.methods import base
from distill_jax.methods import common
from distill_jax.methods.ce import label_cross_entropy
from distill_jax.registry import register


def _binary_log_probs(logits: jax.Array, target: jax.Array, temperature: float) -> jax.Array:
  """``log [p^gt, 1 - p^gt]`` of ``softmax(logits / T)``, ``[B, K] -> [B, 2]``."""
  z = logits.astype(jnp.float32) / temperature
  total = jax.nn.logsumexp(z, -1)
  gt = jnp.sum(jnp.where(target, z, 0.0), -1)
  others = jax.nn.logsumexp(jnp.where(target, -jnp.inf, z), -1)
  return jnp.stack([gt - total, others - total], -1)


def decoupled_kd(student_logits: jax.Array, teacher_logits: jax.Array,
                 labels: jax.Array, *, temperature: float) -> tuple[jax.Array, jax.Array]:
  """Per-example ``(TCKD [B], NCKD [B])`` of logits ``[B, K]`` and int labels ``[B]``.

  Both include the ``T**2`` factor; ``TCKD + (1 - p_t^gt) NCKD`` is the
  classic ``T**2 KL`` (the decomposition of the paper's eq. 4).
  """
  target = jax.nn.one_hot(labels, student_logits.shape[-1], dtype=bool)
  log_s = _binary_log_probs(student_logits, target, temperature)
  log_t = jax.lax.stop_gradient(_binary_log_probs(teacher_logits, target, temperature))
  tckd = temperature**2 * jnp.sum(jnp.exp(log_t) * (log_t - log_s), -1)
  nckd = losses.kl_divergence(student_logits, teacher_logits, temperature=temperature,
                              where=~target)
  return tckd, nckd


@register('methods', 'dkd')
@dataclasses.dataclass(frozen=True)
class DecoupledKD(base.Method):
  """Decoupled KD.

  Attributes:
    ce_weight: weight of the hard-label cross-entropy.
    alpha: TCKD weight (mdistiller 1.0).
    beta: NCKD weight (mdistiller 8.0 for resnet32x4->resnet8x4; 2.0 to 8.0
      per pair).
    temperature: ``T > 0``.
    warmup_steps: steps of the linear warm-up of the DKD terms (0 = none).
  """
  ce_weight: float = 1.0
  alpha: float = 1.0
  beta: float = 8.0
  temperature: float = 4.0
  warmup_steps: int = 0

  def __post_init__(self):
    common.check_numbers('dkd', ce_weight=self.ce_weight, alpha=self.alpha,
                         beta=self.beta, warmup_steps=self.warmup_steps)
    common.check_numbers('dkd', positive=True, temperature=self.temperature)

  def loss(self, student_out, teacher_out, batch, aux, step):
    del aux
    student_logits, teacher_logits = student_out[0], teacher_out[0]
    ce = label_cross_entropy(student_logits, batch)
    tckd, nckd = decoupled_kd(student_logits, teacher_logits, batch['label'],
                              temperature=self.temperature)
    tckd, nckd = tckd.mean(), nckd.mean()
    ramp = jnp.minimum((step + 1) / max(self.warmup_steps, 1), 1.0)
    total = self.ce_weight * ce + ramp * (self.alpha * tckd + self.beta * nckd)
    return total, {'ce': ce, 'tckd': tckd, 'nckd': nckd}
