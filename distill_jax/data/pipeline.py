"""Input pipelines the trainer calls: deterministic, resumable, sharded per host.

Training (``train_batches``) reads an infinite stream of global batches. Global
batch ``k`` is a pure function of ``(seed, k)``: epoch ``e = k // S`` (``S =
N // global_batch_size`` full batches per epoch, the remainder of each epoch
dropped) is a permutation of the split computed from ``(seed, e)`` by a
counter-based hash (SplitMix64 + argsort, independent of the NumPy version), and
batch ``k`` is the slice ``[(k % S) * B, (k % S + 1) * B)`` of it. Resuming at
``start_step`` computes batch ``start_step`` directly (no replay).

Process ``p`` of ``P`` takes positions ``[p * B/P, (p + 1) * B/P)`` of every
global batch, so the processes' batches are disjoint and together are exactly
the one-process global batch, whatever ``P``.

Evaluation (``eval_batches``) makes one ordered pass; the last global batch is
padded to full size and a ``mask`` marks the real examples.

Batches are produced by a grain ``MapDataset`` over batch numbers, read ahead
by a background thread (``to_iter_dataset`` with prefetch), from NumPy arrays in
memory for small splits (``sources.Examples``). The same two functions serve any
random-access source (``train_batches_of`` / ``eval_batches_of``): images, token
windows and teacher-logit caches go through one pipeline.
"""

import functools
import math
from typing import Any, Iterator

import grain
import numpy as np

from distill_jax.data import sources

# Read-ahead of the background thread(s), in batches.
PREFETCH_BATCHES = 4
# Threads: one is enough for NumPy gathers from memory; decoding records from
# a data source uses more.
_IN_MEMORY_THREADS = 1
_STREAMING_THREADS = 8
_ENDLESS = 1 << 62


def num_examples(name: str, split: str = 'train', data_dir: str | None = None) -> int:
  """Number of examples in ``split`` of data set ``name`` (mnist 'train': 60,000)."""
  return len(sources.open_source(name, split, data_dir))


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _splitmix64(x: np.ndarray) -> np.ndarray:
  """SplitMix64 finalizer of uint64 ``x`` (elementwise, wrapping arithmetic)."""
  x = np.asarray(x, np.uint64)
  with np.errstate(over='ignore'):
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
  return x ^ (x >> np.uint64(31))


def epoch_permutation(num: int, seed: int, epoch: int) -> np.ndarray:
  """The order of epoch ``epoch``: a permutation of ``range(num)``, int64 ``[num]``.

  A pure function of ``(num, seed, epoch)``, stable across NumPy versions.
  """
  key = np.array([seed % (1 << 64)], np.uint64)
  with np.errstate(over='ignore'):
    key = _splitmix64(key + _GOLDEN)
    key = _splitmix64(key ^ np.array([epoch % (1 << 64)], np.uint64))
    scores = _splitmix64(key + (np.arange(1, num + 1, dtype=np.uint64) * _GOLDEN))
  return np.argsort(scores, kind='stable')


def _check_hosts(global_batch_size: int, process_index: int, process_count: int) -> int:
  if global_batch_size <= 0:
    raise ValueError(f'global_batch_size must be positive, got {global_batch_size}.')
  if process_count <= 0 or not 0 <= process_index < process_count:
    raise ValueError(
        f'process_index must be in [0, process_count), got {process_index} of '
        f'{process_count}.')
  if global_batch_size % process_count:
    raise ValueError(
        f'global_batch_size {global_batch_size} is not divisible by '
        f'process_count {process_count}: every process must get the same '
        f'number of examples. Use a multiple of {process_count}.')
  return global_batch_size // process_count


def _prefetched(dataset: grain.MapDataset, in_memory: bool) -> Iterator[dict]:
  """Iterates ``dataset`` in order, read ahead by background threads."""
  options = grain.ReadOptions(
      num_threads=_IN_MEMORY_THREADS if in_memory else _STREAMING_THREADS,
      prefetch_buffer_size=PREFETCH_BATCHES)
  iterator = iter(dataset.to_iter_dataset(options))
  try:
    yield from iterator
  finally:
    iterator.close()


def train_batches_of(
    source: Any,
    *,
    global_batch_size: int,
    seed: int,
    start_step: int = 0,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
  """Endless training batches of any random-access ``source``: this process's part.

  ``source`` has ``len(source)`` and ``source.get(indices) -> dict of [k,
  ...] arrays`` (``sources.Examples`` for images, ``text.ArrayExamples`` for
  token windows, ``logit_cache.CachedExamples`` for cached teacher targets);
  an ``in_memory`` attribute (default False) picks one reader thread.
  Epochs are without replacement (module docstring).

  Args:
    source: the examples.
    global_batch_size: examples per step summed over all processes.
    seed: shuffling seed; the stream is a pure function of it.
    start_step: the first global batch to yield (resume: same batches as an
      uninterrupted run from this step on).
    process_index: this process (``jax.process_index()``).
    process_count: number of processes (``jax.process_count()``).

  Yields:
    ``source.get`` of this process's ``b = global_batch_size // process_count``
    examples plus ``index`` int32 ``[b]`` (their positions in ``source``;
    methods with a per-example memory, such as CRD's bank, address it by
    this): global batch ``start_step``, then ``start_step + 1``, ...

  Raises:
    ValueError: bad batch size / process arguments, or a source smaller than
      one global batch.
  """
  local = _check_hosts(global_batch_size, process_index, process_count)
  if start_step < 0:
    raise ValueError(f'start_step must be >= 0, got {start_step}.')
  size = len(source)
  steps_per_epoch = size // global_batch_size
  if steps_per_epoch == 0:
    raise ValueError(f'{size} examples are fewer than one global batch of '
                     f'{global_batch_size}.')
  offset = process_index * local

  @functools.lru_cache(maxsize=2)
  def order(epoch: int) -> np.ndarray:
    return epoch_permutation(size, seed, epoch)

  def batch(step: int) -> dict[str, np.ndarray]:
    epoch, position = divmod(step, steps_per_epoch)
    start = position * global_batch_size + offset
    indices = order(epoch)[start:start + local]
    return {**source.get(indices), 'index': indices.astype(np.int32)}

  dataset = grain.MapDataset.range(start_step, _ENDLESS).map(batch)
  return _prefetched(dataset, getattr(source, 'in_memory', False))


def train_batches(name: str, *, data_dir: str | None = None, split: str = 'train',
                  **kwargs) -> Iterator[dict[str, np.ndarray]]:
  """``train_batches_of`` the registered data set ``name``'s ``split``.

  Yields ``{'image': uint8 [b, H, W, C], 'label': int32 [b], 'index': int32
  [b]}``; ``kwargs`` are ``train_batches_of``'s.

  Raises:
    ValueError: bad batch size / process arguments, or a split smaller than
      one global batch.
    errors.DatasetUnavailableError: the data set cannot be found or prepared.
  """
  examples = sources.Examples(name, split, data_dir)
  try:
    return train_batches_of(examples, **kwargs)
  except ValueError as e:
    raise ValueError(f'Split {split!r} of {name!r}: {e}') from e


def eval_batches_of(
    source: Any,
    *,
    global_batch_size: int,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
  """One ordered pass over ``source``; the last batch padded, with a mask.

  Every process yields the same number of batches,
  ``ceil(N / global_batch_size)``; global batch ``k`` holds examples
  ``[k * B, (k + 1) * B)`` of the source, and process ``p`` its positions
  ``[p * b, (p + 1) * b)``. Padding examples are zeros of every key with
  ``mask`` False, so metric sums over ``mask`` are exact.

  Yields:
    ``source.get`` of ``b = global_batch_size // process_count`` examples plus
    ``mask`` bool ``[b]``.
  """
  local = _check_hosts(global_batch_size, process_index, process_count)
  size = len(source)
  offset = process_index * local
  first = source.get(np.zeros((1,), np.int64))  # Shapes and dtypes of the padding.

  def batch(k: int) -> dict[str, np.ndarray]:
    positions = k * global_batch_size + offset + np.arange(local)
    mask = positions < size
    count = int(mask.sum())
    real = source.get(positions[mask]) if count else {}
    if count == local:
      return {**real, 'mask': mask}
    padded = {key: np.zeros((local, *value.shape[1:]), value.dtype)
              for key, value in first.items()}
    for key, value in real.items():
      padded[key][:count] = value
    return {**padded, 'mask': mask}

  num_batches = math.ceil(size / global_batch_size)
  dataset = grain.MapDataset.range(num_batches).map(batch)
  return _prefetched(dataset, getattr(source, 'in_memory', False))


def eval_batches(name: str, *, data_dir: str | None = None, split: str = 'test',
                 **kwargs) -> Iterator[dict[str, np.ndarray]]:
  """``eval_batches_of`` the registered data set ``name``'s ``split``.

  Yields ``{'image': uint8 [b, H, W, C], 'label': int32 [b], 'mask': bool
  [b]}``; ``kwargs`` are ``eval_batches_of``'s.
  """
  return eval_batches_of(sources.Examples(name, split, data_dir), **kwargs)
