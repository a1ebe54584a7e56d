"""Data: registered data sets, offline tfds builders, input pipelines, augmentations.

Public API (what the trainer calls)::

    from distill_jax import data
    spec = data.dataset_spec('mnist')        # num_classes, image_shape, mean, std
    data.check_split('mnist', 'test', key='data.eval_split')  # A typo: ValueError listing the splits.
    it = data.train_batches('mnist', data_dir=None, global_batch_size=128, seed=0,
                            start_step=step, process_index=jax.process_index(),
                            process_count=jax.process_count())
    for batch in data.eval_batches('mnist', global_batch_size=1000): ...
    x = data.normalize(data.augment.augment(rng, batch['image'], cfg), spec.mean, spec.std)

Importing this package registers the ``datasets`` entries; TensorFlow is never
needed (tfds reads array_record files through ``tfds.data_source``).
"""

from distill_jax.data import augment  # The module: augment.augment(rng, images, config).
from distill_jax.data import datasets
from distill_jax.data.augment import normalize
from distill_jax.data.augment import random_crop
from distill_jax.data.augment import random_flip
from distill_jax.data.datasets import DatasetSpec
from distill_jax.data.errors import DamagedFileError
from distill_jax.data.errors import DatasetUnavailableError
from distill_jax.data.errors import SourceNotInstalledError
from distill_jax.data.pipeline import eval_batches
from distill_jax.data.pipeline import num_examples
from distill_jax.data.pipeline import train_batches
from distill_jax.data.sources import check_split
from distill_jax.data.sources import dataset_spec
from distill_jax.data.sources import load_split
from distill_jax.data.sources import resolve
