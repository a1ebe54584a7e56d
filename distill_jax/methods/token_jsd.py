"""``token_jsd``: GKD's generalized Jensen-Shannon divergence per token (Agarwal et al. 2024).

``beta=0`` is the forward KL, ``beta=1`` the reverse KL (see
``losses.generalized_jsd`` for the normalization).
"""

import dataclasses

from distill_jax import losses
from distill_jax.losses import large_vocab
from distill_jax.methods import base
from distill_jax.methods import token_base
from distill_jax.registry import register


@register('methods', 'token_jsd')
@dataclasses.dataclass(frozen=True)
class TokenGeneralizedJSD(token_base.TokenDivergence):
  """Generalized JSD at every response token.

  Attributes:
    beta: teacher weight of the mixture, in ``[0, 1]``.
  """
  beta: float = 0.5
  fused = True

  def __post_init__(self):
    super().__post_init__()
    base.check_number('token_jsd.beta', self.beta, unit_interval=True)

  def divergence(self, student_logits, teacher_logits):
    return losses.generalized_jsd(student_logits, teacher_logits, beta=self.beta,
                                  temperature=self.temperature)

  def fused_divergence(self, student, teacher, loss_mask):
    return large_vocab.on_linear_logits(large_vocab.fused_linear_generalized_jsd, student,
                                        teacher, beta=self.beta, temperature=self.temperature,
                                        row_weights=loss_mask)
