"""Wide ResNets, WRN-d-w (Zagoruyko & Komodakis 2016), pre-activation blocks.

The architecture follows the WRN paper and RepDistiller's ``models/wrn.py``
(the CRD paper's reference code): a 3x3 stem conv to 16 channels, three
stages of ``n = (d - 4) / 6`` pre-activation blocks with ``16w, 32w, 64w``
channels and strides 1, 2, 2, a final BN-ReLU, global average pooling and a
linear classifier. A block is ``BN-ReLU-conv3x3-BN-ReLU-[dropout]-conv3x3``
plus a shortcut: the identity when the shape is kept, otherwise a strided 1x1
conv of the activated input (no BN on the shortcut, as in the reference).

Registered models (``registry.get('models', name)(num_classes=..., **kw)``):

===========  =====  ===========  ======================
name         depth  widen (w)    params (100 classes)
===========  =====  ===========  ======================
wrn_16_1     16     1            0.18M  (180,916)
wrn_16_2     16     2            0.70M  (703,284)
wrn_40_1     40     1            0.57M  (569,780)
wrn_40_2     40     2            2.26M  (2,255,156)
wide_resnet  any    any          (``depth``, ``widen_factor`` keywords)
===========  =====  ===========  ======================

All accept ``dropout_rate`` (default 0, as in the CRD experiments) and
``dtype``. Parameter counts are trainable parameters, identical to the
reference PyTorch code's; ``tests/models/test_wide_resnet.py`` checks them.

Submodule names mirror the reference (``conv1``,
``block{s}_{b}/{bn1,conv1,bn2,conv2,shortcut_conv}``, ``bn1``, ``fc``).
"""

import flax.linen as nn
import jax.numpy as jnp

from distill_jax.models import layers
from distill_jax.models.layers import Array, Dtype
from distill_jax.registry import register


class PreActBlock(nn.Module):
  """WRN basic block, pre-activation, with optional dropout between the convs.

  Attributes:
    features: output channels ``C_out``.
    strides: stride of the first conv and of the projection shortcut.
    dropout_rate: dropout after the second BN-ReLU (``'dropout'`` rng).
    dtype: compute dtype.
  """
  features: int
  strides: int = 1
  dropout_rate: float = 0.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, *, train: bool) -> tuple[Array, Array]:
    """``[B, H, W, C_in]`` -> ``(out, bn1)``.

    ``out`` is ``[B, H/s, W/s, C_out]``. ``bn1``, ``[B, H, W, C_in]``, is the
    block's first BatchNorm output before its ReLU: the pre-activation view
    of the previous stage's output.
    """
    normed = layers.batch_norm(train=train, dtype=self.dtype, name='bn1')(x)
    activated = nn.relu(normed)
    shortcut = x
    if self.strides != 1 or x.shape[-1] != self.features:
      shortcut = layers.conv(self.features, 1, strides=self.strides, dtype=self.dtype,
                             name='shortcut_conv')(activated)
    y = nn.relu(layers.conv_bn(activated, self.features, 3, names=('conv1', 'bn2'),
                               strides=self.strides, train=train, dtype=self.dtype))
    y = nn.Dropout(self.dropout_rate)(y, deterministic=not train)
    y = layers.conv(self.features, 3, dtype=self.dtype, name='conv2')(y)
    return shortcut + y, normed


@register('models', 'wide_resnet')
class WideResNet(nn.Module):
  """WRN-``depth``-``widen_factor``.

  Attributes:
    num_classes: size of the classifier output.
    depth: ``6n + 4`` (10, 16, 22, 28, 40, ...): ``n`` blocks a stage.
    widen_factor: ``w``; stage widths are ``16w, 32w, 64w``.
    dropout_rate: dropout inside every block, active only when ``train``.
    dtype: compute dtype (float32 or bfloat16); parameters are float32.

  Features returned by ``__call__`` for an input ``[B, H, W, C]``, with
  ``w = widen_factor`` (in ``dtype``). They are RepDistiller's WRN features:
  since the blocks are pre-activation, a stage ends with a residual sum, not a
  ReLU, and the stage features are those sums.

  * ``'stem'``: ``[B, H, W, 16]``, the stem conv output (no BN/ReLU follows
    it before the first block);
  * ``'stage1'``: ``[B, H, W, 16w]``, output of stage 1 (residual sum);
  * ``'stage2'``: ``[B, H/2, W/2, 32w]``;
  * ``'stage3'``: ``[B, H/4, W/4, 64w]``;
  * ``'stage1_preact'`` .. ``'stage3_preact'``: the same shapes, each stage
    output after the BatchNorm that follows it (the next stage's first BN, or
    the final BN), before the ReLU (RepDistiller's ``preact=True`` features);
  * ``'pre_logits'``: ``[B, 64w]``, average-pooled ``ReLU(BN(stage3))``.
  """
  num_classes: int
  depth: int = 16
  widen_factor: int = 1
  dropout_rate: float = 0.0
  dtype: Dtype = jnp.float32

  def __post_init__(self):
    layers.check_depth('WideResNet', self.depth, 4, '10, 16, 22, 28, 40')
    if self.widen_factor < 1:
      raise ValueError(
          f'WideResNet widen_factor must be >= 1; got {self.widen_factor}.')
    super().__post_init__()

  @nn.compact
  def __call__(self, x: Array, *, train: bool) -> tuple[Array, dict[str, Array]]:
    """``[B, H, W, C]`` -> ``(logits [B, num_classes], features)``; batch
    statistics (and ``batch_stats`` updates) and dropout if ``train``."""
    x = layers.image_input(x, type(self).__name__, self.dtype)
    x = layers.conv(16, 3, dtype=self.dtype, name='conv1')(x)
    features = {'stem': x}
    widths = [16 * self.widen_factor * 2**i for i in range(3)]
    for stage, width in enumerate(widths, start=1):
      for block in range((self.depth - 4) // 6):
        x, normed = PreActBlock(
            width,
            strides=2 if stage > 1 and block == 0 else 1,
            dropout_rate=self.dropout_rate,
            dtype=self.dtype,
            name=f'block{stage}_{block}')(x, train=train)
        if stage > 1 and block == 0:
          features[f'stage{stage - 1}_preact'] = normed
      features[f'stage{stage}'] = x
    x = layers.batch_norm(train=train, dtype=self.dtype, name='bn1')(x)
    features['stage3_preact'] = x
    return layers.pool_and_classify(nn.relu(x), features, self.num_classes, zero_bias=True,
                                    dtype=self.dtype)


wrn_16_1 = layers.register_variant('wrn_16_1', WideResNet, 'WRN-16-1 (CRD student).',
                                   depth=16, widen_factor=1)
wrn_16_2 = layers.register_variant('wrn_16_2', WideResNet, 'WRN-16-2 (CRD student).',
                                   depth=16, widen_factor=2)
wrn_40_1 = layers.register_variant('wrn_40_1', WideResNet, 'WRN-40-1 (CRD student).',
                                   depth=40, widen_factor=1)
wrn_40_2 = layers.register_variant('wrn_40_2', WideResNet, 'WRN-40-2 (CRD teacher).',
                                   depth=40, widen_factor=2)
