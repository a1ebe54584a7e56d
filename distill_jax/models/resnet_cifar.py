"""CIFAR ResNets (He et al. 2016, Sec. 4.2) as used by the CRD paper.

The architecture follows RepDistiller's ``models/resnet.py`` (Tian et al.,
"Contrastive Representation Distillation", ICLR 2020), the reference for the
CIFAR-100 distillation tables: a 3x3 stem conv, three stages of ``n``
BasicBlocks (depth ``6n + 2``) with strides 1, 2, 2, global average pooling
and a linear classifier.

Registered models (``registry.get('models', name)(num_classes=..., **kw)``):

============  =====  ===================  =========================
name          depth  filters              params (100 classes)
============  =====  ===================  =========================
resnet8       8      16, 16, 32, 64       0.08M  (83,892)
resnet14      14     16, 16, 32, 64       0.18M  (181,108)
resnet20      20     16, 16, 32, 64       0.28M  (278,324)
resnet32      32     16, 16, 32, 64       0.47M  (472,756)
resnet44      44     16, 16, 32, 64       0.67M  (667,188)
resnet56      56     16, 16, 32, 64       0.86M  (861,620)
resnet110     110    16, 16, 32, 64       1.74M  (1,736,564)
resnet8x4     8      32, 64, 128, 256     1.23M  (1,233,540)
resnet32x4    32     32, 64, 128, 256     7.43M  (7,433,860)
resnet_cifar  any    any (``depth``, ``num_filters`` keywords)
============  =====  ===================  =========================

Parameter counts are trainable parameters (BatchNorm running statistics
excluded), identical to ``sum(p.numel() for p in model.parameters())`` of the
reference PyTorch code; ``tests/models/test_resnet_cifar.py`` checks them.

Submodule names mirror the PyTorch reference (``conv1``, ``bn1``,
``layer{s}_{b}/{conv1,bn1,conv2,bn2,downsample_conv,downsample_bn}``, ``fc``)
so that its checkpoints map one to one (conv weights ``OIHW`` -> ``HWIO``,
linear weights transposed).
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from distill_jax.models import layers
from distill_jax.registry import register

Array = jax.Array
Dtype = Any


class BasicBlock(nn.Module):
  """Post-activation residual block: conv-BN-ReLU-conv-BN, add, ReLU.

  The shortcut is the identity, or a 1x1 strided conv + BN when the stride or
  the channel count changes.

  Attributes:
    features: output channels ``C_out``.
    strides: stride of the first conv and of the projection shortcut.
    dtype: compute dtype.
  """
  features: int
  strides: int = 1
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, *, train: bool) -> tuple[Array, Array]:
    """``[B, H, W, C_in]`` -> ``(out, preact)``, both ``[B, H/s, W/s, C_out]``.

    ``preact`` is the residual sum before the final ReLU, ``out`` after it.
    """
    residual = x
    y = layers.conv(self.features, 3, strides=self.strides, dtype=self.dtype,
                    name='conv1')(x)
    y = layers.batch_norm(train=train, dtype=self.dtype, name='bn1')(y)
    y = nn.relu(y)
    y = layers.conv(self.features, 3, dtype=self.dtype, name='conv2')(y)
    y = layers.batch_norm(train=train, dtype=self.dtype, name='bn2')(y)
    if self.strides != 1 or x.shape[-1] != self.features:
      residual = layers.conv(self.features, 1, strides=self.strides,
                             dtype=self.dtype, name='downsample_conv')(x)
      residual = layers.batch_norm(train=train, dtype=self.dtype,
                                   name='downsample_bn')(residual)
    preact = y + residual
    return nn.relu(preact), preact


@register('models', 'resnet_cifar')
class ResNetCIFAR(nn.Module):
  """CIFAR ResNet of depth ``6n + 2`` with BasicBlocks.

  Attributes:
    num_classes: size of the classifier output.
    depth: ``6n + 2`` (8, 14, 20, 32, 44, 56, 110, ...): ``n`` blocks a stage.
    num_filters: ``(stem, stage1, stage2, stage3)`` channel counts.
    dtype: compute dtype (float32 or bfloat16); parameters are float32.

  Features returned by ``__call__`` for an input ``[B, H, W, C]``, with
  ``(f0, f1, f2, f3) = num_filters`` (in ``dtype``):

  * ``'stem'``: ``[B, H, W, f0]``, after the stem conv-BN-ReLU;
  * ``'stage1'``: ``[B, H, W, f1]``, output of stage 1 (after its last ReLU);
  * ``'stage2'``: ``[B, H/2, W/2, f2]``;
  * ``'stage3'``: ``[B, H/4, W/4, f3]``;
  * ``'stage1_preact'`` .. ``'stage3_preact'``: the same tensors before the
    last block's final ReLU (RepDistiller's ``preact=True`` features);
  * ``'pre_logits'``: ``[B, f3]``, globally average-pooled ``'stage3'``.
  """
  num_classes: int
  depth: int = 20
  num_filters: Sequence[int] = (16, 16, 32, 64)
  dtype: Dtype = jnp.float32

  def __post_init__(self):
    if self.depth < 8 or (self.depth - 2) % 6:
      raise ValueError(
          f'ResNetCIFAR depth must be 6n + 2 with n >= 1 (8, 14, 20, 32, 44, '
          f'56, 110, ...); got depth={self.depth}.')
    if len(self.num_filters) != 4:
      raise ValueError(
          'ResNetCIFAR num_filters must be (stem, stage1, stage2, stage3); '
          f'got {tuple(self.num_filters)}.')
    super().__post_init__()

  @nn.compact
  def __call__(self, x: Array, *,
               train: bool) -> tuple[Array, dict[str, Array]]:
    """Classifies a batch of images.

    Args:
      x: float32 ``[B, H, W, C]``, normalized, NHWC (CIFAR: 32x32x3).
      train: batch statistics (and ``batch_stats`` updates) if True, running
        averages otherwise.

    Returns:
      ``(logits, features)``: float32 logits ``[B, num_classes]`` and the
      feature dict described in the class docstring.
    """
    layers.check_image_input(x, type(self).__name__)
    blocks_per_stage = (self.depth - 2) // 6
    features = {}
    x = x.astype(self.dtype)
    x = layers.conv(self.num_filters[0], 3, dtype=self.dtype, name='conv1')(x)
    x = layers.batch_norm(train=train, dtype=self.dtype, name='bn1')(x)
    x = nn.relu(x)
    features['stem'] = x
    for stage, width in enumerate(self.num_filters[1:], start=1):
      for block in range(blocks_per_stage):
        strides = 2 if stage > 1 and block == 0 else 1
        x, preact = BasicBlock(width, strides=strides, dtype=self.dtype,
                               name=f'layer{stage}_{block}')(x, train=train)
      features[f'stage{stage}'] = x
      features[f'stage{stage}_preact'] = preact
    x = layers.global_avg_pool(x)
    features['pre_logits'] = x
    logits = layers.classifier(x, self.num_classes, dtype=self.dtype,
                               name='fc')
    return logits, features


_SMALL = (16, 16, 32, 64)
_WIDE = (32, 64, 128, 256)


@register('models', 'resnet8')
def resnet8(*, num_classes: int, **kwargs) -> ResNetCIFAR:
  """ResNet-8, filters 16-16-32-64 (CRD student). ``kwargs``: ``dtype``."""
  return ResNetCIFAR(num_classes=num_classes, depth=8, num_filters=_SMALL,
                     **kwargs)


@register('models', 'resnet14')
def resnet14(*, num_classes: int, **kwargs) -> ResNetCIFAR:
  """ResNet-14, filters 16-16-32-64. ``kwargs``: ``dtype``."""
  return ResNetCIFAR(num_classes=num_classes, depth=14, num_filters=_SMALL,
                     **kwargs)


@register('models', 'resnet20')
def resnet20(*, num_classes: int, **kwargs) -> ResNetCIFAR:
  """ResNet-20, filters 16-16-32-64 (CRD student). ``kwargs``: ``dtype``."""
  return ResNetCIFAR(num_classes=num_classes, depth=20, num_filters=_SMALL,
                     **kwargs)


@register('models', 'resnet32')
def resnet32(*, num_classes: int, **kwargs) -> ResNetCIFAR:
  """ResNet-32, filters 16-16-32-64 (CRD student). ``kwargs``: ``dtype``."""
  return ResNetCIFAR(num_classes=num_classes, depth=32, num_filters=_SMALL,
                     **kwargs)


@register('models', 'resnet44')
def resnet44(*, num_classes: int, **kwargs) -> ResNetCIFAR:
  """ResNet-44, filters 16-16-32-64. ``kwargs``: ``dtype``."""
  return ResNetCIFAR(num_classes=num_classes, depth=44, num_filters=_SMALL,
                     **kwargs)


@register('models', 'resnet56')
def resnet56(*, num_classes: int, **kwargs) -> ResNetCIFAR:
  """ResNet-56, filters 16-16-32-64 (CRD teacher). ``kwargs``: ``dtype``."""
  return ResNetCIFAR(num_classes=num_classes, depth=56, num_filters=_SMALL,
                     **kwargs)


@register('models', 'resnet110')
def resnet110(*, num_classes: int, **kwargs) -> ResNetCIFAR:
  """ResNet-110, filters 16-16-32-64 (CRD teacher). ``kwargs``: ``dtype``."""
  return ResNetCIFAR(num_classes=num_classes, depth=110, num_filters=_SMALL,
                     **kwargs)


@register('models', 'resnet8x4')
def resnet8x4(*, num_classes: int, **kwargs) -> ResNetCIFAR:
  """ResNet-8x4, filters 32-64-128-256 (CRD student). ``kwargs``: ``dtype``."""
  return ResNetCIFAR(num_classes=num_classes, depth=8, num_filters=_WIDE,
                     **kwargs)


@register('models', 'resnet32x4')
def resnet32x4(*, num_classes: int, **kwargs) -> ResNetCIFAR:
  """ResNet-32x4, filters 32-64-128-256 (CRD teacher). ``kwargs``: ``dtype``."""
  return ResNetCIFAR(num_classes=num_classes, depth=32, num_filters=_WIDE,
                     **kwargs)
