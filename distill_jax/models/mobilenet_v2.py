"""MobileNetV2 for CIFAR (Sandler et al. 2018), RepDistiller's ``mobile_half``.

Stem 3x3 conv stride 2, seven groups of inverted residual blocks
(expansion ``t``, width ``c``, ``n`` blocks, first stride ``s``)::

  (1, 16, 1, 1) (T, 24, 2, 1) (T, 32, 3, 2) (T, 64, 4, 2)
  (T, 96, 3, 1) (T, 160, 3, 2) (T, 320, 1, 1)

widths times ``width_mult``, then a 1x1 conv to 1280, average pooling and a
linear classifier. ``mobilenetv2`` (``mobile_half``): ``T = 6``,
``width_mult = 0.5``.
"""

import functools

import flax.linen as nn
import jax.numpy as jnp

from distill_jax.models import layers
from distill_jax.models.layers import Array, Dtype
from distill_jax.registry import register

SETTINGS = ((1, 16, 1, 1), (None, 24, 2, 1), (None, 32, 3, 2), (None, 64, 4, 2),
            (None, 96, 3, 1), (None, 160, 3, 2), (None, 320, 1, 1))
# Feature name after each group (RepDistiller's f1..f4 end after groups 1, 2, 4, 6).
STAGE_ENDS = {1: 'stage1', 2: 'stage2', 4: 'stage3', 6: 'stage4'}


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
    conv_bn = functools.partial(layers.conv_bn, train=train, dtype=self.dtype)
    hidden = x.shape[-1] * self.expansion
    y = nn.relu(conv_bn(x, hidden, 1, names=('expand', 'bn1')))
    y = nn.relu(conv_bn(y, hidden, 3, names=('depthwise', 'bn2'), strides=self.strides,
                        groups=hidden))
    y = conv_bn(y, self.features, 1, names=('project', 'bn3'))
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
    conv_bn = functools.partial(layers.conv_bn, train=train, dtype=self.dtype)
    x = layers.image_input(x, type(self).__name__, self.dtype)
    x = nn.relu(conv_bn(x, int(32 * self.width_mult), 3, names=('stem_conv', 'stem_bn'),
                        strides=2))
    features = {'stem': x}
    for g, (t, c, n, s) in enumerate(SETTINGS):
      for b in range(n):
        x = InvertedResidual(int(c * self.width_mult), s if b == 0 else 1,
                             t or self.expansion, self.dtype, name=f'group{g}_{b}')(x, train=train)
      if g in STAGE_ENDS:
        features[STAGE_ENDS[g]] = features[STAGE_ENDS[g] + '_preact'] = x
    last = int(1280 * self.width_mult) if self.width_mult > 1.0 else 1280
    x = nn.relu(conv_bn(x, last, 1, names=('head_conv', 'head_bn')))
    return layers.pool_and_classify(x, features, self.num_classes, zero_bias=True,
                                    dtype=self.dtype)


mobilenetv2 = layers.register_variant('mobilenetv2', MobileNetV2,
                                      "RepDistiller's ``mobile_half`` (T=6, width 0.5).",
                                      expansion=6, width_mult=0.5)
