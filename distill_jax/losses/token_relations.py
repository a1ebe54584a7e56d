"""Self-attention relation kernels of decoders: MiniLM and MiniLMv2.

Both compare, for every query token, a distribution over the keys it may see
(``allowed`` bool ``[B, T, T]``: causal and not padding): the teacher's is the
target, ``KL(teacher || student)`` summed over keys and averaged over heads,
one value per query token ``[B, T]`` (the caller masks and averages). fp32
math; the teacher is never differentiated.

* ``attention_kl`` (MiniLM, Wang et al. 2020): the attention probabilities
  themselves, ``[B, H, T, T]`` on both sides (one head count).
* ``self_relation_kl`` (MiniLMv2, Wang et al. 2021): the scaled dot-product
  relation of a vector sequence with itself, ``softmax(X_r X_r^T / sqrt(d_r))``
  for each of ``relation_heads`` equal slices ``X_r`` of the concatenated heads
  ``[B, T, H * Dh]``; teacher and student widths and head counts may differ.
  MiniLM's value relation is this on the values with the models' own (equal)
  KV-head count as the relation heads.
"""

import math

import jax
import jax.numpy as jnp

from distill_jax.registry import register

Array = jax.Array


def causal_allowed(token_mask: Array) -> Array:
  """``[B, T, T]``: query ``i`` may see key ``j <= i`` when ``j`` is a real token."""
  t = token_mask.shape[1]
  return jnp.tril(jnp.ones((t, t), jnp.bool_))[None] & token_mask[:, None, :].astype(bool)


def _kl_over_keys(log_p_teacher: Array, log_p_student: Array, allowed: Array) -> Array:
  """``sum_j p_t (log p_t - log p_s)`` over allowed keys, mean over heads:
  ``[B, R, T, T]`` (and ``allowed`` ``[B, T, T]``) -> ``[B, T]``."""
  p_teacher = jnp.exp(log_p_teacher)
  terms = jnp.where(allowed[:, None], p_teacher * (log_p_teacher - log_p_student), 0.0)
  return jnp.mean(jnp.sum(terms, axis=-1), axis=1)


@register('losses', 'attention_kl')
def attention_kl(student_probs: Array, teacher_probs: Array, allowed: Array) -> Array:
  """MiniLM's attention transfer: ``KL(A_t || A_s)`` per query, mean over heads.

  Args:
    student_probs: ``[B, H, T, T]`` attention probabilities (rows sum to 1
      over the allowed keys).
    teacher_probs: ``[B, H, T, T]``, the same head count; never differentiated.
    allowed: bool ``[B, T, T]`` (``causal_allowed``).

  Returns:
    ``[B, T]``.
  """
  if student_probs.shape != teacher_probs.shape:
    raise ValueError(
        f'attention_kl: student attention {student_probs.shape} and teacher attention '
        f'{teacher_probs.shape} must have one [B, H, T, T] shape (MiniLM needs one head '
        'count; token_minilmv2 relates models of any head counts).')
  tiny = jnp.finfo(jnp.float32).tiny
  log_s = jnp.log(jnp.maximum(student_probs.astype(jnp.float32), tiny))
  log_t = jnp.log(jnp.maximum(jax.lax.stop_gradient(teacher_probs).astype(jnp.float32), tiny))
  return _kl_over_keys(log_t, log_s, allowed)


def self_relation(x: Array, relation_heads: int, allowed: Array) -> Array:
  """Log of ``softmax(X_r X_r^T / sqrt(d_r))`` over the allowed keys.

  Args:
    x: ``[B, T, H, Dh]`` (or ``[B, T, D]``), its last axes flattened to
      ``D = H * Dh`` and cut into ``relation_heads`` slices of ``d_r = D / R``.
    relation_heads: ``R``, dividing ``D``.
    allowed: bool ``[B, T, T]``.

  Returns:
    ``[B, R, T, T]`` float32 log-probabilities.
  """
  b, t = x.shape[:2]
  x = x.reshape(b, t, -1).astype(jnp.float32)
  width = x.shape[-1]
  if width % relation_heads:
    raise ValueError(f'self_relation: {relation_heads} relation heads do not divide the '
                     f'width {width}.')
  x = x.reshape(b, t, relation_heads, width // relation_heads)
  scores = jnp.einsum('btrd,bsrd->brts', x, x) / math.sqrt(width // relation_heads)
  scores = jnp.where(allowed[:, None], scores, jnp.finfo(jnp.float32).min)
  return jax.nn.log_softmax(scores, axis=-1)


@register('losses', 'self_relation_kl')
def self_relation_kl(student: Array, teacher: Array, allowed: Array, *,
                     relation_heads: int) -> Array:
  """MiniLMv2's relation transfer: ``KL(R_t || R_s)`` of ``self_relation``s.

  Args:
    student: ``[B, T, H_s, Dh_s]`` (or ``[B, T, D_s]``) queries, keys or values.
    teacher: ``[B, T, H_t, Dh_t]`` of the same kind, any width; never
      differentiated.
    allowed: bool ``[B, T, T]``.
    relation_heads: ``R``, dividing both widths.

  Returns:
    ``[B, T]``: the KL summed over keys, mean over the ``R`` relation heads.
  """
  if student.shape[:2] != teacher.shape[:2]:
    raise ValueError(f'self_relation_kl: student {student.shape} and teacher {teacher.shape} '
                     'must share [B, T] (one tokenization).')
  return _kl_over_keys(self_relation(jax.lax.stop_gradient(teacher), relation_heads, allowed),
                       self_relation(student, relation_heads, allowed), allowed)
