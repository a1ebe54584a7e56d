"""Large-vocabulary distillation from hidden states, without the ``[N, V]`` logits.

At LLM vocabulary sizes the logits dominate memory: one float32 ``[8192,
262144]`` tensor is 8.6 GB per model, before its gradient. The kernels here
take each model's last hidden states and output head instead of logits::

  student_hidden [..., Ds] @ student_head [Ds, V] -> student logits [..., V]
  teacher_hidden [..., Dt] @ teacher_head [Dt, V] -> teacher logits [..., V]

and never materialize more than ``[chunk_size, V]`` logits of either model:

* **Row chunks.** The ``N = prod(...)`` rows are processed ``chunk_size`` at a
  time (``lax.map``/``lax.scan``); per chunk both models' logits are computed,
  their log-sum-exp taken, and the per-row divergence summed over the
  vocabulary.
* **custom_vjp, gradients in the forward pass** (Liger-Kernel's
  fused-linear scheme). A call that is not differentiated computes only the
  values. Under ``jax.grad``, the forward rule also forms, in the same chunk
  pass, the gradient w.r.t. the chunk's student logits analytically (``T *
  (p_s - p_t)`` for the forward KL) and contracts it at once with the head
  (``d student_hidden [C, Ds]``) and the hidden states (``d student_head
  [Ds, V]``, accumulated in float32 with the rows weighted by
  ``row_weights``): 4 matmuls, as many as the naive forward+backward. The
  backward rule scales ``d student_hidden`` row by row by the cotangent and
  ``d student_head`` by one scalar when the cotangent is proportional to
  ``row_weights`` (a sum, a mean or a masked mean of the rows); for any other
  cotangent it recomputes each chunk's logits from five stored numbers per
  row (both log-sum-exps, as a shift and the rest, and one row statistic)
  and contracts again (``lax.cond``; only one branch runs). Temp memory:
  ``O(chunk_size * V + Ds * V)`` instead of ``O(N * V)``.
* **Vocabulary shards.** With ``vocab_axis`` set (inside ``jax.shard_map``,
  see ``vocab_sharded``) each device holds ``[D, V / n]`` of the heads; the
  per-chunk log-sum-exp is combined with ``lax.pmax``/``lax.psum`` over the
  axis (first pass), then the per-class terms are summed locally and
  ``psum``-ed (second pass). Hidden-state gradients are summed over the vocab
  shards by JAX itself (the inputs are ``pcast`` to varying first).
* **Soft-capping.** ``student_softcap`` / ``teacher_softcap`` cap each
  model's logits at ``c tanh(z / c)`` before the temperature (Gemma 2's
  ``final_logit_softcapping``), inside the chunk pass; the student's logit
  gradient gets the cap's derivative ``1 - tanh**2``.
* **Train steps.** ``LinearLogits`` is a model's logits as ``(hidden, head,
  soft-cap)``, what an LM train step hands the token methods instead of
  ``[B, T, V]`` logits; ``on_linear_logits`` runs a kernel on them
  (``vocab_sharded`` when they carry a mesh).
* **Implementations.** ``implementation='xla'`` runs the chunk math as plain
  ``jnp``; ``'pallas'`` runs it as Pallas kernels blocked over the vocabulary
  (``distill_jax.losses.pallas_kl``; interpret mode on CPU, for tests).
  ``None`` is XLA on every backend: Pallas is opt-in until it has run on an
  accelerator (it has only run in interpret mode). The matmuls are XLA's in
  both; the per-block math of both is ``distill_jax.losses.vocab_blocks``.

Conventions are ``distill_jax.losses.logits``'s (``kl_divergence`` etc.): one
float32 value per row ``[...]`` (the caller reduces), the ``T**2`` factor on
the divergences, the teacher never differentiated (its hidden states and head
get exactly zero gradient), ``where`` a boolean class mask (here over the
vocabulary only, ``[V]``, e.g. to drop padded head columns). The math is
float32: logits are ``dot(h, W, preferred_element_type=float32)``, so bf16
inputs cost bf16 memory; the returned gradients are in the inputs' dtypes,
the head gradient is accumulated in float32. ``temperature`` (and ``beta``)
are Python numbers here (no per-row or learned temperature; use
``losses.logits`` on materialized logits for those). The values and the
gradients w.r.t. the student's hidden states and head equal those of
``losses.kl_divergence(h_s @ W_s, h_t @ W_t, ...)`` to float32 round-off.
"""

import dataclasses
import functools
import numbers
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec as P

from distill_jax.losses import vocab_blocks
from distill_jax.registry import register

Array = jax.Array
ArrayLike = jax.typing.ArrayLike

IMPLEMENTATIONS = ('xla', 'pallas')


class _Spec(NamedTuple):
  """Static description of one fused loss (hashable: a ``custom_vjp`` nondiff arg)."""
  kind: str  # a vocab_blocks kind: 'kl', 'generalized_jsd', 'cross_entropy', ...
  beta: float  # generalized_jsd's beta or the skew KLs' lam, strictly in (0, 1)
  temperature: float
  softcaps: tuple[float, float]  # (student, teacher) logit soft-caps; 0 = none
  chunk_size: int
  vocab_axis: str | None
  implementation: str  # 'xla' or 'pallas'


# ---------------------------------------------------------------------------
# Chunk operations: XLA versions (the Pallas ones live in pallas_kl.py); the
# block math of both is vocab_blocks.py.
# ---------------------------------------------------------------------------


def _hits(labels: Array | None, col0: Array, width: int) -> Array | None:
  """One-hot ``[R, width]`` of ``labels`` ``[R]`` among columns ``col0 + [0, width)``."""
  if labels is None:
    return None
  return (col0 + jnp.arange(width))[None, :] == labels[:, None]


class _XlaOps:
  """Chunk math as plain ``jnp`` on a whole ``[C, V_local]`` chunk."""

  @staticmethod
  def lse_parts(z):
    return vocab_blocks.block_lse_parts(z)

  @staticmethod
  def row_terms(spec, s, t, lse_s, lse_t, labels, col0):
    hit = _hits(labels, col0, s.shape[-1])
    return vocab_blocks.block_row_terms(spec.kind, spec.beta, s, t, lse_s,
                                        lse_t, hit)

  @staticmethod
  def student_grad(spec, s, t, lse_s, lse_t, stat, labels, col0):
    hit = _hits(labels, col0, s.shape[-1])
    return vocab_blocks.block_student_grad(spec.kind, spec.beta, s, t, lse_s,
                                           lse_t, stat[:, None], hit)


def _ops(implementation: str):
  if implementation == 'pallas':
    from distill_jax.losses import pallas_kl  # pylint: disable=g-import-not-at-top
    return pallas_kl
  return _XlaOps


# ---------------------------------------------------------------------------
# The chunked custom_vjp.
# ---------------------------------------------------------------------------


def _finite_or_zero(x: Array) -> Array:
  return jnp.where(jnp.isfinite(x), x, 0.0)


def _allsum(x: Array, axis: str | None) -> Array:
  return x if axis is None else jax.lax.psum(x, axis)


def _combine_lse(parts: tuple[Array, Array],
                 axis: str | None) -> tuple[Array, Array]:
  """Global ``(shift, log-sum-exp - shift)`` ``[R, 1]`` from local ``(max, sum-exp)`` parts.

  The shift is the global max (0 for an empty row). Callers subtract it from
  the logits before anything else, so that ``log p = (z - shift) -
  log_total`` keeps float32 precision in the log-probabilities (``z -
  (shift + log_total)`` would lose the low bits of a large shift).
  """
  m, l = parts
  big = m if axis is None else jax.lax.pmax(m, axis)
  big = _finite_or_zero(big)
  total = _allsum(vocab_blocks.merge_lse_parts(m, l, big), axis)
  return big, jnp.log(jnp.where(total > 0, total, 1.0))


def softcap(logits: Array, cap: float) -> Array:
  """``cap * tanh(logits / cap)`` (Gemma 2's ``final_logit_softcapping``); ``cap = 0``: unchanged."""
  return cap * jnp.tanh(logits / cap) if cap else logits


def _tempered_logits(h: Array, w: Array, temperature: float, cap: float,
                     where: Array | None) -> Array:
  """``softcap(dot(h, w), cap) / T`` in float32, masked classes ``-inf``:
  ``[C, D] x [D, V] -> [C, V]``."""
  z = softcap(jnp.dot(h, w, preferred_element_type=jnp.float32), cap) / temperature
  return z if where is None else jnp.where(where, z, -jnp.inf)


def _col0(spec: _Spec, width: int) -> Array:
  """Global index of this device's first vocabulary column."""
  if spec.vocab_axis is None:
    return jnp.zeros((), jnp.int32)
  return jax.lax.axis_index(spec.vocab_axis) * width


def _scale(spec: _Spec) -> float:
  """Value factor ``T**2`` (``T`` for the total variation, 1 for the
  cross-entropy); the logit gradient gets it divided by ``T``."""
  if spec.kind == 'cross_entropy':
    return 1.0
  return spec.temperature if spec.kind == 'total_variation' else spec.temperature**2


def _chunk_logits(spec, h_s, w_s, h_t, w_t, where):
  s = _tempered_logits(h_s, w_s, spec.temperature, spec.softcaps[0], where)
  t = (None if spec.kind == 'cross_entropy' else
       _tempered_logits(h_t, w_t, spec.temperature, spec.softcaps[1], where))
  return s, t


def _chunk_forward(spec, h_s, w_s, h_t, w_t, labels, where):
  """One row chunk: its values ``[C]`` and its row statistics.

  Returns ``(value, row_stats, logits)``: ``value`` ``[C]``; ``row_stats =
  (stat, shift_s, lse_s, shift_t, lse_t)``, each ``[C]``, with ``lse_*`` the
  log-sum-exp of the logits minus their ``shift_*`` and ``stat`` the row
  statistic of ``vocab_blocks.block_row_terms``; ``logits = (s, t)`` the shifted tempered
  logits ``[C, V]`` (``t`` None for the cross-entropy), for ``_logit_grad``.
  """
  ops = _ops(spec.implementation)
  s, t = _chunk_logits(spec, h_s, w_s, h_t, w_t, where)
  shift_s, lse_s = _combine_lse(ops.lse_parts(s), spec.vocab_axis)
  s = s - shift_s
  if t is None:
    shift_t, lse_t = shift_s, lse_s
  else:
    shift_t, lse_t = _combine_lse(ops.lse_parts(t), spec.vocab_axis)
    t = t - shift_t
  col0 = _col0(spec, s.shape[-1])
  value, stat = ops.row_terms(spec, s, t, lse_s, lse_t, labels, col0)
  value = _allsum(value, spec.vocab_axis)
  stat = _allsum(stat, spec.vocab_axis)
  if spec.kind == 'cross_entropy':
    # lse(z) - z[label], both relative to the shift.
    value = lse_s[:, 0] - value
  row_stats = (stat, shift_s[:, 0], lse_s[:, 0], shift_t[:, 0], lse_t[:, 0])
  return _scale(spec) * value, row_stats, (s, t)


def _logit_grad(spec, s, t, labels, row_stats):
  """d(row value) / d(raw student logits) of one chunk, ``[C, V]`` float32.

  ``s, t`` are the shifted tempered logits and ``row_stats`` the statistics
  of ``_chunk_forward``; the gradient w.r.t. the tempered logits is scaled by
  ``T**2 / T`` (the value factor and the temperature's chain rule) and, with
  a soft-cap, by its derivative ``1 - tanh**2``.
  """
  stat, shift_s, lse_s, _, lse_t = (x[:, None] for x in row_stats)
  grad = _ops(spec.implementation).student_grad(
      spec, s, t, lse_s, lse_t, stat[:, 0], labels, _col0(spec, s.shape[-1]))
  grad = grad * (_scale(spec) / spec.temperature)
  cap = spec.softcaps[0]
  if cap:
    finite = jnp.isfinite(s)
    capped = jnp.where(finite, (s + shift_s) * spec.temperature, 0.0)
    grad = jnp.where(finite, grad * (1.0 - (capped / cap)**2), 0.0)
  return grad


def _chunked(x: Array | None, chunk: int) -> Array | None:
  return None if x is None else x.reshape(-1, chunk, *x.shape[1:])


def _weighted_head_grad(h_s: Array, grad: Array, weights: Array) -> Array:
  """``(diag(weights) h_s)^T grad``: ``[C, Ds], [C, V], [C] -> [Ds, V]`` float32.

  The weights scale the small ``h_s`` (in its dtype), not ``grad``.
  """
  scaled = (h_s.astype(jnp.float32) * weights[:, None]).astype(h_s.dtype)
  return jnp.dot(scaled.T, grad, preferred_element_type=jnp.float32)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _fused(spec, h_s, w_s, h_t, w_t, labels, where, row_weights):
  """Per-row values ``[N]`` (``N`` a multiple of the chunk size); loss only."""
  del row_weights  # Used by the backward pass only.
  value = jax.lax.map(
      lambda xs: _chunk_forward(spec, xs[0], w_s, xs[1], w_t, xs[2], where)[0],
      (_chunked(h_s, spec.chunk_size), _chunked(h_t, spec.chunk_size),
       _chunked(labels, spec.chunk_size)))
  return value.reshape(-1)


def _fused_fwd(spec, h_s, w_s, h_t, w_t, labels, where, row_weights):
  """Values and, in the same chunk pass, the student's gradients.

  Per chunk: both logits (2 matmuls), the divergence, the gradient ``G``
  w.r.t. the student logits, ``d hidden = G W_s^T`` (per row, so any
  cotangent scales it exactly) and ``d head += h_s^T diag(row_weights) G``
  (exact for cotangents proportional to ``row_weights``) -- 4 matmuls, as
  many as the naive forward+backward.
  """

  def step(d_head, xs):
    h_s_c, h_t_c, labels_c, weights_c = xs
    value, row_stats, (s, t) = _chunk_forward(spec, h_s_c, w_s, h_t_c, w_t,
                                              labels_c, where)
    grad = _logit_grad(spec, s, t, labels_c, row_stats).astype(w_s.dtype)
    d_hidden = jnp.dot(grad, w_s.T, preferred_element_type=jnp.float32)
    d_head = d_head + _weighted_head_grad(h_s_c, grad, weights_c)
    return d_head, (value, d_hidden, row_stats)

  xs = jax.tree.map(lambda x: _chunked(x, spec.chunk_size),
                    (h_s, h_t, labels, row_weights))
  d_head, (value, d_hidden, row_stats) = jax.lax.scan(
      step, jnp.zeros_like(w_s, jnp.float32), xs)
  residuals = (h_s, w_s, h_t, w_t, labels, where, row_weights,
               jax.tree.map(lambda x: x.reshape(-1), row_stats),
               d_hidden.reshape(h_s.shape), d_head)
  return value.reshape(-1), residuals


def _recomputed_head_grad(spec, h_s, w_s, h_t, w_t, labels, where, row_stats,
                          cotangent):
  """``h_s^T diag(cotangent) G`` by a second chunk pass (2-3 matmuls a chunk)."""

  def step(d_head, xs):
    h_s_c, h_t_c, labels_c, stats_c, ct_c = xs
    _, shift_s, _, shift_t, _ = (x[:, None] for x in stats_c)
    s, t = _chunk_logits(spec, h_s_c, w_s, h_t_c, w_t, where)
    grad = _logit_grad(spec, s - shift_s, None if t is None else t - shift_t,
                       labels_c, stats_c).astype(w_s.dtype)
    return d_head + _weighted_head_grad(h_s_c, grad, ct_c), None

  xs = jax.tree.map(lambda x: _chunked(x, spec.chunk_size),
                    (h_s, h_t, labels, row_stats, cotangent))
  return jax.lax.scan(step, jnp.zeros_like(w_s, jnp.float32), xs)[0]


def _proportionality(cotangent: Array, weights: Array) -> tuple[Array, Array]:
  """``(c, ok)``: ``ok`` iff ``cotangent == c * weights`` (to 1e-6 relative).

  ``c`` is read at the largest weight, so a mean (weights 1, cotangent
  ``1/N``) or a masked mean (weights = mask, cotangent = ``mask / count``)
  passes exactly.
  """
  anchor = jnp.argmax(jnp.abs(weights))
  w_anchor = weights[anchor]
  c = jnp.where(w_anchor != 0, cotangent[anchor] / w_anchor, 0.0)
  ok = jnp.all(jnp.abs(cotangent - c * weights) <= 1e-6 * jnp.abs(cotangent))
  return c, ok


def _fused_bwd(spec, residuals, cotangent):
  """Scales the forward's gradients by the cotangent ``[N]``.

  ``d hidden`` row by row; ``d head`` by the scalar ``c`` when the
  cotangent is ``c * row_weights`` (no matmul), else by a recomputing chunk
  pass (``lax.cond``: only one branch runs).
  """
  (h_s, w_s, h_t, w_t, labels, where, row_weights, row_stats, d_hidden,
   d_head) = residuals
  cotangent = cotangent.astype(jnp.float32)
  d_hidden = (d_hidden * cotangent[:, None]).astype(h_s.dtype)
  c, proportional = _proportionality(cotangent, row_weights)
  d_head = jax.lax.cond(
      proportional, lambda: c * d_head,
      lambda: _recomputed_head_grad(spec, h_s, w_s, h_t, w_t, labels, where,
                                    row_stats, cotangent))
  # The teacher (already stop_gradient-ed), labels, masks and weights get no
  # gradient.
  return (d_hidden, d_head.astype(w_s.dtype), None, None, None, None, None)


_fused.defvjp(_fused_fwd, _fused_bwd)


# ---------------------------------------------------------------------------
# Input checks and the public kernels.
# ---------------------------------------------------------------------------


def _check_float(fn: str, name: str, x: Any, ndim: int | None,
                 layout: str) -> Array:
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(f'{fn}: {name} must be a floating-point array {layout}; '
                    f'got dtype {x.dtype} with shape {x.shape}.')
  if (ndim is not None and x.ndim != ndim) or x.ndim < 1:
    raise ValueError(f'{fn}: {name} must have shape {layout}; got shape '
                     f'{x.shape}.')
  return x


def _check_positive_int(fn: str, name: str, value: Any) -> int:
  if (isinstance(value, bool) or not isinstance(value, numbers.Integral)
      or value <= 0):
    raise ValueError(f'{fn}: {name} must be a positive integer; got {value!r}.')
  return int(value)


def _check_host_number(fn: str, name: str, value: Any, *, low: float,
                       high: float, open_low: bool) -> float:
  ok = (isinstance(value, numbers.Real) and not isinstance(value, bool)
        and np.isfinite(value)
        and (value > low if open_low else value >= low) and value <= high)
  if not ok:
    interval = f'{"(" if open_low else "["}{low}, {high}]'
    raise ValueError(f'{fn}: {name} must be a Python number in {interval} '
                     f'(a fixed hyper-parameter of the fused kernel); got '
                     f'{value!r}.')
  return float(value)


MIN_CHUNK, MAX_CHUNK = 64, 1024


def default_chunk_size(rows: int) -> int:
  """Rows per chunk when the caller gives none: ``rows / 16`` rounded down to a
  power of two, within ``[64, 1024]`` (and at most ``rows``).

  The chunk's working set (student and teacher ``[chunk, V]`` float32 logits
  and their softmax terms) is then about ``chunk / rows`` of the
  materialized loss's ``[rows, V]`` ones: XLA's ``memory_analysis()`` temp
  bytes of forward + backward at N=4096, V=131072 are 0.050 (D=256) and
  0.051 (D=512) of the naive ``kl_divergence(h_s @ W_s, h_t @ W_t)``'s,
  against 0.20 with a fixed 1024 (``tests/losses/test_large_vocab.py``). The
  upper bound keeps long-sequence batches' chunks large enough for the
  matmuls; the lower bound keeps short ones from looping over tiny chunks.
  """
  target = 2 ** int(np.log2(max(rows // 16, 1)))
  return max(1, min(rows, MAX_CHUNK, max(MIN_CHUNK, target)))


def _resolve_implementation(fn: str, implementation: str | None) -> str:
  if implementation is None:
    return 'xla'  # Pallas is opt-in (module docstring).
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f'{fn}: implementation must be one of {IMPLEMENTATIONS} '
                     f'or None (automatic); got {implementation!r}.')
  return implementation


def _pad_rows(x: Array | None, rows: int) -> Array | None:
  if x is None or x.shape[0] == rows:
    return x
  return jnp.pad(x, [(0, rows - x.shape[0])] + [(0, 0)] * (x.ndim - 1))


def _common_vma(arrays: Sequence[Array | None]) -> list[Array | None]:
  """``pcast``s every array to vary over the union of their manual mesh axes.

  Inside ``shard_map`` the hidden states vary over the batch axes and the
  heads over the vocabulary axis; making all of them vary over both lets the
  custom_vjp return per-device partial gradients, and JAX transposes the
  ``pcast`` into the ``psum`` that completes them (hidden-state gradients
  summed over vocabulary shards, head gradients over batch shards).
  """
  varying = lambda x: set(jax.typeof(x).manual_axis_type.varying)
  axes = set()
  for x in arrays:
    if x is not None:
      axes |= varying(x)
  out = []
  for x in arrays:
    if x is not None:
      missing = tuple(sorted(axes - varying(x)))
      if missing:
        x = jax.lax.pcast(x, missing, to='varying')
    out.append(x)
  return out


def _run(fn: str, spec_kwargs: dict[str, Any], student_hidden, student_head,
         teacher_hidden, teacher_head, labels, where, row_weights, *,
         chunk_size: int | None, pad: bool, vocab_axis: str | None,
         implementation: str | None) -> Array:
  """Checks shapes and dtypes, pads/flattens rows, runs ``_fused``."""
  kind = spec_kwargs['kind']
  h_s = _check_float(fn, 'student_hidden', student_hidden, None, '[..., Ds]')
  w_s = _check_float(fn, 'student_head', student_head, 2, '[Ds, V]')
  if h_s.shape[-1] != w_s.shape[0]:
    raise ValueError(
        f'{fn}: student_hidden [..., Ds] and student_head [Ds, V] disagree on '
        f'Ds: student_hidden {h_s.shape}, student_head {w_s.shape}.')
  batch_shape = h_s.shape[:-1]
  vocab = w_s.shape[1]
  h_t = w_t = None
  if kind != 'cross_entropy':
    h_t = _check_float(fn, 'teacher_hidden', teacher_hidden, None, '[..., Dt]')
    w_t = _check_float(fn, 'teacher_head', teacher_head, 2, '[Dt, V]')
    if h_t.shape[-1] != w_t.shape[0]:
      raise ValueError(
          f'{fn}: teacher_hidden [..., Dt] and teacher_head [Dt, V] disagree on '
          f'Dt: teacher_hidden {h_t.shape}, teacher_head {w_t.shape}.')
    if h_t.shape[:-1] != batch_shape:
      raise ValueError(
          f'{fn}: student_hidden and teacher_hidden must have the same rows '
          f'[...]; got student_hidden {h_s.shape} and teacher_hidden '
          f'{h_t.shape}.')
    if w_t.shape[1] != vocab:
      raise ValueError(
          f'{fn}: student_head [Ds, V] and teacher_head [Dt, V] must have the '
          f'same vocabulary size V; got student_head {w_s.shape} and '
          f'teacher_head {w_t.shape}.')
    h_t, w_t = jax.lax.stop_gradient(h_t), jax.lax.stop_gradient(w_t)
  if labels is not None:
    labels = jnp.asarray(labels)
    if not jnp.issubdtype(labels.dtype, jnp.integer):
      raise TypeError(f'{fn}: labels must be integer class ids [...]; got '
                      f'dtype {labels.dtype}.')
    if labels.shape != batch_shape:
      raise ValueError(f'{fn}: labels must have the rows shape {batch_shape} of '
                       f'hidden {h_s.shape}; got shape {labels.shape}.')
    labels = labels.reshape(-1).astype(jnp.int32)
  if row_weights is None:
    row_weights = jnp.ones(batch_shape, jnp.float32)
  row_weights = jnp.asarray(row_weights)
  if (not jnp.issubdtype(row_weights.dtype, jnp.floating)
      or row_weights.shape != batch_shape):
    raise ValueError(
        f'{fn}: row_weights must be a float array with the rows shape '
        f'{batch_shape} of hidden {h_s.shape}; got {row_weights.dtype} '
        f'{row_weights.shape}.')
  if where is not None:
    where = jnp.asarray(where)
    if where.dtype != jnp.bool_ or where.shape != (vocab,):
      raise ValueError(
          f'{fn}: where must be a boolean vocabulary mask of shape [V] = '
          f'({vocab},) (this device\'s shard when vocab_axis is set); got '
          f'{where.dtype} {where.shape}.')
  rows = int(np.prod(batch_shape))
  if chunk_size is None:
    chunk_size, pad = default_chunk_size(rows), True
  chunk_size = _check_positive_int(fn, 'chunk_size', chunk_size)
  chunk_size = min(chunk_size, max(rows, 1))
  padded = -(-rows // chunk_size) * chunk_size
  if padded != rows and not pad:
    raise ValueError(
        f'{fn}: chunk_size={chunk_size} does not divide the {rows} rows '
        f'(hidden {h_s.shape}); pass pad=True to pad the rows to {padded}, or '
        f'use a chunk_size that divides {rows}.')
  spec = _Spec(chunk_size=chunk_size, vocab_axis=vocab_axis,
               implementation=_resolve_implementation(fn, implementation),
               **spec_kwargs)
  h_s = _pad_rows(h_s.reshape(rows, -1), padded)
  if h_t is not None:
    h_t = _pad_rows(h_t.reshape(rows, -1), padded)
  labels = _pad_rows(labels, padded)
  # Padding rows get weight 0, as their cotangent will be.
  row_weights = _pad_rows(row_weights.reshape(-1).astype(jnp.float32), padded)
  h_s, w_s, h_t, w_t = _common_vma([h_s, w_s, h_t, w_t])
  value = _fused(spec, h_s, w_s, h_t, w_t, labels, where,
                 jax.lax.stop_gradient(row_weights))
  return value[:rows].reshape(batch_shape)


_COMMON_ARGS_DOC = """
    temperature: softmax temperature ``T > 0`` of both models (Python number).
    student_softcap, teacher_softcap: each model's logit soft-cap ``c > 0``
      (``c tanh(z / c)`` before the temperature, Gemma 2's
      ``final_logit_softcapping``), or None for none.
    where: optional boolean vocabulary mask ``[V]`` (the local ``[V / n]``
      shard under ``vocab_axis``); masked classes are dropped from both
      distributions.
    chunk_size: rows per chunk (at most the number of rows); temp memory is
      ``O(chunk_size * V)``. None (default): ``default_chunk_size(rows)``, the
      rows padded to a multiple of it.
    pad: pad the rows to a multiple of an explicit ``chunk_size`` (else it
      must divide them).
    vocab_axis: mesh axis the heads' ``V`` is split over; set only inside
      ``jax.shard_map`` (``vocab_sharded`` does it for you).
    implementation: ``'xla'``, ``'pallas'`` (opt-in) or None (XLA).
    row_weights: optional float ``[...]``, the weights the caller will reduce
      the rows with, up to one scalar factor (e.g. the loss mask); default
      all ones (a sum or mean). Speed only: when the cotangent is ``c *
      row_weights`` the head gradient comes from the forward pass for free,
      otherwise the backward recomputes it (values and gradients are the
      same either way).
"""


def _softcap(fn: str, name: str, value: float | None) -> float:
  if value is None:
    return 0.0
  return _check_host_number(fn, name, value, low=0.0, high=np.inf, open_low=True)


def _kl_family(kind: str, fn: str, student_hidden, student_head,
               teacher_hidden, teacher_head, *, beta: float, temperature,
               student_softcap, teacher_softcap, where, chunk_size, pad,
               vocab_axis, implementation, row_weights) -> Array:
  temperature = _check_host_number(fn, 'temperature', temperature, low=0.0,
                                   high=np.inf, open_low=True)
  softcaps = (_softcap(fn, 'student_softcap', student_softcap),
              _softcap(fn, 'teacher_softcap', teacher_softcap))
  return _run(fn, dict(kind=kind, beta=beta, temperature=temperature, softcaps=softcaps),
              student_hidden, student_head, teacher_hidden, teacher_head,
              None, where, row_weights, chunk_size=chunk_size, pad=pad,
              vocab_axis=vocab_axis, implementation=implementation)


@register('losses', 'fused_linear_kl')
def fused_linear_kl(student_hidden: ArrayLike, student_head: ArrayLike,
                    teacher_hidden: ArrayLike, teacher_head: ArrayLike, *,
                    temperature: float = 1.0, student_softcap: float | None = None,
                    teacher_softcap: float | None = None, where: ArrayLike | None = None,
                    chunk_size: int | None = None, pad: bool = False,
                    vocab_axis: str | None = None,
                    implementation: str | None = None,
                    row_weights: ArrayLike | None = None) -> Array:
  """Forward KL from hidden states: ``kl_divergence(h_s @ W_s, h_t @ W_t)``.

  ``T**2 * KL(softmax(teacher/T) || softmax(student/T))`` per row, computed
  chunk by chunk (module docstring); student gradient ``T (p_s - p_t)``
  w.r.t. its logits, the teacher gets none.

  Args:
    student_hidden: ``[..., Ds]`` student last hidden states, any float dtype.
    student_head: ``[Ds, V]`` student output projection.
    teacher_hidden: ``[..., Dt]`` teacher hidden states (same rows ``[...]``).
    teacher_head: ``[Dt, V]`` teacher output projection.
  {args}
  Returns:
    ``[...]`` float32, ``>= 0``.

  Raises:
    ValueError: shapes disagree, an explicit chunk_size does not divide the
      rows and ``pad`` is False, a bad temperature or ``where``.
    TypeError: non-floating hidden states or heads.
  """
  return _kl_family('kl', 'fused_linear_kl', student_hidden, student_head,
                    teacher_hidden, teacher_head, beta=0.0,
                    temperature=temperature, student_softcap=student_softcap,
                    teacher_softcap=teacher_softcap, where=where,
                    chunk_size=chunk_size, pad=pad, vocab_axis=vocab_axis,
                    implementation=implementation, row_weights=row_weights)


@register('losses', 'fused_linear_reverse_kl')
def fused_linear_reverse_kl(student_hidden: ArrayLike, student_head: ArrayLike,
                            teacher_hidden: ArrayLike, teacher_head: ArrayLike,
                            *, temperature: float = 1.0,
                            student_softcap: float | None = None,
                            teacher_softcap: float | None = None,
                            where: ArrayLike | None = None,
                            chunk_size: int | None = None, pad: bool = False,
                            vocab_axis: str | None = None,
                            implementation: str | None = None,
                            row_weights: ArrayLike | None = None) -> Array:
  """Reverse KL from hidden states: ``reverse_kl(h_s @ W_s, h_t @ W_t)``.

  ``T**2 * KL(softmax(student/T) || softmax(teacher/T))`` per row; student
  gradient ``T p_s (log p_s - log p_t - KL)`` w.r.t. its logits.

  Args:
    student_hidden: ``[..., Ds]``; student_head: ``[Ds, V]``;
    teacher_hidden: ``[..., Dt]``; teacher_head: ``[Dt, V]`` (frozen).
  {args}
  Returns:
    ``[...]`` float32, ``>= 0``.

  Raises:
    ValueError, TypeError: as ``fused_linear_kl``.
  """
  return _kl_family('reverse_kl', 'fused_linear_reverse_kl', student_hidden,
                    student_head, teacher_hidden, teacher_head, beta=1.0,
                    temperature=temperature, student_softcap=student_softcap,
                    teacher_softcap=teacher_softcap, where=where,
                    chunk_size=chunk_size, pad=pad, vocab_axis=vocab_axis,
                    implementation=implementation, row_weights=row_weights)


@register('losses', 'fused_linear_generalized_jsd')
def fused_linear_generalized_jsd(
    student_hidden: ArrayLike, student_head: ArrayLike,
    teacher_hidden: ArrayLike, teacher_head: ArrayLike, *, beta: float = 0.5,
    temperature: float = 1.0, student_softcap: float | None = None,
    teacher_softcap: float | None = None, where: ArrayLike | None = None,
    chunk_size: int | None = None, pad: bool = False, vocab_axis: str | None = None,
    implementation: str | None = None,
    row_weights: ArrayLike | None = None) -> Array:
  """GKD's generalized JSD from hidden states: ``generalized_jsd(h_s @ W_s, h_t @ W_t, beta=beta)``.

  Normalized as in ``losses.generalized_jsd``: ``T**2 JSD_beta / (beta (1 -
  beta))``, the forward KL at ``beta=0`` and the reverse KL at ``beta=1``.

  Args:
    student_hidden: ``[..., Ds]``; student_head: ``[Ds, V]``;
    teacher_hidden: ``[..., Dt]``; teacher_head: ``[Dt, V]`` (frozen).
    beta: teacher weight of the mixture, a Python number in ``[0, 1]``.
  {args}
  Returns:
    ``[...]`` float32, ``>= 0``.

  Raises:
    ValueError, TypeError: as ``fused_linear_kl``; beta outside ``[0, 1]``.
  """
  fn = 'fused_linear_generalized_jsd'
  beta = _check_host_number(fn, 'beta', beta, low=0.0, high=1.0,
                            open_low=False)
  kind = {0.0: 'kl', 1.0: 'reverse_kl'}.get(beta, 'generalized_jsd')
  return _kl_family(kind, fn, student_hidden, student_head, teacher_hidden,
                    teacher_head, beta=beta, temperature=temperature,
                    student_softcap=student_softcap,
                    teacher_softcap=teacher_softcap, where=where, chunk_size=chunk_size, pad=pad,
                    vocab_axis=vocab_axis, implementation=implementation,
                    row_weights=row_weights)


@register('losses', 'fused_linear_total_variation')
def fused_linear_total_variation(
    student_hidden: ArrayLike, student_head: ArrayLike, teacher_hidden: ArrayLike,
    teacher_head: ArrayLike, *, temperature: float = 1.0,
    student_softcap: float | None = None, teacher_softcap: float | None = None,
    where: ArrayLike | None = None, chunk_size: int | None = None, pad: bool = False,
    vocab_axis: str | None = None, implementation: str | None = None,
    row_weights: ArrayLike | None = None) -> Array:
  """Total variation from hidden states: ``total_variation(h_s @ W_s, h_t @ W_t)``.

  ``T * 0.5 * sum |p_t - p_s|`` per row (the factor is ``T``, as in
  ``losses.total_variation``); student gradient ``p_s (sign(p_s - p_t) -
  sum sign(p_s - p_t) p_s) / 2`` w.r.t. its tempered logits.

  Args:
    student_hidden: ``[..., Ds]``; student_head: ``[Ds, V]``;
    teacher_hidden: ``[..., Dt]``; teacher_head: ``[Dt, V]`` (frozen).
  {args}
  Returns:
    ``[...]`` float32 in ``[0, T]``.

  Raises:
    ValueError, TypeError: as ``fused_linear_kl``.
  """
  return _kl_family('total_variation', 'fused_linear_total_variation', student_hidden,
                    student_head, teacher_hidden, teacher_head, beta=0.0,
                    temperature=temperature, student_softcap=student_softcap,
                    teacher_softcap=teacher_softcap, where=where, chunk_size=chunk_size,
                    pad=pad, vocab_axis=vocab_axis, implementation=implementation,
                    row_weights=row_weights)


@register('losses', 'fused_linear_skew_kl')
def fused_linear_skew_kl(
    student_hidden: ArrayLike, student_head: ArrayLike, teacher_hidden: ArrayLike,
    teacher_head: ArrayLike, *, lam: float = 0.1, reverse: bool = False,
    temperature: float = 1.0, student_softcap: float | None = None,
    teacher_softcap: float | None = None, where: ArrayLike | None = None,
    chunk_size: int | None = None, pad: bool = False, vocab_axis: str | None = None,
    implementation: str | None = None, row_weights: ArrayLike | None = None) -> Array:
  """DistiLLM's skew KL from hidden states (``methods.token_skew_kl.skew_kl``).

  ``T**2 KL(p_t || lam p_t + (1 - lam) p_s)`` per row, or with ``reverse``
  ``T**2 KL(p_s || lam p_s + (1 - lam) p_t)``; ``lam = 0`` is the plain
  forward (reverse) KL.

  Args:
    student_hidden: ``[..., Ds]``; student_head: ``[Ds, V]``;
    teacher_hidden: ``[..., Dt]``; teacher_head: ``[Dt, V]`` (frozen).
    lam: the skew, a Python number in ``[0, 1)``.
    reverse: the skew reverse KL.
  {args}
  Returns:
    ``[...]`` float32, ``>= 0``.

  Raises:
    ValueError, TypeError: as ``fused_linear_kl``; lam outside ``[0, 1)``.
  """
  fn = 'fused_linear_skew_kl'
  lam = _check_host_number(fn, 'lam', lam, low=0.0, high=1.0, open_low=False)
  if lam == 1.0:
    raise ValueError(f'{fn}: lam must be < 1 (1 gives 0); got {lam}.')
  plain, skewed = ('reverse_kl', 'skew_reverse_kl') if reverse else ('kl', 'skew_kl')
  return _kl_family(skewed if lam else plain, fn, student_hidden, student_head,
                    teacher_hidden, teacher_head, beta=lam, temperature=temperature,
                    student_softcap=student_softcap, teacher_softcap=teacher_softcap,
                    where=where, chunk_size=chunk_size, pad=pad, vocab_axis=vocab_axis,
                    implementation=implementation, row_weights=row_weights)


@register('losses', 'fused_linear_cross_entropy')
def fused_linear_cross_entropy(hidden: ArrayLike, head: ArrayLike,
                               labels: ArrayLike, *, softcap: float | None = None,
                               where: ArrayLike | None = None,
                               chunk_size: int | None = None, pad: bool = False,
                               vocab_axis: str | None = None,
                               implementation: str | None = None,
                               row_weights: ArrayLike | None = None) -> Array:
  """Cross-entropy with integer labels from hidden states, ``lse(z) - z[label]``.

  Equals ``optax.losses.softmax_cross_entropy_with_integer_labels(hidden @
  head, labels)`` per row without the ``[N, V]`` logits (the hard-label term
  of KD on an LLM). Gradient ``p - onehot(label)`` w.r.t. the logits.

  Args:
    hidden: ``[..., D]`` last hidden states, any float dtype.
    head: ``[D, V]`` output projection.
    labels: ``[...]`` integer class ids in ``[0, V)`` (rows the caller masks
      out may hold any id; their value is meaningless but finite).
    softcap: logit soft-cap ``c > 0`` (``c tanh(z / c)``), or None for none.
    where: optional boolean vocabulary mask ``[V]`` (local shard under
      ``vocab_axis``).
    chunk_size, pad, vocab_axis, implementation, row_weights: as
      ``fused_linear_kl``.

  Returns:
    ``[...]`` float32, ``>= 0``.

  Raises:
    ValueError, TypeError: as ``fused_linear_kl``; non-integer labels or
      labels not shaped like the rows.
  """
  fn = 'fused_linear_cross_entropy'
  softcaps = (_softcap(fn, 'softcap', softcap), 0.0)
  return _run(fn, dict(kind='cross_entropy', beta=0.0, temperature=1.0, softcaps=softcaps), hidden,
              head, None, None, labels, where, row_weights,
              chunk_size=chunk_size, pad=pad,
              vocab_axis=vocab_axis, implementation=implementation)


_DIVERGENCES = (fused_linear_kl, fused_linear_reverse_kl, fused_linear_generalized_jsd,
                fused_linear_total_variation, fused_linear_skew_kl)
for _f in _DIVERGENCES:
  _f.__doc__ = _f.__doc__.replace('  {args}', _COMMON_ARGS_DOC.rstrip('\n')[1:])

# Argument roles of each kernel's positional arrays, for ``vocab_sharded``.
_ROLES = {**{f: ('hidden', 'head', 'hidden', 'head') for f in _DIVERGENCES},
          fused_linear_cross_entropy: ('hidden', 'head', 'rows')}


def vocab_sharded(fn: Callable[..., Array], mesh: Mesh, *,
                  batch_axes: Sequence[str] = ('data', 'fsdp'),
                  vocab_axis: str = 'tensor') -> Callable[..., Array]:
  """``fn`` (a kernel of this module) over global arrays with ``V`` split over ``vocab_axis``.

  The returned function takes the same arguments as ``fn`` (global shapes:
  hidden ``[B, ..., D]``, heads ``[D, V]``, labels and ``row_weights``
  ``[B, ...]``, ``where`` ``[V]``) and runs it in ``jax.shard_map`` over
  ``mesh``: the leading row axis split over ``batch_axes``, the heads' and
  ``where``'s vocabulary axis over ``vocab_axis``. Use it inside a jitted
  train step whose heads are sharded ``P(None, 'tensor')``; the result is
  ``[B, ...]`` split like the rows.

  Raises:
    ValueError: ``V`` or the batch is not divisible by the mesh axes (pad
      the head and mask the pad columns with ``where``).
  """
  if fn not in _ROLES:
    raise ValueError(f'vocab_sharded: fn must be one of '
                     f'{[f.__name__ for f in _ROLES]}; got {fn!r}.')
  roles = _ROLES[fn]
  batch_axes = tuple(batch_axes)
  specs = {'hidden': P(batch_axes), 'rows': P(batch_axes),
           'head': P(None, vocab_axis)}

  def sharded(*arrays, where=None, row_weights=None, **kwargs):
    if len(arrays) != len(roles):
      raise ValueError(f'{fn.__name__}: expected {len(roles)} arrays '
                       f'{roles}; got {len(arrays)}.')
    shards = mesh.shape[vocab_axis]
    rows = int(np.prod([mesh.shape[a] for a in batch_axes]))
    for array, role in zip(arrays, roles):
      shape = jnp.shape(array)
      if role == 'head' and shape[-1] % shards:
        raise ValueError(
            f'{fn.__name__}: the vocabulary V={shape[-1]} of head {shape} is '
            f'not divisible by the {shards} shards of mesh axis '
            f'{vocab_axis!r}; pad the head to a multiple of {shards} and mask '
            'the padding with where.')
      if role != 'head' and shape and shape[0] % rows:
        raise ValueError(
            f'{fn.__name__}: the leading axis of {role} {shape} is not '
            f'divisible by the {rows} batch shards of mesh axes {batch_axes}.')

    def body(arrays, where, row_weights):
      return fn(*arrays, where=where, row_weights=row_weights,
                vocab_axis=vocab_axis, **kwargs)

    return jax.shard_map(
        body, mesh=mesh,
        in_specs=(tuple(specs[r] for r in roles), P(vocab_axis),
                  specs['rows']),
        out_specs=P(batch_axes))(arrays, where, row_weights)

  return sharded


@functools.partial(jax.tree_util.register_dataclass, data_fields=('hidden', 'head'),
                   meta_fields=('softcap', 'mesh'))
@dataclasses.dataclass(frozen=True)
class LinearLogits:
  """A model's logits ``softcap(hidden @ head)`` ``[..., V]``, not formed.

  What a language model's train step hands the token methods in place of
  logits when they run on the fused kernels (``train.lm_logits``): the
  methods call ``on_linear_logits``, which never forms ``[..., V]``.

  Attributes:
    hidden: ``[..., D]`` last hidden states (times any logit scale).
    head: ``[D, V]`` output projection.
    softcap: logit soft-cap ``c`` (``c tanh(z / c)``), 0 = none.
    mesh: the mesh of a jitted step (``'data'``, ``'fsdp'``, ``'tensor'``
      axes): the kernels run ``vocab_sharded`` over it, each device on its
      rows and its share of ``V``; None inside ``shard_map`` or on one device.
  """
  hidden: Array
  head: Array
  softcap: float = 0.0
  mesh: Mesh | None = None

  @property
  def shape(self) -> tuple[int, ...]:
    return (*self.hidden.shape[:-1], self.head.shape[-1])

  def materialize(self) -> Array:
    """The float32 logits ``[..., V]`` (tests and small vocabularies)."""
    return softcap(jnp.dot(self.hidden, self.head, preferred_element_type=jnp.float32),
                   self.softcap)


def on_linear_logits(fn: Callable[..., Array], student: LinearLogits,
                     teacher: LinearLogits | None = None, labels: Array | None = None,
                     **kwargs) -> Array:
  """``fn`` (a kernel of this module) on ``LinearLogits``: ``[...]`` float32.

  A divergence kernel gets both models' hidden states, heads and soft-caps;
  ``fused_linear_cross_entropy`` the student's and ``labels``. Runs
  ``vocab_sharded`` over ``student.mesh`` when it is set (under ``jit`` with
  sharded rows, a plain call would gather the rows onto every device).
  """
  if fn is fused_linear_cross_entropy:
    arrays, kwargs = (student.hidden, student.head, labels), {**kwargs, 'softcap': student.softcap or None}
  else:
    arrays = (student.hidden, student.head, teacher.hidden, teacher.head)
    kwargs = {**kwargs, 'student_softcap': student.softcap or None,
              'teacher_softcap': teacher.softcap or None}
  if student.mesh is not None:
    fn = vocab_sharded(fn, student.mesh)
  return fn(*arrays, **kwargs)
