"""``token_gold``: GOLD's hybrid cross-tokenizer loss, KL on shared tokens and ULD on the rest.

The aligned spans and batch of ``token_uld`` (see there). The labels the two
vocabularies share -- token ids that spell the same text, word boundary
included (``llm.vocabulary.matched_tokens``; the task fills them in from the
two tokenizers) -- are compared directly, the others by ULD::

  divergence = matched_weight * sum_m q_t[t_m] log(q_t[t_m] / q_s[s_m])
             + unmatched_weight * ULD(q_s without the s_m, q_t without the t_m)

(``losses.cross_vocab.hybrid_uld``), per span, averaged over the spans.
"""

import dataclasses

from distill_jax.losses import cross_vocab
from distill_jax.methods import base
from distill_jax.methods import token_uld
from distill_jax.registry import register


@register('methods', 'token_gold')
@dataclasses.dataclass(frozen=True)
class TokenGOLD(token_uld.TokenULD):
  """KL on the matched labels, ULD on the unmatched ones, per aligned span.

  Attributes:
    matched_weight, unmatched_weight: weights of the two terms (>= 0).
    matched_student_ids, matched_teacher_ids: the pairs of labels that are
      the same token (set by the task from the tokenizers; ``()``: none, and
      the loss is ``unmatched_weight * ULD``).
  """
  matched_weight: float = 1.0
  unmatched_weight: float = 1.0
  matched_student_ids: tuple[int, ...] = ()
  matched_teacher_ids: tuple[int, ...] = ()

  def __post_init__(self):
    super().__post_init__()
    base.check_number('token_gold.matched_weight', self.matched_weight, non_negative=True)
    base.check_number('token_gold.unmatched_weight', self.unmatched_weight, non_negative=True)
    if len(self.matched_student_ids) != len(self.matched_teacher_ids):
      raise ValueError(f'token_gold: {len(self.matched_student_ids)} matched student ids but '
                       f'{len(self.matched_teacher_ids)} teacher ids; they pair up.')

  def span_divergence(self, student_rows, student_log_scale, teacher_rows, teacher_log_scale):
    matched, unmatched = cross_vocab.hybrid_uld(
        student_rows, teacher_rows, matched_student_ids=self.matched_student_ids,
        matched_teacher_ids=self.matched_teacher_ids, student_log_scale=student_log_scale,
        teacher_log_scale=teacher_log_scale, temperature=self.temperature,
        chunk_rows=self.chunk_rows, top_k=self.top_k)
    return (self.matched_weight * matched + self.unmatched_weight * unmatched,
            {'matched_kl': matched, 'unmatched_uld': unmatched})
