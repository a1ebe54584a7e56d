"""``token_tv``: total variation distance per token, ``T * TV(p_t, p_s)`` (Wen et al. 2023, f-divergence KD)."""

import dataclasses

from distill_jax import losses
from distill_jax.losses import large_vocab
from distill_jax.methods import token_base
from distill_jax.registry import register


@register('methods', 'token_tv')
@dataclasses.dataclass(frozen=True)
class TokenTotalVariation(token_base.TokenDivergence):
  """Total variation at every response token."""
  fused = True

  def divergence(self, student_logits, teacher_logits):
    return losses.total_variation(student_logits, teacher_logits,
                                  temperature=self.temperature)

  def fused_divergence(self, student, teacher, loss_mask):
    return large_vocab.on_linear_logits(large_vocab.fused_linear_total_variation, student,
                                        teacher, temperature=self.temperature,
                                        row_weights=loss_mask)
