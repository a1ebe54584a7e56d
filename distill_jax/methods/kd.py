"""``kd``: Hinton, Vinyals & Dean (2015), "Distilling the Knowledge in a Neural Network".

loss = alpha * CE(student, labels) + (1 - alpha) * T**2 * KL(p_teacher^T || p_student^T)

The ``T**2`` factor (inside ``losses.kl_divergence``) keeps the soft-target
gradients' scale independent of the temperature, as the paper prescribes.
"""

import dataclasses

from distill_jax import losses
from distill_jax.methods import base
from distill_jax.methods.ce import label_cross_entropy
from distill_jax.registry import register


@register('methods', 'kd')
@dataclasses.dataclass(frozen=True)
class KnowledgeDistillation(base.Method):
  """Soft-target distillation.

  Attributes:
    temperature: softmax temperature T > 0 of both models' outputs.
    alpha: weight of the hard-label cross-entropy, in [0, 1]; the soft-target
      term gets ``1 - alpha``.
  """
  temperature: float = 4.0
  alpha: float = 0.1

  def __post_init__(self):
    base.check_temperature('kd.temperature', self.temperature)
    base.check_number('kd.alpha', self.alpha, unit_interval=True)

  def loss(self, student_out, teacher_out, batch, aux, step):
    del aux, step
    student_logits, teacher_logits = student_out[0], teacher_out[0]
    ce = label_cross_entropy(student_logits, batch)
    kl = losses.kl_divergence(
        student_logits, teacher_logits, temperature=self.temperature).mean()
    total = self.alpha * ce + (1.0 - self.alpha) * kl
    return total, {'ce': ce, 'kl': kl}
