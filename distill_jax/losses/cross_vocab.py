"""Divergences between next-token distributions over two different vocabularies.

A teacher and a student with different tokenizers predict distributions over
different label sets, ``[N, V_t]`` and ``[N, V_s]``, once their positions are
aligned (``distill_jax.data.token_alignment``). Two kernels compare them:

* ``uld_distance``: Universal Logit Distillation (Boizard et al. 2024), the
  Wasserstein-1 distance under a uniform transport cost between the two
  distributions, which is the L1 distance between the probability vectors
  sorted in decreasing order, the shorter one padded with zeros::

      ULD(p_s, p_t) = sum_k |sort(p_s)_k - sort(p_t)_k|

  (``top_k``: the largest ``k`` entries exactly, the rest by their mass);

* ``hybrid_uld``: the same on the labels the two vocabularies do *not*
  share, plus a direct KL term on the ones they do (GOLD's hybrid loss): for
  matched pairs ``(i_t, i_s)``, ``sum p_t[i_t] (log p_t[i_t] - log p_s[i_s])``.

Rows may carry a log-scale ``[N]`` added to the log-probabilities (a span
merged from several tokens: the first token's distribution times the
probability of the realized rest, ``data.token_alignment``), so a row is a
sub-distribution ``scale * softmax(logits / T)``. The rows are processed in
chunks of ``chunk_rows`` under ``jax.checkpoint``: the sorted copies are
never formed for more than one chunk at a time, forward or backward.
Conventions are ``losses.logits``': float32 math, one value per row, the
teacher never differentiated.
"""

import jax
import jax.numpy as jnp

from distill_jax.registry import register

Array = jax.Array
ArrayLike = jax.typing.ArrayLike


def _rows_probs(logits: Array, log_scale: Array | None, temperature: float) -> Array:
  """``scale * softmax(logits / T)`` rows, float32 ``[n, V]``."""
  log_p = jax.nn.log_softmax(logits.astype(jnp.float32) / temperature, axis=-1)
  if log_scale is not None:
    log_p = log_p + log_scale.astype(jnp.float32)[:, None]
  return jnp.exp(log_p)


def _sorted_l1(p_student: Array, p_teacher: Array, top_k: int = 0) -> Array:
  """``sum_k |sort(p_s)_k - sort(p_t)_k|`` per row, the shorter row zero-padded.

  ``top_k > 0``: the ``top_k`` largest entries of each row compared exactly and
  the rest by their sums, ``|tail_s - tail_t|`` (a lower bound of the rest's
  term, equal to it when one tail dominates the other entry by entry).
  """
  width = max(p_student.shape[-1], p_teacher.shape[-1])
  k = min(top_k, width) if top_k > 0 else width
  def sort_pad(p):
    if k < p.shape[-1]:
      top = jax.lax.top_k(p, k)[0]
      return top, jnp.sum(p, axis=-1) - jnp.sum(top, axis=-1)
    top = -jnp.sort(-p, axis=-1)
    return jnp.pad(top, ((0, 0), (0, k - top.shape[-1]))), 0.0
  (top_s, tail_s), (top_t, tail_t) = sort_pad(p_student), sort_pad(p_teacher)
  return jnp.sum(jnp.abs(top_s - top_t), axis=-1) + jnp.abs(tail_s - tail_t)


def _chunked(row_fn, arrays: tuple[Array | None, ...], chunk_rows: int) -> Array:
  """``row_fn(*arrays)`` ``[N, ...]``, mapped over chunks of ``chunk_rows`` rows with
  ``jax.checkpoint`` (each chunk's intermediates recomputed in the backward)."""
  n = next(a for a in arrays if a is not None).shape[0]
  chunk = max(1, min(chunk_rows, n))
  padded = -(-n // chunk) * chunk
  def split(a):
    if a is None:
      return None
    a = jnp.pad(a, [(0, padded - n)] + [(0, 0)] * (a.ndim - 1))
    return a.reshape((padded // chunk, chunk) + a.shape[1:])
  values = jax.lax.map(jax.checkpoint(lambda xs: row_fn(*xs)),
                       tuple(split(a) for a in arrays))
  return values.reshape((padded,) + values.shape[2:])[:n]


def _over_rows(name: str, row_fn, student_logits: ArrayLike, teacher_logits: ArrayLike,
               student_log_scale: ArrayLike | None, teacher_log_scale: ArrayLike | None,
               chunk_rows: int) -> Array:
  """``row_fn(s, t, s_scale, t_scale)`` over the checked rows, in chunks; the
  teacher's logits and scales are not differentiated."""
  student_logits, teacher_logits = jnp.asarray(student_logits), jnp.asarray(teacher_logits)
  if student_logits.ndim != 2 or teacher_logits.ndim != 2:
    raise ValueError(f'{name} takes rows [N, V]: got student {student_logits.shape}, '
                     f'teacher {teacher_logits.shape}.')
  if student_logits.shape[0] != teacher_logits.shape[0]:
    raise ValueError(f'{name}: the student has {student_logits.shape[0]} rows and the '
                     f'teacher {teacher_logits.shape[0]}; align them first '
                     '(distill_jax.data.token_alignment).')
  scale = lambda x: None if x is None else jnp.asarray(x)
  teacher_log_scale = scale(teacher_log_scale)
  if teacher_log_scale is not None:
    teacher_log_scale = jax.lax.stop_gradient(teacher_log_scale)
  return _chunked(row_fn, (student_logits, jax.lax.stop_gradient(teacher_logits),
                           scale(student_log_scale), teacher_log_scale), chunk_rows)


@register('losses', 'uld')
def uld_distance(student_logits: ArrayLike, teacher_logits: ArrayLike, *,
                 student_log_scale: ArrayLike | None = None,
                 teacher_log_scale: ArrayLike | None = None,
                 temperature: float = 1.0, chunk_rows: int = 64, top_k: int = 0) -> Array:
  """ULD's sorted-probability L1 distance per row.

  Args:
    student_logits: ``[N, V_s]``.
    teacher_logits: ``[N, V_t]`` (not differentiated); ``V_t`` may differ.
    student_log_scale, teacher_log_scale: optional ``[N]`` log-factors of each
      row's probabilities (merged spans); None means 0.
    temperature: softmax temperature of both (``T > 0``).
    chunk_rows: rows per chunk.
    top_k: 0 for the exact distance (a full sort of every row); ``k > 0``
      compares the ``k`` largest entries of each row exactly and the rest by
      their total mass (``lax.top_k``: XLA:CPU sorts a 384 x 49,152 block in
      ~6 s, its top 1,024 in ~0.1 s).

  Returns:
    ``[N]`` float32, in ``[0, 2]`` for unscaled rows.
  """
  def rows(s, t, s_scale, t_scale):
    return _sorted_l1(_rows_probs(s, s_scale, temperature), _rows_probs(t, t_scale, temperature),
                      top_k)

  return _over_rows('uld_distance', rows, student_logits, teacher_logits, student_log_scale,
                    teacher_log_scale, chunk_rows)


@register('losses', 'hybrid_uld')
def hybrid_uld(student_logits: ArrayLike, teacher_logits: ArrayLike, *,
               matched_student_ids: ArrayLike, matched_teacher_ids: ArrayLike,
               student_log_scale: ArrayLike | None = None,
               teacher_log_scale: ArrayLike | None = None,
               temperature: float = 1.0, chunk_rows: int = 64,
               top_k: int = 0) -> tuple[Array, Array]:
  """GOLD's hybrid: KL on the shared labels, ULD on the rest, per row.

  Args:
    student_logits, teacher_logits, student_log_scale, teacher_log_scale,
      temperature, chunk_rows, top_k: as ``uld_distance``.
    matched_student_ids, matched_teacher_ids: ``[M]`` int, distinct, pairs of
      labels that are the same token in both vocabularies.

  Returns:
    ``(matched_kl, unmatched_uld)``, each ``[N]`` float32:
    ``sum_m p_t[t_m] (log p_t[t_m] - log p_s[s_m])`` over the pairs, and the
    sorted L1 distance between the rows with the matched labels zeroed.
  """
  s_ids = jnp.asarray(matched_student_ids, jnp.int32)
  t_ids = jnp.asarray(matched_teacher_ids, jnp.int32)
  if s_ids.shape != t_ids.shape or s_ids.ndim != 1:
    raise ValueError(f'hybrid_uld: matched ids must be two [M] arrays; got {s_ids.shape} '
                     f'and {t_ids.shape}.')
  s_keep = jnp.ones(jnp.shape(student_logits)[-1], jnp.float32).at[s_ids].set(0.0)
  t_keep = jnp.ones(jnp.shape(teacher_logits)[-1], jnp.float32).at[t_ids].set(0.0)

  def rows(s, t, s_scale, t_scale):
    p_s = _rows_probs(s, s_scale, temperature)
    p_t = _rows_probs(t, t_scale, temperature)
    ps_m, pt_m = p_s[:, s_ids], p_t[:, t_ids]
    tiny = jnp.finfo(jnp.float32).tiny
    kl = jnp.sum(jnp.where(pt_m > 0, pt_m * (jnp.log(jnp.maximum(pt_m, tiny)) -
                                             jnp.log(jnp.maximum(ps_m, tiny))), 0.0), -1)
    return jnp.stack([kl, _sorted_l1(p_s * s_keep, p_t * t_keep, top_k)], -1)

  both = _over_rows('hybrid_uld', rows, student_logits, teacher_logits, student_log_scale,
                    teacher_log_scale, chunk_rows)
  return both[:, 0], both[:, 1]


def span_rows(logits: ArrayLike, targets: ArrayLike, spans: ArrayLike, num_spans: int, *,
              temperature: float = 1.0) -> tuple[Array, Array, Array]:
  """Each aligned span's merged distribution, as a row and a log-scale.

  A span of tokens ``y_1 .. y_m`` (at consecutive target positions ``j_1 ..
  j_m``) is represented by the distribution at its first position times the
  probability of the realized rest (GOLD's merge)::

      row = logits[j_1],  log_scale = sum_{i > 1} log p(y_i | ...)  (at T)

  Args:
    logits: ``[B, T, V]`` next-token logits (position ``j`` predicts
      ``targets[:, j]``).
    targets: ``[B, T]`` int, the realized next tokens.
    spans: ``[B, T]`` int, the span index of each target (``-1``: in none),
      each span a contiguous run (``data.token_alignment.token_spans``).
    num_spans: ``G``, static, at least the largest span index + 1.
    temperature: softmax temperature of the realized log-probabilities.

  Returns:
    ``(rows [B, G, V], log_scale [B, G], valid [B, G] bool)``; invalid spans
    (indices no target has) have row 0 and scale 0.
  """
  logits, targets, spans = jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(spans)
  b, t = spans.shape
  previous = jnp.concatenate([jnp.full((b, 1), -1, spans.dtype), spans[:, :-1]], axis=1)
  inside = spans >= 0
  first = inside & (spans != previous)
  log_p = jax.nn.log_softmax(logits.astype(jnp.float32) / temperature, axis=-1)
  realized = jnp.take_along_axis(log_p, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
  rows_b = jnp.arange(b)[:, None]
  drop = lambda mask: jnp.where(mask, spans, num_spans)  # Out of range: dropped.
  first_position = jnp.zeros((b, num_spans), jnp.int32).at[rows_b, drop(first)].set(
      jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t)), mode='drop')
  valid = jnp.zeros((b, num_spans), bool).at[rows_b, drop(first)].set(True, mode='drop')
  log_scale = jnp.zeros((b, num_spans), jnp.float32).at[rows_b, drop(inside & ~first)].add(
      realized, mode='drop')
  rows = jnp.take_along_axis(logits, first_position[..., None], axis=1)
  return rows, log_scale, valid
