"""Pallas kernels for the per-chunk math of ``distill_jax.losses.large_vocab``.

One row chunk's tempered logits ``s, t [C, V]`` (the matmuls stay XLA's) go
through three kernels, each blocked as ``[block_rows, block_vocab]`` tiles so
that a tile of both models fits in on-chip memory whatever ``V``:

* ``lse_parts(z)``: per row, an online (running max, rescaled sum-exp) over
  the vocabulary tiles -> ``(m [C, 1], l [C, 1])``;
* ``row_terms(...)``: given the global log-sum-exps, both softened softmaxes
  and the per-row KL / JSD / cross-entropy sums (value and statistic);
* ``student_grad(...)``: the gradient w.r.t. the student's tempered logits,
  tile by tile (the backward pass).

The grid runs over row blocks (and, for the gradient, vocabulary tiles);
reductions over the vocabulary are a ``fori_loop`` inside a program, so no
output is accumulated across grid steps (valid on GPU and TPU alike). The
tile math is ``vocab_blocks``'s ``block_*`` functions, shared with the XLA
path. On CPU the kernels run in Pallas interpret mode (correctness tests
only). The interface matches ``large_vocab._XlaOps``; ``large_vocab`` loads
this module on use, and this module does not import it.
"""

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from distill_jax.losses import vocab_blocks

Array = jax.Array

# Candidate tile sizes, largest first.
_VOCAB_TILES = (2048, 1024, 512, 256, 128)
_ROW_TILES = (8, 4, 2, 1)


def _tiles(rows: int, vocab: int) -> tuple[int, int]:
  """``(block_rows, block_vocab)`` dividing ``[rows, vocab]``.

  Raises:
    ValueError: no vocabulary tile divides ``vocab`` (and it is too large to
      be one tile).
  """
  block_rows = next(b for b in _ROW_TILES if rows % b == 0)
  for b in _VOCAB_TILES:
    if vocab % b == 0:
      return block_rows, b
  if vocab <= _VOCAB_TILES[0]:
    return block_rows, vocab
  raise ValueError(
      f'Pallas large-vocabulary kernel: the (local) vocabulary size {vocab} is '
      f'not a multiple of 128 and too large for one tile; pad the heads to a '
      f'multiple of 128 columns and mask the padding with where=, or use '
      f"implementation='xla'.")


def _interpret() -> bool:
  return jax.default_backend() == 'cpu'


def _row_spec(block_rows: int) -> pl.BlockSpec:
  """A ``[block_rows, 1]`` tile of a per-row ``[C, 1]`` array."""
  return pl.BlockSpec((block_rows, 1), lambda i, *_: (i, 0))


def _full_rows_spec(block_rows: int, vocab: int) -> pl.BlockSpec:
  """A ``[block_rows, V]`` row band of a ``[C, V]`` array (sliced in-kernel)."""
  return pl.BlockSpec((block_rows, vocab), lambda i, *_: (i, 0))


def _scalar_spec() -> pl.BlockSpec:
  return pl.BlockSpec((1, 1), lambda *_: (0, 0))


def _hit(labels, col0, start: Array, shape: tuple[int, int]) -> Array:
  cols = col0 + start + jax.lax.broadcasted_iota(jnp.int32, shape, 1)
  return cols == labels


def lse_parts(z: Array) -> tuple[Array, Array]:
  """Running ``(max, sum-exp)`` of ``z [C, V]`` over vocabulary tiles, ``[C, 1]`` each."""
  rows, vocab = z.shape
  block_rows, block_vocab = _tiles(rows, vocab)

  def kernel(z_ref, m_ref, l_ref):
    def body(j, carry):
      m, l = carry
      tile = z_ref[:, pl.ds(j * block_vocab, block_vocab)]
      m_tile, l_tile = vocab_blocks.block_lse_parts(tile)
      new_m = jnp.maximum(m, m_tile)
      big = jnp.where(jnp.isfinite(new_m), new_m, 0.0)
      return new_m, (vocab_blocks.merge_lse_parts(m, l, big)
                     + vocab_blocks.merge_lse_parts(m_tile, l_tile, big))

    init = (jnp.full((block_rows, 1), -jnp.inf, jnp.float32),
            jnp.zeros((block_rows, 1), jnp.float32))
    m, l = jax.lax.fori_loop(0, vocab // block_vocab, body, init)
    m_ref[...] = m
    l_ref[...] = l

  out = jax.ShapeDtypeStruct((rows, 1), jnp.float32)
  return pl.pallas_call(
      kernel, out_shape=(out, out), grid=(rows // block_rows,),
      in_specs=[_full_rows_spec(block_rows, vocab)],
      out_specs=(_row_spec(block_rows), _row_spec(block_rows)),
      interpret=_interpret(), name='large_vocab_lse')(z)


def _as_inputs(s, t, lse_s, lse_t, labels, col0):
  """Kernel operands; the cross-entropy (no teacher) reuses the student's."""
  rows = s.shape[0]
  t = s if t is None else t
  labels = (jnp.full((rows,), -1, jnp.int32) if labels is None
            else labels.astype(jnp.int32))
  return (s, t, lse_s, lse_t, labels[:, None],
          jnp.asarray(col0, jnp.int32).reshape(1, 1))


def row_terms(spec, s: Array, t: Array | None, lse_s: Array, lse_t: Array,
              labels: Array | None, col0: Array) -> tuple[Array, Array]:
  """Per-row ``(value part, statistic part)`` ``[C]`` of this device's vocabulary."""
  rows, vocab = s.shape
  block_rows, block_vocab = _tiles(rows, vocab)
  kind, beta = spec.kind, spec.beta

  def kernel(s_ref, t_ref, lse_s_ref, lse_t_ref, labels_ref, col0_ref,
             value_ref, stat_ref):
    lse_s_blk, lse_t_blk = lse_s_ref[...], lse_t_ref[...]
    labels_blk, col0_blk = labels_ref[...], col0_ref[...]

    def body(j, carry):
      start = j * block_vocab
      window = pl.ds(start, block_vocab)
      hit = _hit(labels_blk, col0_blk, start, (block_rows, block_vocab))
      value, stat = vocab_blocks.block_row_terms(
          kind, beta, s_ref[:, window], t_ref[:, window], lse_s_blk,
          lse_t_blk, hit)
      return carry[0] + value[:, None], carry[1] + stat[:, None]

    zeros = jnp.zeros((block_rows, 1), jnp.float32)
    value, stat = jax.lax.fori_loop(0, vocab // block_vocab, body,
                                    (zeros, zeros))
    value_ref[...] = value
    stat_ref[...] = stat

  band = _full_rows_spec(block_rows, vocab)
  row = _row_spec(block_rows)
  out = jax.ShapeDtypeStruct((rows, 1), jnp.float32)
  value, stat = pl.pallas_call(
      kernel, out_shape=(out, out), grid=(rows // block_rows,),
      in_specs=[band, band, row, row, row, _scalar_spec()],
      out_specs=(row, row), interpret=_interpret(),
      name=f'large_vocab_{kind}_terms')(
          *_as_inputs(s, t, lse_s, lse_t, labels, col0))
  return value[:, 0], stat[:, 0]


def student_grad(spec, s: Array, t: Array | None, lse_s: Array, lse_t: Array,
                 stat: Array, labels: Array | None, col0: Array) -> Array:
  """d(row value) / d(tempered student logits), ``[C, V]``, one tile per program."""
  rows, vocab = s.shape
  block_rows, block_vocab = _tiles(rows, vocab)
  kind, beta = spec.kind, spec.beta

  def kernel(s_ref, t_ref, lse_s_ref, lse_t_ref, labels_ref, col0_ref,
             stat_ref, grad_ref):
    start = pl.program_id(1) * block_vocab
    hit = _hit(labels_ref[...], col0_ref[...], start, (block_rows, block_vocab))
    grad_ref[...] = vocab_blocks.block_student_grad(
        kind, beta, s_ref[...], t_ref[...], lse_s_ref[...], lse_t_ref[...],
        stat_ref[...], hit)

  tile = pl.BlockSpec((block_rows, block_vocab), lambda i, j: (i, j))
  row = _row_spec(block_rows)
  return pl.pallas_call(
      kernel, out_shape=jax.ShapeDtypeStruct((rows, vocab), jnp.float32),
      grid=(rows // block_rows, vocab // block_vocab),
      in_specs=[tile, tile, row, row, row, _scalar_spec(), row],
      out_specs=tile, interpret=_interpret(),
      name=f'large_vocab_{kind}_grad')(
          *_as_inputs(s, t, lse_s, lse_t, labels, col0), stat[:, None])
