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

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from distill_jax.models import layers
from distill_jax.models.layers import Array, Dtype
from distill_jax.registry import register

CONFIGS = {
    'vgg8': ((64,), (128,), (256,), (512,), (512,)),
    'vgg11': ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    'vgg13': ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
}


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
    x = layers.image_input(x, type(self).__name__, self.dtype)
    height, features = x.shape[1], {}
    for i, widths in enumerate(self.blocks):
      if 1 <= i <= 3 or (i == 4 and height == 64):
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
      for j, width in enumerate(widths):
        if j:
          x = nn.relu(x)
        x = layers.conv_bn(x, width, 3, names=(f'block{i}_conv{j}', f'block{i}_bn{j}'),
                           use_bias=True, train=train, dtype=self.dtype)
      if i:
        features[f'stage{i}_preact'] = x
      x = nn.relu(x)
      features['stem' if i == 0 else f'stage{i}'] = x
    return layers.pool_and_classify(x, features, self.num_classes, zero_bias=True,
                                    dtype=self.dtype)


vgg8, vgg11, vgg13 = (layers.register_variant(name, VGG, f'CIFAR {name} with BatchNorm.',
                                              blocks=CONFIGS[name])
                      for name in ('vgg8', 'vgg11', 'vgg13'))
