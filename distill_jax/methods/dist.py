"""``dist``: Huang et al. (2022), "Knowledge Distillation from A Stronger Teacher" (DIST).

Matches relations instead of exact probabilities: the Pearson correlation of
the tempered class distributions of each example (inter-class) and of each
class over the batch (intra-class)::

  loss = ce_weight * CE + beta * mean_i T**2 (1 - rho(p_s[i], p_t[i]))
                        + gamma * mean_k T**2 (1 - rho(p_s[:, k], p_t[:, k]))

CIFAR-100 recipe of the paper: ``beta = gamma = 2``, ``T = 4``.
"""

import dataclasses

from distill_jax import losses
from distill_jax.methods import base
from distill_jax.methods import common
from distill_jax.methods.ce import label_cross_entropy
from distill_jax.registry import register


@register('methods', 'dist')
@dataclasses.dataclass(frozen=True)
class DIST(base.Method):
  """DIST.

  Attributes:
    ce_weight: weight of the hard-label cross-entropy.
    beta: inter-class relation weight.
    gamma: intra-class relation weight.
    temperature: ``T > 0``.
  """
  ce_weight: float = 1.0
  beta: float = 2.0
  gamma: float = 2.0
  temperature: float = 4.0

  def __post_init__(self):
    common.check_numbers('dist', ce_weight=self.ce_weight, beta=self.beta, gamma=self.gamma)
    common.check_numbers('dist', positive=True, temperature=self.temperature)

  def loss(self, student_out, teacher_out, batch, aux, step):
    del aux, step
    student_logits, teacher_logits = student_out[0], teacher_out[0]
    ce = label_cross_entropy(student_logits, batch)
    inter = losses.inter_class_relation(student_logits, teacher_logits,
                                        temperature=self.temperature).mean()
    intra = losses.intra_class_relation(student_logits, teacher_logits,
                                        temperature=self.temperature).mean()
    total = self.ce_weight * ce + self.beta * inter + self.gamma * intra
    return total, {'ce': ce, 'inter': inter, 'intra': intra}
