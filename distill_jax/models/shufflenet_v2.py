"""ShuffleNetV2 for CIFAR (Ma et al. 2018), RepDistiller's ``ShuffleV2`` (size 1x).

1x1 stem conv to 24 channels; three stages (116, 232, 464 channels) of a
stride-2 down block and (3, 7, 3) basic blocks; a 1x1 conv to 1024,
average pooling and a linear classifier. A basic block splits the channels
in halves, transforms one (1x1 conv-BN-ReLU, 3x3 depthwise conv-BN, 1x1
conv-BN-ReLU), concatenates and shuffles with 2 groups.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from distill_jax.models import layers
from distill_jax.models.mobilenet_v2 import grouped_conv
from distill_jax.models.shufflenet_v1 import channel_shuffle
from distill_jax.registry import register

Array = jax.Array
Dtype = Any


class DownBlock(nn.Module):
  """Both branches stride 2, ``[B, H, W, C] -> [B, H/2, W/2, features]``."""
  features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, *, train: bool) -> Array:
    bn = lambda name: layers.batch_norm(train=train, dtype=self.dtype, name=name)
    c, mid = x.shape[-1], self.features // 2
    left = bn('bn1')(grouped_conv(c, 3, groups=c, strides=2, dtype=self.dtype, name='conv1')(x))
    left = nn.relu(bn('bn2')(layers.conv(mid, 1, dtype=self.dtype, name='conv2')(left)))
    right = nn.relu(bn('bn3')(layers.conv(mid, 1, dtype=self.dtype, name='conv3')(x)))
    right = bn('bn4')(grouped_conv(mid, 3, groups=mid, strides=2, dtype=self.dtype,
                                   name='conv4')(right))
    right = nn.relu(bn('bn5')(layers.conv(mid, 1, dtype=self.dtype, name='conv5')(right)))
    return channel_shuffle(jnp.concatenate([left, right], -1), 2)


class SplitBlock(nn.Module):
  """Returns ``(out, preact)``: shuffled output and the unshuffled pre-ReLU concat."""
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, *, train: bool) -> tuple[Array, Array]:
    bn = lambda name: layers.batch_norm(train=train, dtype=self.dtype, name=name)
    half = x.shape[-1] // 2
    kept, y = x[..., :half], x[..., half:]
    y = nn.relu(bn('bn1')(layers.conv(half, 1, dtype=self.dtype, name='conv1')(y)))
    y = bn('bn2')(grouped_conv(half, 3, groups=half, dtype=self.dtype, name='conv2')(y))
    y = bn('bn3')(layers.conv(half, 1, dtype=self.dtype, name='conv3')(y))
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
    layers.check_image_input(x, type(self).__name__)
    features = {}
    x = layers.conv(24, 1, dtype=self.dtype, name='stem_conv')(x.astype(self.dtype))
    x = nn.relu(layers.batch_norm(train=train, dtype=self.dtype, name='stem_bn')(x))
    features['stem'] = x
    for stage, (width, blocks) in enumerate(zip(self.out_channels, self.num_blocks), start=1):
      x = DownBlock(width, self.dtype, name=f'stage{stage}_down')(x, train=train)
      for b in range(blocks):
        x, preact = SplitBlock(self.dtype, name=f'stage{stage}_{b}')(x, train=train)
      features[f'stage{stage}'] = x
      features[f'stage{stage}_preact'] = preact
    x = layers.conv(self.out_channels[3], 1, dtype=self.dtype, name='head_conv')(x)
    x = nn.relu(layers.batch_norm(train=train, dtype=self.dtype, name='head_bn')(x))
    x = layers.global_avg_pool(x)
    features['pre_logits'] = x
    return layers.classifier(x, self.num_classes, dtype=self.dtype), features
