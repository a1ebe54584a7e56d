"""ResNet-50 for CIFAR (RepDistiller's ``ResNet50``, ``models/resnetv2.py``).

ImageNet-style bottleneck ResNet-50 with a CIFAR stem: 3x3 conv stride 1 to
64 channels (no max pool), stages of (3, 4, 6, 3) bottlenecks with widths
64, 128, 256, 512 (x4 expansion) and strides 1, 2, 2, 2.
"""

import functools
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from distill_jax.models import layers
from distill_jax.models.layers import Array, Dtype
from distill_jax.models.resnet_cifar import residual_add, resnet_forward
from distill_jax.registry import register


class Bottleneck(nn.Module):
  """1x1-BN-ReLU, 3x3 (stride)-BN-ReLU, 1x1 (x4)-BN, + shortcut; ``(out, preact)``."""
  planes: int
  strides: int = 1
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, *, train: bool) -> tuple[Array, Array]:
    conv_bn = functools.partial(layers.conv_bn, train=train, dtype=self.dtype)
    y = nn.relu(conv_bn(x, self.planes, 1, names=('conv1', 'bn1')))
    y = nn.relu(conv_bn(y, self.planes, 3, names=('conv2', 'bn2'), strides=self.strides))
    y = conv_bn(y, 4 * self.planes, 1, names=('conv3', 'bn3'))
    return residual_add(y, x, self.strides, train=train, dtype=self.dtype)


@register('models', 'resnet50_cifar')
class ResNet50CIFAR(nn.Module):
  """Bottleneck ResNet with a CIFAR stem.

  Attributes:
    num_classes: size of the classifier output.
    num_blocks: blocks per stage (ResNet-50: (3, 4, 6, 3)).
    dtype: compute dtype.

  Features for a 32x32 input: ``'stem'`` ``[B, 32, 32, 64]``; ``'stage1'``
  ``[B, 32, 32, 256]``, ``'stage2'`` ``[B, 16, 16, 512]``, ``'stage3'``
  ``[B, 8, 8, 1024]``, ``'stage4'`` ``[B, 4, 4, 2048]`` (and
  ``'stageN_preact'``); ``'pre_logits'`` ``[B, 2048]``.
  """
  num_classes: int
  num_blocks: Sequence[int] = (3, 4, 6, 3)
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, *, train: bool) -> tuple[Array, dict[str, Array]]:
    """``[B, H, W, C]`` -> ``(logits [B, num_classes], features)``."""
    return resnet_forward(layers.image_input(x, type(self).__name__, self.dtype),
                          block=Bottleneck, stem_width=64,
                          widths=[64 * 2**i for i in range(len(self.num_blocks))],
                          num_blocks=self.num_blocks, num_classes=self.num_classes,
                          train=train, dtype=self.dtype)


resnet50 = layers.register_variant('resnet50', ResNet50CIFAR,
                                   "RepDistiller's CIFAR ``ResNet50``.")
