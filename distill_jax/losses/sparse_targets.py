"""KL against sparse teacher targets (an offline teacher-logit cache).

A cached teacher keeps ``k`` of its ``V`` classes per token
(``distill_jax.data.logit_cache``): ids ``[..., k]`` and the teacher's
log-probabilities at them ``[..., k]`` (top-k), or importance weights
``log(count / k)`` of ``k`` samples drawn from it (sampled-k, Gemma 3), plus
optionally the log of the remaining mass ``[...]`` (the tail). Padding
entries have log-probability ``-inf``; valid ids must be distinct per row.

``sparse_kl_divergence`` compares the student's full softmax with such a
target. Conventions are ``losses.logits``'s: per-example float32 output, the
``T**2`` factor, fp32 math, the targets never differentiated.
"""

import jax
import jax.numpy as jnp

from distill_jax.losses import logits as logits_lib
from distill_jax.registry import register

Array = jax.Array
ArrayLike = jax.typing.ArrayLike


def log_mass_outside(log_p: Array, ids: Array, valid: Array) -> Array:
  """Log of the probability mass outside the valid ``ids``, per row.

  Summed over the complement (not ``log(1 - sum p[ids])``), so it is exactly
  ``-inf`` when the ids cover every class and has no cancellation when they
  cover almost all the mass; its gradient is finite in both cases.

  Args:
    log_p: ``[..., V]`` log-probabilities.
    ids: ``[..., k]`` int class ids (repeats allowed).
    valid: ``[..., k]`` bool, False for padding entries (not covered).

  Returns:
    ``[...]`` float, ``-inf`` where nothing is outside.
  """
  vocab = log_p.shape[-1]
  rows = ids.reshape(-1, ids.shape[-1])
  hits = jnp.zeros((rows.shape[0], vocab), jnp.int32).at[
      jnp.arange(rows.shape[0])[:, None], rows].add(
          valid.reshape(rows.shape).astype(jnp.int32))
  outside = (hits == 0).reshape(log_p.shape)
  any_outside = jnp.any(outside, axis=-1)
  # Double where: rows with nothing outside take a finite dummy sum, whose
  # (NaN-free) gradient the outer where discards.
  masked = jnp.where(outside | ~any_outside[..., None], log_p, -jnp.inf)
  return jnp.where(any_outside, jax.nn.logsumexp(masked, axis=-1), -jnp.inf)


@register('losses', 'sparse_kl')
def sparse_kl_divergence(student_logits: ArrayLike, target_ids: ArrayLike,
                         target_logprobs: ArrayLike, *,
                         tail_logprob: ArrayLike | None = None,
                         temperature: ArrayLike = 1.0) -> Array:
  """``T**2 * KL(q || p_s)`` with ``q`` a sparse teacher target, per example.

  Two ways to treat the teacher mass outside the ``k`` stored classes:

  * **renormalized** (``tail_logprob=None``): ``q = softmax(target_logprobs /
    T)`` over the valid entries, and ``T**2 sum_i q_i (log q_i - log
    p_s[id_i])`` with ``p_s = softmax(student / T)`` over all ``V`` classes.
    This is ``>= 0`` (``KL(q || p_s / Z) - log Z`` with ``Z`` the student
    mass on the ids) and its student gradient is ``T (p_s - q)`` with ``q``
    scattered to the ids, i.e. ``kl_divergence``'s with the sparse target.
    Sampled-k targets (importance weights summing to 1) use this mode.
  * **tail bucket** (``tail_logprob`` given): a ``k + 1``-class distribution,
    the stored classes plus one bucket for everything else, for both models:
    teacher ``[target_logprobs, tail_logprob] / T`` softmax-ed (the tail
    tempered as one class, exact at ``T = 1``), student ``[log p_s[ids], log
    sum_{j not in ids} p_s[j]]`` (``log_mass_outside``), ``p_s`` at
    temperature ``T``. Exactly the full KL when ``k = V``.

  Args:
    student_logits: ``[..., V]`` student logits, any floating dtype.
    target_ids: ``[..., k]`` integer class ids in ``[0, V)``, distinct per
      row among valid entries.
    target_logprobs: ``[..., k]`` teacher log-probabilities (or log weights)
      at ``target_ids``; ``-inf`` marks padding.
    tail_logprob: optional ``[...]`` log of the teacher mass outside the ids
      (``-inf`` for none).
    temperature: ``T > 0``, scalar or broadcastable to ``[...]``.

  Returns:
    ``[...]`` float32, ``>= 0``.

  Raises:
    ValueError: shapes disagree, or a bad Python/NumPy temperature.
    TypeError: non-floating logits/log-probs or non-integer ids.
  """
  fn = 'sparse_kl_divergence'
  student = logits_lib._check_logits(fn, 'student_logits', student_logits)  # pylint: disable=protected-access
  target = logits_lib._check_logits(fn, 'target_logprobs', target_logprobs)  # pylint: disable=protected-access
  ids = jnp.asarray(target_ids)
  if not jnp.issubdtype(ids.dtype, jnp.integer):
    raise TypeError(f'{fn}: target_ids must be integer class ids [..., k]; '
                    f'got dtype {ids.dtype}.')
  if ids.shape != target.shape or ids.shape[:-1] != student.shape[:-1]:
    raise ValueError(
        f'{fn}: expected student_logits [..., V], target_ids and '
        f'target_logprobs [..., k] with the same [...]; got student_logits '
        f'{student.shape}, target_ids {ids.shape}, target_logprobs '
        f'{target.shape}.')
  if tail_logprob is not None:
    tail_logprob = jnp.asarray(tail_logprob)
    if (not jnp.issubdtype(tail_logprob.dtype, jnp.floating)
        or tail_logprob.shape != student.shape[:-1]):
      raise ValueError(f'{fn}: tail_logprob must be a float array of shape '
                       f'{student.shape[:-1]}; got {tail_logprob.dtype} '
                       f'{tail_logprob.shape}.')
  dtype = jnp.promote_types(student.dtype, jnp.float32)
  t = logits_lib._check_temperature(fn, temperature, student.shape, dtype)[..., None]  # pylint: disable=protected-access
  target = jax.lax.stop_gradient(target.astype(dtype))
  log_p_s = logits_lib._log_softmax(student.astype(dtype) / t, None)  # pylint: disable=protected-access
  valid = target > -jnp.inf
  log_p_ids = jnp.where(valid, jnp.take_along_axis(log_p_s, ids, axis=-1),
                        -jnp.inf)
  if tail_logprob is not None:
    tail = jax.lax.stop_gradient(tail_logprob.astype(dtype))[..., None]
    target = jnp.concatenate([target, tail], axis=-1)
    student_tail = log_mass_outside(log_p_s, ids, valid)[..., None]
    log_p_ids = jnp.concatenate([log_p_ids, student_tail], axis=-1)
  log_q = logits_lib._log_softmax(target / t, None)  # pylint: disable=protected-access
  kl = logits_lib._kl(jnp.exp(log_q), log_q, log_p_ids)  # pylint: disable=protected-access
  return t[..., 0]**2 * kl
