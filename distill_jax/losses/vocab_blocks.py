"""Block math of the large-vocabulary kernels: one ``[R, Vb]`` block of logits.

The per-block pieces of ``distill_jax.losses.large_vocab``'s chunk pass,
shared by its XLA path (a whole ``[C, V_local]`` chunk as one block) and the
Pallas kernel bodies of ``distill_jax.losses.pallas_kl`` (one
``[block_rows, block_vocab]`` tile): local log-sum-exp parts, per-row
divergence terms and the gradient w.r.t. the student's tempered logits. Both
import this module; it imports neither.

Shapes: ``s, t`` tempered (and masked) logits ``[R, Vb]``; ``lse_*`` ``[R, 1]``;
``hit`` bool ``[R, Vb]`` (the label's column, cross-entropy only). ``kind`` is
``'kl'``, ``'reverse_kl'``, ``'generalized_jsd'``, ``'total_variation'``,
``'skew_kl'``, ``'skew_reverse_kl'`` or ``'cross_entropy'``; ``beta`` is the
JSD's mixture weight or the skew ``lam``, in ``(0, 1)``. float32 math.
"""

import jax
import jax.numpy as jnp
import numpy as np

from distill_jax.losses import logits as logits_lib

Array = jax.Array


def block_lse_parts(z: Array) -> tuple[Array, Array]:
  """Local max ``m`` and ``sum(exp(z - safe(m)))`` over the last axis, ``[R, 1]``.

  ``m`` is ``-inf`` for a row whose local classes are all masked; the sum is
  then 0. ``merge_lse_parts`` rescales parts from vocabulary blocks or
  shards to a common shift.
  """
  m = jnp.max(z, axis=-1, keepdims=True)
  safe = jnp.where(jnp.isfinite(m), m, 0.0)
  return m, jnp.sum(jnp.exp(z - safe), axis=-1, keepdims=True)


def merge_lse_parts(m: Array, l: Array, big: Array) -> Array:
  """Sum-exp parts ``(m, l)`` rescaled to a common shift ``big``: ``l * e^(m - big)``."""
  safe_m = jnp.where(jnp.isfinite(m), m, 0.0)
  return jnp.where(jnp.isfinite(m), l * jnp.exp(safe_m - big), 0.0)


def _jsd_log_ratios(log_p_s: Array, log_p_t: Array, p_s: Array, p_t: Array,
                    beta: float) -> tuple[Array, Array]:
  """``log(p_t / m)`` and ``log(p_s / m)`` for ``m = beta p_t + (1 - beta) p_s``.

  Computed from ``a = log p_t - log p_s`` as in ``logits._scaled_jsd``
  (accurate when ``m`` is close to either); 0 where the weighting
  probability is 0 (masked classes, where ``a`` is NaN).
  """
  log_beta, log_1m_beta = np.log(beta), np.log1p(-beta)
  a = log_p_t - log_p_s
  ratio_t = -jnp.logaddexp(log_beta, log_1m_beta - jnp.where(p_t > 0, a, 0.0))
  ratio_s = -jnp.logaddexp(log_1m_beta, log_beta + jnp.where(p_s > 0, a, 0.0))
  return ratio_t, ratio_s


def _skew_log_ratio(log_p: Array, log_q: Array, p: Array, lam: float) -> Array:
  """``log(p / m)`` for ``m = lam p + (1 - lam) q`` (DistiLLM's skew); 0 where ``p`` is 0."""
  log_m = jnp.logaddexp(np.log(lam) + log_p, np.log1p(-lam) + log_q)
  return jnp.where(p > 0, log_p - log_m, 0.0)


def block_row_terms(kind: str, beta: float, s: Array, t: Array | None,
                    lse_s: Array, lse_t: Array | None,
                    hit: Array | None) -> tuple[Array, Array]:
  """Per-row sums over this block's classes: ``(value part, statistic part)``, ``[R]``.

  Summed over all blocks/shards they give the row's divergence (without the
  ``T**2`` factor) and the statistic ``block_student_grad`` needs: the value
  itself for the KLs, ``KL(P_s || M)`` for the JSD, ``sum sign(p_s - p_t)
  p_s`` for the TV, ``sum p_s p_t / m`` for the skew KL, ``sum p_s (f - lam
  e^f)`` with ``f = log(p_s / m)`` for the skew reverse KL, the label's logit
  for the cross-entropy (whose value is ``lse_s - statistic``).
  """
  if kind == 'cross_entropy':
    picked = jnp.sum(jnp.where(hit, s, 0.0), axis=-1)
    return picked, picked
  log_p_s, log_p_t = s - lse_s, t - lse_t
  p_s, p_t = jnp.exp(log_p_s), jnp.exp(log_p_t)
  if kind == 'kl':
    value = logits_lib._kl(p_t, log_p_t, log_p_s)  # pylint: disable=protected-access
    return value, value
  if kind == 'reverse_kl':
    value = logits_lib._kl(p_s, log_p_s, log_p_t)  # pylint: disable=protected-access
    return value, value
  if kind == 'total_variation':
    return (0.5 * jnp.sum(jnp.abs(p_s - p_t), axis=-1),
            jnp.sum(jnp.sign(p_s - p_t) * p_s, axis=-1))
  if kind == 'skew_kl':
    ratio = _skew_log_ratio(log_p_t, log_p_s, p_t, beta)
    return jnp.sum(p_t * ratio, axis=-1), jnp.sum(p_s * jnp.exp(ratio), axis=-1)
  if kind == 'skew_reverse_kl':
    f = _skew_log_ratio(log_p_s, log_p_t, p_s, beta)
    return jnp.sum(p_s * f, axis=-1), jnp.sum(p_s * (f - beta * jnp.exp(f)), axis=-1)
  ratio_t, ratio_s = _jsd_log_ratios(log_p_s, log_p_t, p_s, p_t, beta)
  kl_t_m = jnp.sum(jnp.where(p_t > 0, p_t * ratio_t, 0.0), axis=-1)
  kl_s_m = jnp.sum(jnp.where(p_s > 0, p_s * ratio_s, 0.0), axis=-1)
  return kl_t_m / (1.0 - beta) + kl_s_m / beta, kl_s_m


def block_student_grad(kind: str, beta: float, s: Array, t: Array | None,
                       lse_s: Array, lse_t: Array | None, stat: Array,
                       hit: Array | None) -> Array:
  """d(row value) / d(tempered student logits) on this block, ``[R, Vb]``.

  ``stat`` ``[R, 1]`` is the row's total statistic (``block_row_terms``).
  kl: ``p_s - p_t``; reverse_kl: ``p_s (log p_s - log p_t - KL_r)``;
  generalized_jsd: ``p_s (log(p_s / m) - KL(P_s || M)) / beta``;
  total_variation: ``p_s (sign(p_s - p_t) - stat) / 2``; skew_kl: ``-(1 -
  lam) p_s (p_t / m - stat)``; skew_reverse_kl: ``p_s (f - lam e^f -
  stat)``; cross_entropy: ``p_s - onehot(label)``. Masked classes get 0.
  """
  log_p_s = s - lse_s
  p_s = jnp.exp(log_p_s)
  if kind == 'cross_entropy':
    return p_s - hit.astype(p_s.dtype)
  log_p_t = t - lse_t
  p_t = jnp.exp(log_p_t)
  if kind == 'kl':
    return p_s - p_t
  if kind == 'total_variation':
    return 0.5 * p_s * (jnp.sign(p_s - p_t) - stat)
  if kind == 'skew_kl':
    ratio = _skew_log_ratio(log_p_t, log_p_s, p_t, beta)
    return -(1.0 - beta) * p_s * (jnp.exp(ratio) - stat)
  if kind == 'reverse_kl':
    f = log_p_s - log_p_t
  elif kind == 'skew_reverse_kl':
    f = _skew_log_ratio(log_p_s, log_p_t, p_s, beta)
    f = f - beta * jnp.exp(f)
  else:
    _, f = _jsd_log_ratios(log_p_s, log_p_t, p_s, p_t, beta)
  on_s = p_s > 0
  grad = jnp.where(on_s, p_s * (jnp.where(on_s, f, 0.0) - stat), 0.0)
  return grad / beta if kind == 'generalized_jsd' else grad
