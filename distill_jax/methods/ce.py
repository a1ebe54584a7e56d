"""``ce``: the student trained alone on the hard labels (the from-scratch baseline)."""

import dataclasses

import jax
import jax.numpy as jnp
import optax

from distill_jax.methods import base
from distill_jax.registry import register


def hard_label_cross_entropy(logits: jax.Array, labels: jax.Array,
                             label_smoothing: float = 0.0) -> jax.Array:
  """Mean cross-entropy of ``logits`` [B, K] (fp32) against int ``labels`` [B]."""
  logits = logits.astype(jnp.float32)
  targets = optax.smooth_labels(
      jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
  return optax.softmax_cross_entropy(logits, targets).mean()


@register('methods', 'ce')
@dataclasses.dataclass(frozen=True)
class CrossEntropy(base.Method):
  """Cross-entropy on labels; no teacher is run.

  Attributes:
    label_smoothing: mass spread uniformly over the classes, in [0, 1].
  """
  label_smoothing: float = 0.0
  needs_teacher = False

  def __post_init__(self):
    base.check_number('ce.label_smoothing', self.label_smoothing, unit_interval=True)

  def loss(self, student_out, teacher_out, batch, aux, step):
    del teacher_out, aux, step
    ce = hard_label_cross_entropy(student_out[0], batch['label'], self.label_smoothing)
    return ce, {'ce': ce}
