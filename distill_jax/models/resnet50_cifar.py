"""ResNet-50 for CIFAR (RepDistiller's ``ResNet50``, ``models/resnetv2.py``).

ImageNet-style bottleneck ResNet-50 with a CIFAR stem: 3x3 conv stride 1 to
64 channels (no max pool), stages of (3, 4, 6, 3) bottlenecks with widths
64, 128, 256, 512 (x4 expansion) and strides 1, 2, 2, 2.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from distill_jax.models import layers
from distill_jax.registry import register

Array = jax.Array
Dtype = Any


class Bottleneck(nn.Module):
  """1x1-BN-ReLU, 3x3 (stride)-BN-ReLU, 1x1 (x4)-BN, + shortcut; ``(out, preact)``."""
  planes: int
  strides: int = 1
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, *, train: bool) -> tuple[Array, Array]:
    bn = lambda name: layers.batch_norm(train=train, dtype=self.dtype, name=name)
    out_channels = 4 * self.planes
    y = nn.relu(bn('bn1')(layers.conv(self.planes, 1, dtype=self.dtype, name='conv1')(x)))
    y = nn.relu(bn('bn2')(layers.conv(self.planes, 3, strides=self.strides, dtype=self.dtype,
                                      name='conv2')(y)))
    y = bn('bn3')(layers.conv(out_channels, 1, dtype=self.dtype, name='conv3')(y))
    shortcut = x
    if self.strides != 1 or x.shape[-1] != out_channels:
      shortcut = bn('downsample_bn')(layers.conv(out_channels, 1, strides=self.strides,
                                                 dtype=self.dtype, name='downsample_conv')(x))
    preact = y + shortcut
    return nn.relu(preact), preact


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
    layers.check_image_input(x, type(self).__name__)
    features = {}
    x = layers.conv(64, 3, dtype=self.dtype, name='conv1')(x.astype(self.dtype))
    x = nn.relu(layers.batch_norm(train=train, dtype=self.dtype, name='bn1')(x))
    features['stem'] = x
    for stage, blocks in enumerate(self.num_blocks, start=1):
      for b in range(blocks):
        x, preact = Bottleneck(64 * 2**(stage - 1), 2 if stage > 1 and b == 0 else 1,
                               self.dtype, name=f'layer{stage}_{b}')(x, train=train)
      features[f'stage{stage}'] = x
      features[f'stage{stage}_preact'] = preact
    x = layers.global_avg_pool(x)
    features['pre_logits'] = x
    return layers.classifier(x, self.num_classes, dtype=self.dtype), features


@register('models', 'resnet50')
def resnet50(*, num_classes: int, **kwargs) -> ResNet50CIFAR:
  """RepDistiller's CIFAR ``ResNet50``. ``kwargs``: ``dtype``."""
  return ResNet50CIFAR(num_classes=num_classes, **kwargs)
