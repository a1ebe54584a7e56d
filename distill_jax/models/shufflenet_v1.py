"""ShuffleNetV1 for CIFAR (Zhang et al. 2018), RepDistiller's ``ShuffleV1``.

1x1 stem conv to 24 channels, three stages of (4, 8, 4) bottlenecks with
(240, 480, 960) output channels and 3 groups; each stage starts with a
stride-2 block whose shortcut (3x3 average pool) is concatenated. A
bottleneck is grouped 1x1 conv-BN-ReLU, channel shuffle, 3x3 depthwise
conv-BN-ReLU, grouped 1x1 conv-BN, plus the shortcut, ReLU.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from distill_jax.models import layers
from distill_jax.models.mobilenet_v2 import grouped_conv
from distill_jax.registry import register

Array = jax.Array
Dtype = Any


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
    bn = lambda name: layers.batch_norm(train=train, dtype=self.dtype, name=name)
    mid = self.features // 4
    y = grouped_conv(mid, 1, groups=self.first_groups, dtype=self.dtype, name='conv1')(x)
    y = channel_shuffle(nn.relu(bn('bn1')(y)), self.first_groups)
    y = grouped_conv(mid, 3, groups=mid, strides=self.strides, dtype=self.dtype, name='conv2')(y)
    y = nn.relu(bn('bn2')(y))
    y = bn('bn3')(grouped_conv(self.features, 1, groups=self.groups, dtype=self.dtype,
                               name='conv3')(y))
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
    layers.check_image_input(x, type(self).__name__)
    features = {}
    x = layers.conv(24, 1, dtype=self.dtype, name='stem_conv')(x.astype(self.dtype))
    x = nn.relu(layers.batch_norm(train=train, dtype=self.dtype, name='stem_bn')(x))
    features['stem'] = x
    for stage, (width, blocks) in enumerate(zip(self.out_channels, self.num_blocks), start=1):
      for b in range(blocks):
        in_channels = x.shape[-1]
        x, preact = ShuffleBottleneck(
            width - in_channels if b == 0 else width, 2 if b == 0 else 1, self.groups,
            1 if in_channels == 24 else self.groups, self.dtype,
            name=f'stage{stage}_{b}')(x, train=train)
      features[f'stage{stage}'] = x
      features[f'stage{stage}_preact'] = preact
    x = layers.global_avg_pool(x)
    features['pre_logits'] = x
    return layers.classifier(x, self.num_classes, dtype=self.dtype), features
