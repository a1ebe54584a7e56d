"""A small VGG-style CNN for 28x28 (MNIST-like) and 32x32 (CIFAR-like) images.

Meant for quick CPU experiments and tests: a conv-BN-ReLU stem, then one
conv-BN-ReLU stage per entry of ``widths``, each stage after the first
starting with a 2x2 max pool, global average pooling, optional dropout and a
linear classifier. Convs are bias-free 3x3 with Kaiming-normal (fan_out)
initialization, like the CIFAR ResNets.

With the default ``widths=(32, 64, 128)``: 103,466 parameters for 1 input
channel and 10 classes; 104,042 for 3 channels and 10 classes.
"""

import functools
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from distill_jax.models import layers
from distill_jax.models.layers import Array, Dtype
from distill_jax.registry import register


@register('models', 'cnn')
class CNN(nn.Module):
  """Small CNN: stem, ``len(widths)`` conv stages, average pool, classifier.

  Attributes:
    num_classes: size of the classifier output.
    widths: channels of each stage ``(C_1, ..., C_N)``; the stem has ``C_1``.
      Stage ``i`` works at resolution ``H / 2**(i-1)`` (floor division).
    dropout_rate: dropout on the pooled vector before the classifier
      (``'dropout'`` rng, only when ``train``).
    dtype: compute dtype (float32 or bfloat16); parameters are float32.

  Features returned by ``__call__`` for an input ``[B, H, W, C]`` (in
  ``dtype``):

  * ``'stem'``: ``[B, H, W, C_1]``, after the stem conv-BN-ReLU;
  * ``'stage1'``: ``[B, H, W, C_1]``;
  * ``'stage2'``: ``[B, H/2, W/2, C_2]`` ... ``'stageN'``:
    ``[B, H/2**(N-1), W/2**(N-1), C_N]``, each after its ReLU;
  * ``'pre_logits'``: ``[B, C_N]``, average-pooled ``'stageN'`` (before
    dropout).

  E.g. 28x28 inputs with 3 stages: 28x28, 14x14, 7x7; 32x32: 32, 16, 8.
  """
  num_classes: int
  widths: Sequence[int] = (32, 64, 128)
  dropout_rate: float = 0.0
  dtype: Dtype = jnp.float32

  def __post_init__(self):
    if not self.widths:
      raise ValueError('CNN widths must name at least one stage; got ().')
    super().__post_init__()

  @nn.compact
  def __call__(self, x: Array, *, train: bool) -> tuple[Array, dict[str, Array]]:
    """``[B, H, W, C]`` -> ``(logits [B, num_classes], features)``; batch
    statistics (and ``batch_stats`` updates) and dropout if ``train``."""
    conv_bn = functools.partial(layers.conv_bn, kernel_size=3, train=train, dtype=self.dtype)
    x = layers.image_input(x, type(self).__name__, self.dtype)
    x = nn.relu(conv_bn(x, self.widths[0], names=('stem_conv', 'stem_bn')))
    features = {'stem': x}
    for stage, width in enumerate(self.widths, start=1):
      if stage > 1:
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
      x = nn.relu(conv_bn(x, width, names=(f'stage{stage}_conv', f'stage{stage}_bn')))
      features[f'stage{stage}'] = x
    features['pre_logits'] = x = layers.global_avg_pool(x)
    x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
    return layers.classifier(x, self.num_classes, dtype=self.dtype), features
