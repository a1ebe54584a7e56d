"""``token_tv``: total variation distance per token, ``T * TV(p_t, p_s)`` (Wen et al. 2023, f-divergence KD)."""

import dataclasses

from distill_jax import losses
from distill_jax.methods import token_base
from distill_jax.registry import register


@register('methods', 'token_tv')
@dataclasses.dataclass(frozen=True)
class TokenTotalVariation(token_base.TokenDivergence):
  """Total variation at every response token."""

  def divergence(self, student_logits, teacher_logits):
    return losses.total_variation(student_logits, teacher_logits,
                                  temperature=self.temperature)
