"""``sklearn_digits``: the 1,797 8x8 digits that scikit-learn ships (``load_digits``).

Source: ``pip install scikit-learn`` (the data is inside the wheel; nothing is
downloaded). Pixels 0..16 are scaled to uint8 ``round(v * 255 / 16)``.

Splits: a fixed stratified split, ``train`` (1,437) and ``test`` (360), made
with ``sklearn.model_selection.train_test_split(test_size=360,
random_state=0, stratify=labels)``. Features: ``image``
``Image(shape=(8, 8, 1))``, ``label`` ``ClassLabel(num_classes=10)``.
"""

import importlib.util

import numpy as np
import tensorflow_datasets as tfds

from distill_jax.data import errors
from distill_jax.data.builders import _base

INSTALL = 'pip install scikit-learn'
NUM_TEST = 360
SPLIT_SEED = 0


def load_split_arrays():
  """``{'train': (images uint8 [1437, 8, 8, 1], labels), 'test': (... [360] ...)}``."""
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  from sklearn import model_selection  # pylint: disable=g-import-not-at-top
  digits = datasets.load_digits()
  images = np.round(digits.images.astype(np.float64) * (255.0 / 16.0))
  images = images.astype(np.uint8)[..., None]
  labels = digits.target.astype(np.int64)
  index = np.arange(len(labels))
  train_index, test_index = model_selection.train_test_split(
      index, test_size=NUM_TEST, random_state=SPLIT_SEED, stratify=labels)
  train_index, test_index = np.sort(train_index), np.sort(test_index)
  return {
      'train': (images[train_index], labels[train_index]),
      'test': (images[test_index], labels[test_index]),
  }


class SklearnDigits(_base.LocalSourceBuilder):
  """scikit-learn's 8x8 digits with a fixed 1,437 / 360 train / test split."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  DESCRIPTION = 'UCI optical digits (8x8, 0..16 scaled to 0..255) from scikit-learn.'
  HOMEPAGE = 'https://archive.ics.uci.edu/dataset/80'
  IMAGE_SHAPE = (8, 8, 1)

  def check_source(self) -> None:
    if importlib.util.find_spec('sklearn') is None:
      raise errors.SourceNotInstalledError(
          'The offline source for tfds builder `sklearn_digits` is missing: '
          f'scikit-learn is not installed. Install it with `{INSTALL}`.')

  def split_arrays(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return load_split_arrays()
