"""``fashion_mnist_debian``: Fashion-MNIST from the Debian package's IDX files.

Source: ``apt-get install dataset-fashion-mnist`` installs the original IDX
files (``{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz``) in
``/usr/share/datasets/fashion-mnist/``. The directory can be overridden with the
``source_dir`` constructor argument or the ``DISTILL_JAX_FASHION_MNIST_DIR``
environment variable (tests point it at a tiny IDX fixture).

Splits: ``train`` (60,000), ``test`` (10,000). Features are those of the
standard tfds ``fashion_mnist``: ``image`` ``Image(shape=(28, 28, 1))``, ``label``
``ClassLabel`` with the 10 class names.
"""

import gzip
import os

import numpy as np
import tensorflow_datasets as tfds

from distill_jax.data import errors
from distill_jax.data.builders import _base

ENV_VAR = 'DISTILL_JAX_FASHION_MNIST_DIR'
DEFAULT_SOURCE_DIR = '/usr/share/datasets/fashion-mnist/'
INSTALL = 'apt-get install dataset-fashion-mnist'

CLASS_NAMES = ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal',
               'Shirt', 'Bag', 'Sneaker', 'Ankle boot')

FILES = {
    'train': ('train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz'),
    'test': ('t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz'),
}


def read_idx(images_path: str, labels_path: str):
  """``(images uint8 [N, 28, 28, 1], labels int64 [N])`` from two IDX .gz files.

  IDX images have a 16-byte header (magic 2051, count, rows, cols), labels an
  8-byte one (magic 2049, count); all big-endian int32.
  """
  with gzip.open(images_path, 'rb') as f:
    raw_images = f.read()
  with gzip.open(labels_path, 'rb') as f:
    raw_labels = f.read()
  magic, n, rows, cols = np.frombuffer(raw_images, '>i4', count=4)
  label_magic, n_labels = np.frombuffer(raw_labels, '>i4', count=2)
  if magic != 2051 or label_magic != 2049 or n != n_labels or (rows, cols) != (28, 28):
    raise ValueError(
        f'Not a pair of 28x28 IDX files with matching counts: {images_path} '
        f'(magic {magic}, {n} x {rows}x{cols}), {labels_path} '
        f'(magic {label_magic}, {n_labels} labels).')
  images = np.frombuffer(raw_images, np.uint8, offset=16).reshape(n, 28, 28, 1)
  labels = np.frombuffer(raw_labels, np.uint8, offset=8).astype(np.int64)
  return images, labels


class FashionMnistDebian(_base.LocalSourceBuilder):
  """Fashion-MNIST (60k train / 10k test) from ``dataset-fashion-mnist``."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  DESCRIPTION = 'Fashion-MNIST (Zalando) from the Debian package dataset-fashion-mnist.'
  HOMEPAGE = 'https://github.com/zalandoresearch/fashion-mnist'
  CLASS_LABEL = {'names': CLASS_NAMES}

  def __init__(self, *, source_dir: str | None = None, **kwargs):
    super().__init__(**kwargs)
    self._source_dir = source_dir
    self._original_state['source_dir'] = source_dir  # For pickling.

  @property
  def source_dir(self) -> str:
    return self._source_dir or os.environ.get(ENV_VAR) or DEFAULT_SOURCE_DIR

  def check_source(self) -> None:
    missing = [name for pair in FILES.values() for name in pair
               if not os.path.isfile(os.path.join(self.source_dir, name))]
    if missing:
      raise errors.SourceNotInstalledError(
          f'The offline Fashion-MNIST source for tfds builder '
          f'`fashion_mnist_debian` is missing: {", ".join(missing)} not found in '
          f'{self.source_dir}. Install the Debian package with '
          f'`{INSTALL}` (as root; run `apt-get update` first), or set {ENV_VAR} '
          'to a directory holding the four IDX .gz files.')

  def split_arrays(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {split: read_idx(*(os.path.join(self.source_dir, name) for name in files))
            for split, files in FILES.items()}
