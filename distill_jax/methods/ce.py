"""``ce``: the student trained alone on the hard labels (the from-scratch baseline)."""

import dataclasses

import jax
import jax.numpy as jnp
import optax

from distill_jax.methods import base
from distill_jax.registry import register


def label_cross_entropy(logits: jax.Array, batch: dict[str, jax.Array],
                        label_smoothing: float = 0.0) -> jax.Array:
  """Mean cross-entropy of ``logits`` [B, K] (fp32) against the batch's labels.

  Plain batches: the int labels ``label`` [B]. Mixed batches (``data.mixing``:
  ``mix_label`` int [B], ``mix_weight`` float [B]) use the mixed targets
  ``w * onehot(label) + (1 - w) * onehot(mix_label)``.
  """
  logits = logits.astype(jnp.float32)
  k = logits.shape[-1]
  targets = jax.nn.one_hot(batch['label'], k)
  if 'mix_label' in batch:
    weight = batch['mix_weight'][:, None]
    targets = weight * targets + (1.0 - weight) * jax.nn.one_hot(batch['mix_label'], k)
  return optax.softmax_cross_entropy(logits, optax.smooth_labels(targets, label_smoothing)).mean()


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
    ce = label_cross_entropy(student_out[0], batch, self.label_smoothing)
    return ce, {'ce': ce}
