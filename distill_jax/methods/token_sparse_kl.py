"""``token_sparse_kl``: forward KL per token against cached sparse teacher targets.

Offline distillation (Gemma-style): the teacher ran once over the data and an
offline teacher-logit cache (``distill_jax.data.logit_cache``) holds, per
token, ``k`` of its classes -- top-k with the log of the remaining mass, or
sampled-k with importance weights. No teacher forward pass in the step
(``needs_teacher = False``); the batch carries the targets, aligned with the
student's logits ``[B, T, V]`` (``logit_cache.CachedExamples`` reads them;
LM runs with ``data.name=logit_cache``):

* ``target_ids`` int32 ``[B, T, k]``, ``target_logprobs`` float32
  ``[B, T, k]`` (``-inf`` for padding), ``tail_logprob`` float32 ``[B, T]``;
* ``targets``, ``loss_mask`` as for every token-level method
  (``methods.token_base``).

The per-token divergence is ``losses.sparse_kl_divergence`` (``T**2``
scaled): with ``tail_bucket=True`` over the ``k`` cached classes plus one
bucket for the rest (the exact forward KL when ``k = V``), with
``tail_bucket=False`` against the target renormalized over the ``k`` classes.
Sampled-k caches store no tail, so both modes agree on them.
"""

import dataclasses
from typing import ClassVar

from distill_jax import losses
from distill_jax.data.logit_cache import TARGET_KEYS
from distill_jax.methods import token_base
from distill_jax.registry import register



@register('methods', 'token_sparse_kl')
@dataclasses.dataclass(frozen=True)
class TokenSparseKL(token_base.TokenDivergence):
  """Forward KL to cached sparse teacher targets at every response token.

  Attributes:
    temperature: softmax temperature ``T > 0`` of the student and of the
      cached teacher log-probabilities (cache them at ``T = 1``).
    ce_weight: weight of the next-token cross-entropy, in ``[0, 1]``.
    tail_bucket: keep the teacher's mass outside the ``k`` classes as one
      extra class (True) or renormalize the ``k`` classes (False).
  """
  needs_teacher: ClassVar[bool] = False
  tail_bucket: bool = True

  def loss(self, student_out, teacher_out, batch, aux, step):
    del teacher_out, aux, step
    missing = [key for key in TARGET_KEYS if key not in batch]
    if missing:
      raise ValueError(
          f'token_sparse_kl distills from cached teacher targets, but the batch '
          f'has no {", ".join(missing)} (keys: {", ".join(sorted(batch))}). '
          'Train from a teacher-logit cache: data.name=logit_cache, data.data_dir=<cache> '
          '(distill_jax.data.logit_cache.CachedExamples).')
    student_logits = student_out[0]
    divergence = losses.sparse_kl_divergence(
        student_logits, batch['target_ids'], batch['target_logprobs'],
        tail_logprob=batch['tail_logprob'] if self.tail_bucket else None,
        temperature=self.temperature)
    return self.combine(student_logits, divergence, batch)
