"""CIFAR VGG with BatchNorm (RepDistiller's ``vgg8``/``vgg11``/``vgg13`` = ``*_bn``).

Five blocks of 3x3 conv-BN-ReLU (convs with bias, as in the reference), 2x2
max pools after blocks 0-2 (block 3 is pooled too only for 64x64 inputs, so
at 32x32 blocks 3 and 4 both run at 4x4), global average pooling and a
linear classifier. Block widths:

=======  ======================================================
vgg8     64 | 128 | 256 | 512 | 512
vgg11    64 | 128 | 256 256 | 512 512 | 512 512
vgg13    64 64 | 128 128 | 256 256 | 512 512 | 512 512
=======  ======================================================
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from distill_jax.models import layers
from distill_jax.registry import register

Array = jax.Array
Dtype = Any

CONFIGS = {
    'vgg8': ((64,), (128,), (256,), (512,), (512,)),
    'vgg11': ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    'vgg13': ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
}


def conv_bias(features: int, dtype: Dtype, name: str) -> nn.Conv:
  """3x3 conv, padding 1, with a (zero-initialised) bias."""
  return nn.Conv(features, (3, 3), padding=((1, 1), (1, 1)), dtype=dtype,
                 param_dtype=jnp.float32, name=name,
                 kernel_init=nn.with_logical_partitioning(
                     layers.kaiming_normal_fan_out, layers.CONV_KERNEL_AXES),
                 bias_init=nn.with_logical_partitioning(
                     nn.initializers.zeros, layers.CHANNEL_AXES))


@register('models', 'vgg')
class VGG(nn.Module):
  """CIFAR VGG-BN.

  Attributes:
    num_classes: size of the classifier output.
    blocks: five tuples of conv widths.
    dtype: compute dtype; parameters are float32.

  Features for a 32x32 input (in ``dtype``), ``w_i`` the last width of block
  ``i``:

  * ``'stem'``: ``[B, 32, 32, w_0]``, block 0 after its ReLU;
  * ``'stage1'`` .. ``'stage4'``: blocks 1-4 after their ReLU,
    ``[B, 16, 16, w_1]``, ``[B, 8, 8, w_2]``, ``[B, 4, 4, w_3]``,
    ``[B, 4, 4, w_4]``;
  * ``'stage1_preact'`` .. ``'stage4_preact'``: the same before the ReLU;
  * ``'pre_logits'``: ``[B, w_4]``, average-pooled ``'stage4'``.
  """
  num_classes: int
  blocks: Sequence[Sequence[int]] = CONFIGS['vgg13']
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, *, train: bool) -> tuple[Array, dict[str, Array]]:
    """``[B, H, W, C]`` -> ``(logits [B, num_classes], features)``."""
    layers.check_image_input(x, type(self).__name__)
    features = {}
    height = x.shape[1]
    x = x.astype(self.dtype)
    for i, widths in enumerate(self.blocks):
      if 1 <= i <= 3 or (i == 4 and height == 64):
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
      for j, width in enumerate(widths):
        if j:
          x = nn.relu(x)
        x = conv_bias(width, self.dtype, f'block{i}_conv{j}')(x)
        x = layers.batch_norm(train=train, dtype=self.dtype, name=f'block{i}_bn{j}')(x)
      if i:
        features[f'stage{i}_preact'] = x
      x = nn.relu(x)
      features['stem' if i == 0 else f'stage{i}'] = x
    x = layers.global_avg_pool(x)
    features['pre_logits'] = x
    return layers.classifier(x, self.num_classes, zero_bias=True, dtype=self.dtype), features


def _factory(name: str):
  def make(*, num_classes: int, **kwargs) -> VGG:
    return VGG(num_classes=num_classes, blocks=CONFIGS[name], **kwargs)
  make.__doc__ = f'CIFAR {name} with BatchNorm. ``kwargs``: ``dtype``.'
  make.__name__ = name
  return register('models', name)(make)


vgg8 = _factory('vgg8')
vgg11 = _factory('vgg11')
vgg13 = _factory('vgg13')
