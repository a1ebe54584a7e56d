"""``token_uld``: Universal Logit Distillation across tokenizers (Boizard et al. 2024).

Teacher and student tokenize the same text differently, so their positions
and vocabularies differ. The task aligns the two tokenizations into spans
(``data.token_alignment``: the shortest runs of tokens on each side that end
at the same character) and hands the method, besides each side's logits
(student ``[B, T_s, V_s]``, teacher ``[B, T_t, V_t]``):

* ``targets`` / ``loss_mask`` ``[B, T_s]`` (the student's, as for every token
  method), ``span`` int32 ``[B, T_s]``: the span of each target (``-1``: none);
* ``teacher_targets`` and ``teacher_span`` ``[B, T_t]``: the same for the
  teacher's tokens.

Each span is one merged distribution per side (``losses.cross_vocab.span_rows``:
its first token's distribution times the probability of the realized rest),
and the loss is the mean over the spans of the ULD distance between them::

  loss = ce_weight * CE + (1 - ce_weight) * mean_spans ULD(q_s, q_t)

with ULD the L1 distance between the sorted probability vectors
(``losses.cross_vocab.uld_distance``; by default their top 1,024 entries one by
one and the rest by mass, ``top_k``). ``token_gold`` adds the KL term on the
tokens both vocabularies share.
"""

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from distill_jax.losses import cross_vocab
from distill_jax.methods import base
from distill_jax.methods import token_base
from distill_jax.registry import register

Array = jax.Array
SPAN_KEYS = ('span', 'teacher_targets', 'teacher_span')


@register('methods', 'token_uld')
@dataclasses.dataclass(frozen=True)
class TokenULD(token_base.TokenMethod):
  """ULD between the aligned spans of two tokenizations.

  Attributes:
    temperature: softmax temperature ``T > 0`` of both models.
    ce_weight: weight of the student's next-token cross-entropy, in ``[0, 1]``.
    chunk_rows: spans per chunk of the sorted-probability computation.
    top_k: entries of each sorted distribution compared one by one, the rest
      by their total mass (``losses.cross_vocab.uld_distance``; 0 = all, a
      full sort of every row, ~60x slower on XLA:CPU at these vocabularies).
  """
  cross_tokenizer: ClassVar[bool] = True
  temperature: float = 1.0
  ce_weight: float = 0.0
  chunk_rows: int = 64
  top_k: int = 1024

  def __post_init__(self):
    name = type(self).__name__
    base.check_temperature(f'{name}.temperature', self.temperature)
    base.check_number(f'{name}.ce_weight', self.ce_weight, unit_interval=True)
    base.check_number(f'{name}.chunk_rows', self.chunk_rows, positive=True)
    base.check_number(f'{name}.top_k', self.top_k, non_negative=True)

  def span_divergence(self, student_rows: Array, student_log_scale: Array,
                      teacher_rows: Array, teacher_log_scale: Array
                      ) -> tuple[Array, dict[str, Array]]:
    """``([N] divergence, {name: [N] term})`` between merged span rows ``[N, V_*]``."""
    uld = cross_vocab.uld_distance(
        student_rows, teacher_rows, student_log_scale=student_log_scale,
        teacher_log_scale=teacher_log_scale, temperature=self.temperature,
        chunk_rows=self.chunk_rows, top_k=self.top_k)
    return uld, {}

  def loss(self, student_out, teacher_out, batch, aux, step):
    del aux, step
    missing = [key for key in SPAN_KEYS if key not in batch]
    if missing:
      raise ValueError(
          f'{type(self).__name__} distills across tokenizers, but the batch has no '
          f'{", ".join(missing)}: run it with a student tokenizer other than the '
          "teacher's (student.tokenizer), which aligns the two tokenizations.")
    student_logits, teacher_logits = student_out[0], jax.lax.stop_gradient(teacher_out[0])
    num_spans = min(student_logits.shape[1], teacher_logits.shape[1])
    s_rows, s_scale, s_valid = cross_vocab.span_rows(
        student_logits, batch['targets'], batch['span'], num_spans,
        temperature=self.temperature)
    t_rows, t_scale, t_valid = cross_vocab.span_rows(
        teacher_logits, batch['teacher_targets'], batch['teacher_span'], num_spans,
        temperature=self.temperature)
    valid = (s_valid & t_valid).reshape(-1).astype(jnp.float32)
    flat = lambda x: x.reshape((-1,) + x.shape[2:])
    divergence, terms = self.span_divergence(flat(s_rows), flat(s_scale), flat(t_rows),
                                             flat(t_scale))
    mean = lambda x: jnp.sum(x * valid) / jnp.maximum(jnp.sum(valid), 1.0)
    div = mean(divergence)
    ce = token_base.next_token_ce(student_logits if self.ce_weight else
                                  jax.lax.stop_gradient(student_logits), batch)
    total = self.ce_weight * ce + (1.0 - self.ce_weight) * div
    return total, {'ce': ce, 'divergence': div, 'spans': jnp.sum(valid),
                   **{k: mean(v) for k, v in terms.items()}}
