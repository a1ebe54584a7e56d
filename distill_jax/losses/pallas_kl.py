"""Pallas kernels for the per-chunk math of ``distill_jax.losses.large_vocab``.

One row chunk's tempered logits ``s, t [C, V]`` (the matmuls stay XLA's) go
through three kernels on a ``(row blocks, vocabulary tiles)`` grid: every
program loads one ``[block_rows, block_vocab]`` tile of each model, so the
on-chip working set is a few tiles whatever ``V``:

* ``lse_parts(z)``: each tile's (max, sum-exp) -> ``[n_tiles, C, 1]``
  partials, merged over the tiles (online log-sum-exp rescaling) by XLA ->
  ``(m [C, 1], l [C, 1])``;
* ``row_terms(...)``: given the global log-sum-exps, each tile's share of
  the per-row divergence / cross-entropy sums (value and statistic),
  summed over the tiles by XLA;
* ``student_grad(...)``: the gradient w.r.t. the student's tempered logits,
  tile by tile (the backward pass).

No program accumulates into another's output (each writes its own tile or
its own ``[1, block_rows, 1]`` partial), so the grid is parallel on GPU and
TPU alike; the ``n_tiles`` partials per row are tiny. The tile math is
``vocab_blocks``'s ``block_*`` functions, shared with the XLA path. On CPU
the kernels run in Pallas interpret mode (correctness tests only). The
interface matches ``large_vocab._XlaOps``; ``large_vocab`` loads this module
on use, and this module does not import it.
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


def _tile_spec(block_rows: int, block_vocab: int) -> pl.BlockSpec:
  """Tile ``(i, j)`` of a ``[C, V]`` array."""
  return pl.BlockSpec((block_rows, block_vocab), lambda i, j: (i, j))


def _partial_spec(block_rows: int) -> pl.BlockSpec:
  """Program ``(i, j)``'s ``[1, block_rows, 1]`` slot of an ``[n_tiles, C, 1]`` partial."""
  return pl.BlockSpec((1, block_rows, 1), lambda i, j: (j, i, 0))


def _scalar_spec() -> pl.BlockSpec:
  return pl.BlockSpec((1, 1), lambda *_: (0, 0))


def _hit(labels, col0, start: Array, shape: tuple[int, int]) -> Array:
  cols = col0 + start + jax.lax.broadcasted_iota(jnp.int32, shape, 1)
  return cols == labels


def _tiled_call(kernel, name: str, rows: int, vocab: int, in_specs, outputs: int,
                *operands) -> tuple[Array, ...]:
  """``kernel`` on the ``(rows / block_rows, vocab / block_vocab)`` grid, writing
  ``outputs`` per-row partials ``[n_tiles, rows, 1]`` float32."""
  block_rows, block_vocab = _tiles(rows, vocab)
  grid = (rows // block_rows, vocab // block_vocab)
  out = jax.ShapeDtypeStruct((grid[1], rows, 1), jnp.float32)
  return pl.pallas_call(
      kernel, out_shape=(out,) * outputs, grid=grid,
      in_specs=[spec(block_rows, block_vocab) for spec in in_specs],
      out_specs=(_partial_spec(block_rows),) * outputs, interpret=_interpret(),
      name=name)(*operands)


def lse_parts(z: Array) -> tuple[Array, Array]:
  """``(max, sum-exp)`` of ``z [C, V]``, ``[C, 1]`` each, from per-tile partials."""
  rows, vocab = z.shape

  def kernel(z_ref, m_ref, l_ref):
    m, l = vocab_blocks.block_lse_parts(z_ref[...])
    m_ref[...] = m[None]
    l_ref[...] = l[None]

  m_tiles, l_tiles = _tiled_call(kernel, 'large_vocab_lse', rows, vocab, [_tile_spec],
                                 2, z)
  m = jnp.max(m_tiles, axis=0)
  big = jnp.where(jnp.isfinite(m), m, 0.0)
  return m, jnp.sum(vocab_blocks.merge_lse_parts(m_tiles, l_tiles, big), axis=0)


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
  block_vocab = _tiles(rows, vocab)[1]
  kind, beta = spec.kind, spec.beta

  def kernel(s_ref, t_ref, lse_s_ref, lse_t_ref, labels_ref, col0_ref,
             value_ref, stat_ref):
    tile = s_ref[...]
    hit = _hit(labels_ref[...], col0_ref[...], pl.program_id(1) * block_vocab, tile.shape)
    value, stat = vocab_blocks.block_row_terms(
        kind, beta, tile, t_ref[...], lse_s_ref[...], lse_t_ref[...], hit)
    value_ref[...] = value[None, :, None]
    stat_ref[...] = stat[None, :, None]

  row = lambda block_rows, _: _row_spec(block_rows)
  scalar = lambda *_: _scalar_spec()
  value, stat = _tiled_call(
      kernel, f'large_vocab_{kind}_terms', rows, vocab,
      [_tile_spec, _tile_spec, row, row, row, scalar], 2,
      *_as_inputs(s, t, lse_s, lse_t, labels, col0))
  return jnp.sum(value, axis=0)[:, 0], jnp.sum(stat, axis=0)[:, 0]


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

  tile = _tile_spec(block_rows, block_vocab)
  row = _row_spec(block_rows)
  return pl.pallas_call(
      kernel, out_shape=jax.ShapeDtypeStruct((rows, vocab), jnp.float32),
      grid=(rows // block_rows, vocab // block_vocab),
      in_specs=[tile, tile, row, row, row, _scalar_spec(), row],
      out_specs=tile, interpret=_interpret(),
      name=f'large_vocab_{kind}_grad')(
          *_as_inputs(s, t, lse_s, lse_t, labels, col0), stat[:, None])
