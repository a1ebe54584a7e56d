"""ShuffleNetV1 for CIFAR (Zhang et al. 2018), RepDistiller's ``ShuffleV1``.

1x1 stem conv to 24 channels, three stages of (4, 8, 4) bottlenecks with
(240, 480, 960) output channels and 3 groups; each stage starts with a
stride-2 block whose shortcut (3x3 average pool) is concatenated. A
bottleneck is grouped 1x1 conv-BN-ReLU, channel shuffle, 3x3 depthwise
conv-BN-ReLU, grouped 1x1 conv-BN, plus the shortcut, ReLU.
"""

import functools
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from distill_jax.models import layers
from distill_jax.models.layers import Array, Dtype
from distill_jax.registry import register


def channel_shuffle(x: Array, groups: int) -> Array:
  """``[B, H, W, C]``: channel ``g * (C/groups) + i`` moves to ``i * groups + g``."""
  b, h, w, c = x.shape
  return x.reshape(b, h, w, groups, c // groups).swapaxes(3, 4).reshape(b, h, w, c)


class ShuffleBottleneck(nn.Module):
  """Returns ``(out, preact)``; ``out = relu(preact)``."""
  features: int
  strides: int
  groups: int
  first_groups: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, *, train: bool) -> tuple[Array, Array]:
    conv_bn = functools.partial(layers.conv_bn, train=train, dtype=self.dtype)
    mid = self.features // 4
    y = nn.relu(conv_bn(x, mid, 1, names=('conv1', 'bn1'), groups=self.first_groups))
    y = channel_shuffle(y, self.first_groups)
    y = nn.relu(conv_bn(y, mid, 3, names=('conv2', 'bn2'), strides=self.strides, groups=mid))
    y = conv_bn(y, self.features, 1, names=('conv3', 'bn3'), groups=self.groups)
    if self.strides == 2:
      shortcut = nn.avg_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
      preact = jnp.concatenate([y, shortcut], -1)
    else:
      preact = y + x
    return nn.relu(preact), preact


@register('models', 'shufflenetv1')
class ShuffleNetV1(nn.Module):
  """CIFAR ShuffleNetV1.

  Attributes:
    num_classes: size of the classifier output.
    out_channels: per-stage output channels.
    num_blocks: per-stage block counts.
    groups: groups of the 1x1 convs.
    dtype: compute dtype.

  Features for a 32x32 input (default sizes): ``'stem'`` ``[B, 32, 32, 24]``;
  ``'stage1'`` ``[B, 16, 16, 240]``, ``'stage2'`` ``[B, 8, 8, 480]``,
  ``'stage3'`` ``[B, 4, 4, 960]`` (and ``'stageN_preact'``, before the last
  ReLU); ``'pre_logits'`` ``[B, 960]``.
  """
  num_classes: int
  out_channels: Sequence[int] = (240, 480, 960)
  num_blocks: Sequence[int] = (4, 8, 4)
  groups: int = 3
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, *, train: bool) -> tuple[Array, dict[str, Array]]:
    """``[B, H, W, C]`` -> ``(logits [B, num_classes], features)``."""
    x = layers.image_input(x, type(self).__name__, self.dtype)
    x = nn.relu(layers.conv_bn(x, 24, 1, names=('stem_conv', 'stem_bn'), train=train,
                               dtype=self.dtype))
    features = {'stem': x}
    for stage, (width, blocks) in enumerate(zip(self.out_channels, self.num_blocks), start=1):
      for b in range(blocks):
        in_channels = x.shape[-1]
        x, preact = ShuffleBottleneck(
            width - in_channels if b == 0 else width, 2 if b == 0 else 1, self.groups,
            1 if in_channels == 24 else self.groups, self.dtype,
            name=f'stage{stage}_{b}')(x, train=train)
      features[f'stage{stage}'], features[f'stage{stage}_preact'] = x, preact
    return layers.pool_and_classify(x, features, self.num_classes, dtype=self.dtype)
