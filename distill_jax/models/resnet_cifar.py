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

import functools
from typing import Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from distill_jax.models import layers
from distill_jax.models.layers import Array, Dtype
from distill_jax.registry import register


def residual_add(y: Array, x: Array, strides: int, *, train: bool,
                 dtype: Dtype) -> tuple[Array, Array]:
  """Ends a post-activation ResNet block: ``(ReLU(preact), preact)``.

  ``preact = y + shortcut(x)`` for the residual branch ``y`` ``[B, H/s, W/s,
  C_out]`` and the block input ``x`` ``[B, H, W, C_in]``. The shortcut is ``x``
  itself when ``strides == 1`` and ``C_in == C_out``, else a strided 1x1 conv +
  BN (submodules ``downsample_conv``, ``downsample_bn`` of the calling module).
  """
  shortcut = x
  if strides != 1 or x.shape[-1] != y.shape[-1]:
    shortcut = layers.conv_bn(x, y.shape[-1], 1, names=('downsample_conv', 'downsample_bn'),
                              strides=strides, train=train, dtype=dtype)
  preact = y + shortcut
  return nn.relu(preact), preact


def resnet_forward(x: Array, *, block: Callable[..., nn.Module], stem_width: int,
                   widths: Sequence[int], num_blocks: Sequence[int], num_classes: int,
                   train: bool, dtype: Dtype) -> tuple[Array, dict[str, Array]]:
  """The forward pass of the CIFAR ResNets, called from a compact method.

  A 3x3 stem conv-BN-ReLU (``conv1``, ``bn1``) to ``stem_width``; stage ``s``
  is ``num_blocks[s - 1]`` blocks ``layer{s}_{b} = block(widths[s - 1],
  strides, dtype)`` returning ``(out, preact)``, the first block of stages 2..
  with stride 2; then :func:`layers.pool_and_classify`.

  Args:
    x: ``[B, H, W, C]`` in ``dtype``.

  Returns:
    float32 logits ``[B, num_classes]`` and the features ``'stem'``,
    ``'stage{s}'`` (a stage's output), ``'stage{s}_preact'`` (its last
    block's ``preact``) and ``'pre_logits'``.
  """
  x = nn.relu(layers.conv_bn(x, stem_width, 3, names=('conv1', 'bn1'), train=train,
                             dtype=dtype))
  features = {'stem': x}
  for stage, (width, blocks) in enumerate(zip(widths, num_blocks), start=1):
    for b in range(blocks):
      x, preact = block(width, 2 if stage > 1 and b == 0 else 1, dtype,
                        name=f'layer{stage}_{b}')(x, train=train)
    features[f'stage{stage}'], features[f'stage{stage}_preact'] = x, preact
  return layers.pool_and_classify(x, features, num_classes, dtype=dtype)


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
    conv_bn = functools.partial(layers.conv_bn, features=self.features, kernel_size=3,
                                train=train, dtype=self.dtype)
    y = nn.relu(conv_bn(x, names=('conv1', 'bn1'), strides=self.strides))
    y = conv_bn(y, names=('conv2', 'bn2'))
    return residual_add(y, x, self.strides, train=train, dtype=self.dtype)


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
    layers.check_depth('ResNetCIFAR', self.depth, 2, '8, 14, 20, 32, 44, 56, 110')
    if len(self.num_filters) != 4:
      raise ValueError(
          'ResNetCIFAR num_filters must be (stem, stage1, stage2, stage3); '
          f'got {tuple(self.num_filters)}.')
    super().__post_init__()

  @nn.compact
  def __call__(self, x: Array, *, train: bool) -> tuple[Array, dict[str, Array]]:
    """``[B, H, W, C]`` -> ``(logits [B, num_classes], features)``; batch
    statistics (and ``batch_stats`` updates) if ``train``."""
    return resnet_forward(layers.image_input(x, type(self).__name__, self.dtype),
                          block=BasicBlock, stem_width=self.num_filters[0],
                          widths=self.num_filters[1:], num_blocks=((self.depth - 2) // 6,) * 3,
                          num_classes=self.num_classes, train=train, dtype=self.dtype)


_SMALL = (16, 16, 32, 64)
_WIDE = (32, 64, 128, 256)


def _variant(name: str, depth: int, num_filters: Sequence[int], doc: str):
  """Registers ``ResNetCIFAR(depth=depth, num_filters=num_filters)`` as ``name``."""
  return layers.register_variant(name, ResNetCIFAR, doc, depth=depth, num_filters=num_filters)


resnet8 = _variant('resnet8', 8, _SMALL, 'ResNet-8, filters 16-16-32-64 (CRD student).')
resnet14 = _variant('resnet14', 14, _SMALL, 'ResNet-14, filters 16-16-32-64.')
resnet20 = _variant('resnet20', 20, _SMALL, 'ResNet-20, filters 16-16-32-64 (CRD student).')
resnet32 = _variant('resnet32', 32, _SMALL, 'ResNet-32, filters 16-16-32-64 (CRD student).')
resnet44 = _variant('resnet44', 44, _SMALL, 'ResNet-44, filters 16-16-32-64.')
resnet56 = _variant('resnet56', 56, _SMALL, 'ResNet-56, filters 16-16-32-64 (CRD teacher).')
resnet110 = _variant('resnet110', 110, _SMALL, 'ResNet-110, filters 16-16-32-64 (CRD teacher).')
resnet8x4 = _variant('resnet8x4', 8, _WIDE, 'ResNet-8x4, filters 32-64-128-256 (CRD student).')
resnet32x4 = _variant('resnet32x4', 32, _WIDE, 'ResNet-32x4, filters 32-64-128-256 (CRD teacher).')
