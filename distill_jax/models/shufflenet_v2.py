"""ShuffleNetV2 for CIFAR (Ma et al. 2018), RepDistiller's ``ShuffleV2`` (size 1x).

1x1 stem conv to 24 channels; three stages (116, 232, 464 channels) of a
stride-2 down block and (3, 7, 3) basic blocks; a 1x1 conv to 1024,
average pooling and a linear classifier. A basic block splits the channels
in halves, transforms one (1x1 conv-BN-ReLU, 3x3 depthwise conv-BN, 1x1
conv-BN-ReLU), concatenates and shuffles with 2 groups.
"""

import functools
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from distill_jax.models import layers
from distill_jax.models.layers import Array, Dtype
from distill_jax.models.shufflenet_v1 import channel_shuffle
from distill_jax.registry import register


class DownBlock(nn.Module):
  """Both branches stride 2, ``[B, H, W, C] -> [B, H/2, W/2, features]``."""
  features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, *, train: bool) -> Array:
    conv_bn = functools.partial(layers.conv_bn, train=train, dtype=self.dtype)
    c, mid = x.shape[-1], self.features // 2
    left = conv_bn(x, c, 3, names=('conv1', 'bn1'), strides=2, groups=c)
    left = nn.relu(conv_bn(left, mid, 1, names=('conv2', 'bn2')))
    right = nn.relu(conv_bn(x, mid, 1, names=('conv3', 'bn3')))
    right = conv_bn(right, mid, 3, names=('conv4', 'bn4'), strides=2, groups=mid)
    right = nn.relu(conv_bn(right, mid, 1, names=('conv5', 'bn5')))
    return channel_shuffle(jnp.concatenate([left, right], -1), 2)


class SplitBlock(nn.Module):
  """Returns ``(out, preact)``: shuffled output and the unshuffled pre-ReLU concat."""
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, *, train: bool) -> tuple[Array, Array]:
    conv_bn = functools.partial(layers.conv_bn, train=train, dtype=self.dtype)
    half = x.shape[-1] // 2
    kept, y = x[..., :half], x[..., half:]
    y = nn.relu(conv_bn(y, half, 1, names=('conv1', 'bn1')))
    y = conv_bn(y, half, 3, names=('conv2', 'bn2'), groups=half)
    y = conv_bn(y, half, 1, names=('conv3', 'bn3'))
    out = channel_shuffle(jnp.concatenate([kept, nn.relu(y)], -1), 2)
    return out, jnp.concatenate([kept, y], -1)


@register('models', 'shufflenetv2')
class ShuffleNetV2(nn.Module):
  """CIFAR ShuffleNetV2.

  Attributes:
    num_classes: size of the classifier output.
    out_channels: three stage widths and the head width.
    num_blocks: basic blocks per stage.
    dtype: compute dtype.

  Features for a 32x32 input (default sizes): ``'stem'`` ``[B, 32, 32, 24]``;
  ``'stage1'`` ``[B, 16, 16, 116]``, ``'stage2'`` ``[B, 8, 8, 232]``,
  ``'stage3'`` ``[B, 4, 4, 464]`` (and ``'stageN_preact'``); ``'pre_logits'``
  ``[B, 1024]``.
  """
  num_classes: int
  out_channels: Sequence[int] = (116, 232, 464, 1024)
  num_blocks: Sequence[int] = (3, 7, 3)
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, *, train: bool) -> tuple[Array, dict[str, Array]]:
    """``[B, H, W, C]`` -> ``(logits [B, num_classes], features)``."""
    conv_bn = functools.partial(layers.conv_bn, kernel_size=1, train=train, dtype=self.dtype)
    x = layers.image_input(x, type(self).__name__, self.dtype)
    x = nn.relu(conv_bn(x, 24, names=('stem_conv', 'stem_bn')))
    features = {'stem': x}
    for stage, (width, blocks) in enumerate(zip(self.out_channels, self.num_blocks), start=1):
      x = DownBlock(width, self.dtype, name=f'stage{stage}_down')(x, train=train)
      for b in range(blocks):
        x, preact = SplitBlock(self.dtype, name=f'stage{stage}_{b}')(x, train=train)
      features[f'stage{stage}'], features[f'stage{stage}_preact'] = x, preact
    x = nn.relu(conv_bn(x, self.out_channels[3], names=('head_conv', 'head_bn')))
    return layers.pool_and_classify(x, features, self.num_classes, dtype=self.dtype)
