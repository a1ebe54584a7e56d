"""Shared pieces of the offline tfds builders: PNG encoding, code path, info, examples.

The builders read local files that a pip or apt package ships; they never touch
the network and never need TensorFlow:

* images are PNG-encoded with Pillow and handed to ``tfds.features.Image`` as
  bytes (tfds encodes NumPy arrays with ``tf.image.encode_png``, which would
  need TensorFlow; bytes are stored as they are), and decoded with Pillow by
  ``tfds.data_source``. The stored features are therefore exactly those of the
  standard tfds builders (``mnist``, ``fashion_mnist``).
* ``code_path`` is overridden: tfds 4.9.10 computes it with
  ``importlib_resources`` (a back-port needed only before Python 3.9 and not a
  dependency on newer Pythons), which would fail in ``download_and_prepare``.
"""

import io
import sys

from etils import epath
import numpy as np
from PIL import Image as PILImage
import tensorflow_datasets as tfds

from distill_jax.data import errors


def encode_png(image: np.ndarray) -> bytes:
  """PNG bytes of a uint8 image ``[H, W, 1]`` or ``[H, W, 3]``."""
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] not in (1, 3):
    raise ValueError(
        f'encode_png expects uint8 [H, W, 1|3], got {image.dtype} {image.shape}.')
  pil = PILImage.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
  buffer = io.BytesIO()
  pil.save(buffer, format='png')
  return buffer.getvalue()


class ModuleCodePath:
  """Mixin of tfds builders: ``code_path`` is the class's module file (not tfds's, above)."""

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:  # pytype: disable=signature-mismatch
    return epath.Path(sys.modules[cls.__module__].__file__)


class LocalSourceBuilder(ModuleCodePath, tfds.core.GeneratorBasedBuilder,
                         skip_registration=True):
  """Base of the builders that read a locally installed package's image files.

  Subclasses set ``VERSION``, ``RELEASE_NOTES`` and the ``_info`` fields below,
  and implement ``check_source()``, which raises
  ``errors.SourceNotInstalledError`` when the files are absent (called by
  ``download_and_prepare`` before generating), and ``split_arrays()``.
  """

  DESCRIPTION = ''
  HOMEPAGE = ''
  IMAGE_SHAPE = (28, 28, 1)  # Of the uint8 images.
  CLASS_LABEL = {'num_classes': 10}  # The arguments of tfds.features.ClassLabel.

  def check_source(self) -> None:
    """Raises ``errors.SourceNotInstalledError`` if the source files are absent."""
    raise NotImplementedError

  def split_arrays(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{split: (images uint8 [N, H, W, C], labels int [N])}`` read from the source."""
    raise NotImplementedError

  def source_available(self) -> bool:
    try:
      self.check_source()
    except errors.SourceNotInstalledError:
      return False
    return True

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=self.DESCRIPTION,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=self.IMAGE_SHAPE),
            'label': tfds.features.ClassLabel(**self.CLASS_LABEL),
        }),
        supervised_keys=('image', 'label'),
        homepage=self.HOMEPAGE,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing is downloaded.
    self.check_source()
    return {split: self._generate_examples(*arrays)
            for split, arrays in self.split_arrays().items()}

  def _generate_examples(self, images: np.ndarray, labels: np.ndarray):
    for i, (image, label) in enumerate(zip(images, labels)):
      yield i, {'image': encode_png(image), 'label': int(label)}
