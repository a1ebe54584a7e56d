"""``token_ce``: next-token cross-entropy on the response tokens, no teacher.

The language-model baseline ("student from scratch") and the student SFT loss
of sequence-level distillation (Kim & Rush 2016; the DeepSeek-R1-Distill
recipe), where the targets are the teacher's generated responses.
"""

import dataclasses

from distill_jax.methods import token_base
from distill_jax.registry import register


@register('methods', 'token_ce')
@dataclasses.dataclass(frozen=True)
class TokenCrossEntropy(token_base.TokenMethod):
  """Masked mean of ``-log p_s(target)`` over ``loss_mask``."""
  needs_teacher = False
  fused = True

  def loss(self, student_out, teacher_out, batch, aux, step):
    del teacher_out, aux, step
    ce = token_base.next_token_ce(student_out[0], batch)
    return ce, {'ce': ce}
