"""Multi-layer perceptron on flattened images (Hinton et al. 2015's MNIST nets).

"Distilling the Knowledge in a Neural Network" (Hinton, Vinyals & Dean 2015,
Sec. 3) trains a 784-1200-1200-10 ReLU teacher with dropout (0.2 on the input,
0.5 on the hidden units) and a 784-800-800-10 student without it::

  registry.get('models', 'mlp')(num_classes=10, hidden_sizes=(1200, 1200),
                                dropout_rate=0.5, input_dropout_rate=0.2)
  registry.get('models', 'mlp')(num_classes=10, hidden_sizes=(800, 800))

Parameter counts (784 inputs, 10 classes): teacher 2,395,210; student
1,276,810.
"""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from distill_jax.models import layers
from distill_jax.models.layers import Array, Dtype
from distill_jax.registry import register


@register('models', 'mlp')
class MLP(nn.Module):
  """ReLU MLP: flatten, ``[Dense-ReLU-dropout] x len(hidden_sizes)``, Dense.

  Dense layers use PyTorch's ``nn.Linear`` default initialization.

  Attributes:
    num_classes: size of the classifier output.
    hidden_sizes: widths of the hidden layers, ``(D_1, ..., D_N)``; may be
      empty (a linear classifier).
    dropout_rate: dropout on every hidden layer's output (``'dropout'`` rng,
      only when ``train``).
    input_dropout_rate: dropout on the flattened input.
    dtype: compute dtype (float32 or bfloat16); parameters are float32.

  Features returned by ``__call__`` for an input ``[B, H, W, C]``, ``D_0 =
  H * W * C`` (in ``dtype``):

  * ``'hidden1'`` .. ``'hiddenN'``: ``[B, D_i]``, hidden layer ``i`` after its
    ReLU, before dropout;
  * ``'pre_logits'``: ``[B, D_N]``, the classifier's input before dropout
    (equal to ``'hiddenN'``; the flattened input ``[B, D_0]`` when there are
    no hidden layers).
  """
  num_classes: int
  hidden_sizes: Sequence[int] = (1200, 1200)
  dropout_rate: float = 0.0
  input_dropout_rate: float = 0.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, *, train: bool) -> tuple[Array, dict[str, Array]]:
    """``[B, ...]`` (flattened to ``[B, D_0]``) -> ``(logits [B, num_classes],
    features)``; dropout if ``train``."""
    if x.ndim < 2:
      raise ValueError(f'MLP expects a batch [B, ...] of inputs, got shape {tuple(x.shape)}.')
    features = {}
    x = x.reshape(x.shape[0], -1).astype(self.dtype)
    pre_logits = x
    x = nn.Dropout(self.input_dropout_rate, name='input_dropout')(
        x, deterministic=not train)
    for i, width in enumerate(self.hidden_sizes, start=1):
      x = nn.relu(layers.dense(x, width, kernel_axes=layers.DENSE_KERNEL_AXES,
                               bias_axes=layers.DENSE_BIAS_AXES, dtype=self.dtype,
                               name=f'dense{i}'))
      features[f'hidden{i}'] = pre_logits = x
      x = nn.Dropout(self.dropout_rate, name=f'dropout{i}')(
          x, deterministic=not train)
    features['pre_logits'] = pre_logits
    return layers.classifier(x, self.num_classes, dtype=self.dtype), features
