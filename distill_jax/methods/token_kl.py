"""``token_kl``: forward KL per token, ``T**2 KL(p_t || p_s)`` (word-level KD, Kim & Rush 2016).

Mode covering; with ``temperature=1`` and ``ce_weight=0`` it is GKD's
supervised KD with ``beta=0``.
"""

import dataclasses

from distill_jax import losses
from distill_jax.losses import large_vocab
from distill_jax.methods import token_base
from distill_jax.registry import register


@register('methods', 'token_kl')
@dataclasses.dataclass(frozen=True)
class TokenForwardKL(token_base.TokenDivergence):
  """Forward KL over the vocabulary at every response token."""
  fused = True

  def divergence(self, student_logits, teacher_logits):
    return losses.kl_divergence(student_logits, teacher_logits,
                                temperature=self.temperature)

  def fused_divergence(self, student, teacher, loss_mask):
    return large_vocab.on_linear_logits(large_vocab.fused_linear_kl, student, teacher,
                                        temperature=self.temperature, row_weights=loss_mask)
