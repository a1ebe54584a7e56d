"""``token_reverse_kl``: reverse KL per token, ``T**2 KL(p_s || p_t)`` (MiniLLM's objective, token level).

Mode seeking: the student is penalized for mass where the teacher has little.
"""

import dataclasses

from distill_jax import losses
from distill_jax.losses import large_vocab
from distill_jax.methods import token_base
from distill_jax.registry import register


@register('methods', 'token_reverse_kl')
@dataclasses.dataclass(frozen=True)
class TokenReverseKL(token_base.TokenDivergence):
  """Reverse KL over the vocabulary at every response token."""
  fused = True

  def divergence(self, student_logits, teacher_logits):
    return losses.reverse_kl(student_logits, teacher_logits,
                             temperature=self.temperature)

  def fused_divergence(self, student, teacher, loss_mask):
    return large_vocab.on_linear_logits(large_vocab.fused_linear_reverse_kl, student, teacher,
                                        temperature=self.temperature, row_weights=loss_mask)
