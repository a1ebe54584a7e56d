"""Test helpers: standard tfds data sets written with synthetic examples.

``write_fake_tfds_data('cifar100', data_dir, {'train': 256, 'test': 64})``
prepares ``data_dir/cifar100/<version>/`` exactly as ``tfds build cifar100
--file_format=array_record`` would (same builder class, version, features and
split names, array_record files), only with random pixels and labels. The data
layer then reads it through its ordinary path (the user's data_dir already holds
the standard data set), with no mocking. The same directory also serves as the
metadata for ``tfds.testing.mock_data(policy=MockPolicy.USE_FILES,
data_dir=data_dir)``, which ``tfds.data_source`` supports (``USE_CODE`` does not
fit the data layer: it checks that the data is prepared in the data_dir).
"""

from collections.abc import Mapping

import numpy as np
import tensorflow_datasets as tfds

from distill_jax.data.builders import _base


def _fake_value(feature, rng: np.random.Generator, index: int):
  if isinstance(feature, tfds.features.Image):
    return _base.encode_png(rng.integers(0, 256, feature.shape, dtype=np.uint8))
  if isinstance(feature, tfds.features.ClassLabel):
    return int(rng.integers(0, feature.num_classes))
  if isinstance(feature, tfds.features.Text):
    return f'fake_{index}'
  raise NotImplementedError(f'No fake value for feature {feature!r}.')


def fake_builder_cls(tfds_name: str):
  """A subclass of tfds's own builder ``tfds_name`` that generates random examples.

  Constructed as ``cls(data_dir=..., num_examples={'train': n, ...}, seed=0)``.
  """
  base = tfds.builder_cls(tfds_name)

  class FakeStandardBuilder(_base.ModuleCodePath, base, skip_registration=True):
    """``tfds_name`` with synthetic examples (same name, version, features)."""

    name = base.name

    def __init__(self, *, num_examples: Mapping[str, int], seed: int = 0, **kwargs):
      self._num_examples = dict(num_examples)
      self._seed = seed
      super().__init__(**kwargs)

    def _split_generators(self, dl_manager):
      del dl_manager
      return {split: self._generate_examples(split=split, count=count)
              for split, count in self._num_examples.items()}

    def _generate_examples(self, split: str, count: int):  # pylint: disable=arguments-differ
      rng = np.random.default_rng([self._seed, sum(map(ord, split))])
      for i in range(count):
        yield i, {key: _fake_value(feature, rng, i)
                  for key, feature in self.info.features.items()}

  FakeStandardBuilder.__name__ = f'Fake{base.__name__}'
  return FakeStandardBuilder


def write_fake_tfds_data(
    tfds_name: str,
    data_dir: str,
    num_examples: Mapping[str, int],
    *,
    seed: int = 0,
    file_format: str = 'array_record',
):
  """Prepares standard tfds ``tfds_name`` in ``data_dir`` with random examples.

  Args:
    tfds_name: a tfds builder name ('mnist', 'cifar10', 'cifar100', ...).
    data_dir: tfds data_dir to write ``tfds_name/<version>/`` into.
    num_examples: examples per split, e.g. ``{'train': 64, 'test': 32}``.
    seed: seed of the random pixels and labels.
    file_format: 'array_record' (readable without TensorFlow).

  Returns:
    The prepared builder (``builder.data_dir`` is the variant directory).
  """
  builder = fake_builder_cls(tfds_name)(
      data_dir=data_dir, num_examples=num_examples, seed=seed,
      file_format=file_format)
  builder.download_and_prepare(file_format=file_format)
  return builder
