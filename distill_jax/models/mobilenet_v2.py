"""MobileNetV2 for CIFAR (Sandler et al. 2018), RepDistiller's ``mobile_half``.

Stem 3x3 conv stride 2, seven groups of inverted residual blocks
(expansion ``t``, width ``c``, ``n`` blocks, first stride ``s``)::

  (1, 16, 1, 1) (T, 24, 2, 1) (T, 32, 3, 2) (T, 64, 4, 2)
  (T, 96, 3, 1) (T, 160, 3, 2) (T, 320, 1, 1)

widths times ``width_mult``, then a 1x1 conv to 1280, average pooling and a
linear classifier. ``mobilenetv2`` (``mobile_half``): ``T = 6``,
``width_mult = 0.5``.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from distill_jax.models import layers
from distill_jax.registry import register

Array = jax.Array
Dtype = Any

SETTINGS = ((1, 16, 1, 1), (None, 24, 2, 1), (None, 32, 3, 2), (None, 64, 4, 2),
            (None, 96, 3, 1), (None, 160, 3, 2), (None, 320, 1, 1))
# Feature name after each group (RepDistiller's f1..f4 end after groups 1, 2, 4, 6).
STAGE_ENDS = {1: 'stage1', 2: 'stage2', 4: 'stage3', 6: 'stage4'}


def grouped_conv(features: int, kernel_size: int, *, groups: int, strides: int = 1,
                 dtype: Dtype = jnp.float32, name: str | None = None) -> nn.Conv:
  """Bias-free grouped conv with PyTorch padding ``k // 2`` (``groups=features``:
  depthwise). Shared by MobileNetV2 and the ShuffleNets."""
  pad = kernel_size // 2
  return nn.Conv(features, (kernel_size, kernel_size), strides=(strides, strides),
                 padding=((pad, pad), (pad, pad)), feature_group_count=groups,
                 use_bias=False, dtype=dtype, param_dtype=jnp.float32, name=name,
                 kernel_init=nn.with_logical_partitioning(
                     layers.kaiming_normal_fan_out, layers.CONV_KERNEL_AXES))


class InvertedResidual(nn.Module):
  """1x1 expand-BN-ReLU, 3x3 depthwise-BN-ReLU, 1x1 project-BN (+ identity).

  Returns the block output (no final ReLU: a linear bottleneck).
  """
  features: int
  strides: int
  expansion: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, *, train: bool) -> Array:
    hidden = x.shape[-1] * self.expansion
    y = layers.conv(hidden, 1, dtype=self.dtype, name='expand')(x)
    y = nn.relu(layers.batch_norm(train=train, dtype=self.dtype, name='bn1')(y))
    y = grouped_conv(hidden, 3, groups=hidden, strides=self.strides, dtype=self.dtype,
                     name='depthwise')(y)
    y = nn.relu(layers.batch_norm(train=train, dtype=self.dtype, name='bn2')(y))
    y = layers.conv(self.features, 1, dtype=self.dtype, name='project')(y)
    y = layers.batch_norm(train=train, dtype=self.dtype, name='bn3')(y)
    if self.strides == 1 and x.shape[-1] == self.features:
      return x + y
    return y


@register('models', 'mobilenetv2_cifar')
class MobileNetV2(nn.Module):
  """CIFAR MobileNetV2.

  Attributes:
    num_classes: size of the classifier output.
    expansion: ``T`` of the expanding groups.
    width_mult: channel multiplier of the blocks.
    dtype: compute dtype.

  Features for a 32x32 input, ``w = width_mult`` (blocks are linear
  bottlenecks: stage features are the blocks' outputs, there is no ReLU
  after them, so ``stageN_preact`` equals ``stageN``):

  * ``'stem'``: ``[B, 16, 16, 32w]``;
  * ``'stage1'``: ``[B, 16, 16, 24w]``; ``'stage2'``: ``[B, 8, 8, 32w]``;
    ``'stage3'``: ``[B, 4, 4, 96w]``; ``'stage4'``: ``[B, 2, 2, 320w]``;
  * ``'pre_logits'``: ``[B, 1280]``.
  """
  num_classes: int
  expansion: int = 6
  width_mult: float = 0.5
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, *, train: bool) -> tuple[Array, dict[str, Array]]:
    """``[B, H, W, C]`` -> ``(logits [B, num_classes], features)``."""
    layers.check_image_input(x, type(self).__name__)
    features = {}
    x = x.astype(self.dtype)
    x = layers.conv(int(32 * self.width_mult), 3, strides=2, dtype=self.dtype, name='stem_conv')(x)
    x = nn.relu(layers.batch_norm(train=train, dtype=self.dtype, name='stem_bn')(x))
    features['stem'] = x
    for g, (t, c, n, s) in enumerate(SETTINGS):
      for b in range(n):
        x = InvertedResidual(int(c * self.width_mult), s if b == 0 else 1,
                             t or self.expansion, self.dtype, name=f'group{g}_{b}')(x, train=train)
      if g in STAGE_ENDS:
        features[STAGE_ENDS[g]] = features[STAGE_ENDS[g] + '_preact'] = x
    last = int(1280 * self.width_mult) if self.width_mult > 1.0 else 1280
    x = layers.conv(last, 1, dtype=self.dtype, name='head_conv')(x)
    x = nn.relu(layers.batch_norm(train=train, dtype=self.dtype, name='head_bn')(x))
    x = layers.global_avg_pool(x)
    features['pre_logits'] = x
    return layers.classifier(x, self.num_classes, zero_bias=True, dtype=self.dtype), features


@register('models', 'mobilenetv2')
def mobilenetv2(*, num_classes: int, **kwargs) -> MobileNetV2:
  """RepDistiller's ``mobile_half`` (T=6, width 0.5). ``kwargs``: ``dtype``."""
  return MobileNetV2(num_classes=num_classes, expansion=6, width_mult=0.5, **kwargs)
