"""Pieces shared by the model families: layers, initializers, sharding names.

Every parameter carries logical axis names (CONTRIBUTING.md rule 3) through
``nn.with_logical_partitioning``; the mesh rules that turn them into shardings
live in the config. The names used by every model in ``distill_jax.models``:

============================  ==========================================
parameter                     logical axes
============================  ==========================================
hidden ``Dense`` kernel       ``('embed', 'mlp')``
hidden ``Dense`` bias         ``('mlp',)``
classifier kernel             ``('mlp', 'classes')``
classifier bias               ``('classes',)``
conv kernel ``[kh,kw,i,o]``   ``(None, None, 'conv_in', 'conv_out')``
BN scale / bias, conv bias    ``('conv_out',)``
============================  ==========================================

BatchNorm running statistics (``batch_stats``) carry no names (replicated).

Initialization follows the PyTorch reference implementations the CIFAR
distillation papers use (RepDistiller):

* conv kernels: Kaiming normal, ``mode='fan_out'``, ReLU gain, i.e.
  ``N(0, 2 / (kh * kw * out_channels))``;
* BatchNorm: scale 1, bias 0;
* ``Dense`` layers: PyTorch's ``nn.Linear`` default, kernel and bias
  ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` (the bias can be zeroed instead).

Convolutions use PyTorch's symmetric padding (``padding=k // 2``), not
``'SAME'``, so that strided convolutions sample the same pixels as the
reference and PyTorch checkpoints can be imported weight for weight.
"""

import math
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from distill_jax.registry import register

Array = jax.Array
Dtype = Any

CONV_KERNEL_AXES = (None, None, 'conv_in', 'conv_out')
CHANNEL_AXES = ('conv_out',)
DENSE_KERNEL_AXES = ('embed', 'mlp')
DENSE_BIAS_AXES = ('mlp',)
CLASSIFIER_KERNEL_AXES = ('mlp', 'classes')
CLASSIFIER_BIAS_AXES = ('classes',)

# N(0, 2 / fan_out): torch.nn.init.kaiming_normal_(mode='fan_out',
# nonlinearity='relu'). For a [kh, kw, in, out] kernel jax's fan_out is
# kh * kw * out, the same as PyTorch's for an [out, in, kh, kw] weight.
kaiming_normal_fan_out = nn.initializers.variance_scaling(
    2.0, 'fan_out', 'normal')

# U(-1/sqrt(fan_in), 1/sqrt(fan_in)): torch.nn.Linear's default kernel init
# (kaiming_uniform_ with a=sqrt(5)).
torch_linear_kernel = nn.initializers.variance_scaling(
    1.0 / 3.0, 'fan_in', 'uniform')


def torch_linear_bias(fan_in: int) -> Callable[..., Array]:
  """torch.nn.Linear's default bias init: ``U(-b, b)``, b = 1/sqrt(fan_in)."""
  bound = 1.0 / math.sqrt(fan_in)

  def init(key: Array, shape: Sequence[int],
           dtype: Dtype = jnp.float32) -> Array:
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def conv(features: int,
         kernel_size: int,
         *,
         strides: int = 1,
         groups: int = 1,
         use_bias: bool = False,
         dtype: Dtype = jnp.float32,
         name: Optional[str] = None) -> nn.Conv:
  """A square conv with PyTorch padding ``kernel_size // 2``.

  Input ``[B, H, W, C_in]`` -> output ``[B, ceil(H / strides), ..., features]``
  (for odd ``kernel_size``). ``groups`` splits the channels into that many
  groups (``groups=features``: depthwise). Bias-free unless ``use_bias`` (then
  zero-initialized).
  """
  pad = kernel_size // 2
  return nn.Conv(
      features,
      (kernel_size, kernel_size),
      strides=(strides, strides),
      padding=((pad, pad), (pad, pad)),
      feature_group_count=groups,
      use_bias=use_bias,
      dtype=dtype,
      param_dtype=jnp.float32,
      kernel_init=nn.with_logical_partitioning(kaiming_normal_fan_out,
                                               CONV_KERNEL_AXES),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros,
                                             CHANNEL_AXES),
      name=name)


def batch_norm(*,
               train: bool,
               dtype: Dtype = jnp.float32,
               name: Optional[str] = None) -> nn.BatchNorm:
  """PyTorch-equivalent BatchNorm over the last (channel) axis.

  ``momentum=0.9`` here is PyTorch's ``momentum=0.1``. Statistics come from
  the batch (and update ``batch_stats``) when ``train``; otherwise the running
  averages are used.
  """
  return nn.BatchNorm(
      use_running_average=not train,
      momentum=0.9,
      epsilon=1e-5,
      dtype=dtype,
      param_dtype=jnp.float32,
      scale_init=nn.with_logical_partitioning(nn.initializers.ones,
                                              CHANNEL_AXES),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros,
                                             CHANNEL_AXES),
      name=name)


def dense(x: Array,
          features: int,
          *,
          kernel_axes: tuple[Optional[str], ...],
          bias_axes: tuple[Optional[str], ...],
          zero_bias: bool = False,
          dtype: Dtype = jnp.float32,
          name: Optional[str] = None) -> Array:
  """``nn.Dense`` with torch.nn.Linear's default init, applied to ``x``.

  Must be called from inside a compact method (the layer becomes a submodule
  of the calling module).

  Args:
    x: ``[..., D_in]``.
    features: ``D_out``.
    kernel_axes: logical names of the ``[D_in, D_out]`` kernel.
    bias_axes: logical names of the ``[D_out]`` bias.
    zero_bias: initialize the bias to zero instead of PyTorch's uniform.
    dtype: compute dtype; parameters are float32.
    name: submodule name.

  Returns:
    ``[..., D_out]`` in ``dtype``.
  """
  bias_init = (nn.initializers.zeros if zero_bias else
               torch_linear_bias(x.shape[-1]))
  return nn.Dense(
      features,
      dtype=dtype,
      param_dtype=jnp.float32,
      kernel_init=nn.with_logical_partitioning(torch_linear_kernel,
                                               kernel_axes),
      bias_init=nn.with_logical_partitioning(bias_init, bias_axes),
      name=name)(x)


def classifier(x: Array,
               num_classes: int,
               *,
               zero_bias: bool = False,
               dtype: Dtype = jnp.float32) -> Array:
  """The final linear layer ``'fc'``: ``[B, D]`` -> logits ``[B, num_classes]``.

  Computed in ``dtype``, returned in float32 whatever ``dtype`` is.
  """
  logits = dense(x, num_classes, kernel_axes=CLASSIFIER_KERNEL_AXES,
                 bias_axes=CLASSIFIER_BIAS_AXES, zero_bias=zero_bias, dtype=dtype, name='fc')
  return logits.astype(jnp.float32)


def conv_bn(x: Array, features: int, kernel_size: int, *, names: tuple[str, str], train: bool,
            strides: int = 1, groups: int = 1, use_bias: bool = False,
            dtype: Dtype = jnp.float32) -> Array:
  """:func:`conv` then :func:`batch_norm` applied to ``x``, no activation.

  Must be called from inside a compact method: the two layers become the
  submodules ``names = (conv_name, bn_name)`` of the calling module.
  ``[B, H, W, C_in]`` -> ``[B, H / strides, W / strides, features]``.
  """
  x = conv(features, kernel_size, strides=strides, groups=groups, use_bias=use_bias,
           dtype=dtype, name=names[0])(x)
  return batch_norm(train=train, dtype=dtype, name=names[1])(x)


def global_avg_pool(x: Array) -> Array:
  """``[B, H, W, C]`` -> ``[B, C]``, the mean over the spatial axes."""
  return jnp.mean(x, axis=(1, 2))


def pool_and_classify(x: Array, features: dict[str, Array], num_classes: int, *,
                      zero_bias: bool = False,
                      dtype: Dtype = jnp.float32) -> tuple[Array, dict[str, Array]]:
  """The head of the conv nets: average pool, then the ``'fc'`` classifier.

  Takes the last feature map ``[B, H, W, C]`` and the features so far;
  returns float32 logits ``[B, num_classes]`` and the features with
  ``'pre_logits'`` (the pooled ``[B, C]``) added last.
  """
  pooled = global_avg_pool(x)
  logits = classifier(pooled, num_classes, zero_bias=zero_bias, dtype=dtype)
  return logits, {**features, 'pre_logits': pooled}


def image_input(x: Array, model: str, dtype: Dtype) -> Array:
  """``x`` cast to ``dtype``; a clear error unless it is an NHWC batch.

  ``model`` names the caller in the error; ``x`` must be ``[B, H, W, C]``.
  """
  if x.ndim != 4:
    raise ValueError(f'{model} expects images [B, H, W, C] (NHWC), got an input of shape '
                     f'{tuple(x.shape)}.')
  return x.astype(dtype)


def check_depth(model: str, depth: int, extra: int, examples: str) -> None:
  """A clear error unless ``depth = 6n + extra`` with ``n >= 1`` (``examples``: valid ones)."""
  if depth < 6 + extra or (depth - extra) % 6:
    raise ValueError(f'{model} depth must be 6n + {extra} with n >= 1 ({examples}, ...); '
                     f'got depth={depth}.')


def register_variant(name: str, model: type[nn.Module], doc: str,
                     **fixed: Any) -> Callable[..., nn.Module]:
  """Registers ``name`` in ``models``: ``model`` with the ``fixed`` attributes.

  The returned factory, ``factory(*, num_classes, **kwargs)``, builds
  ``model(num_classes=num_classes, **fixed, **kwargs)``; ``doc`` is its
  docstring.
  """

  def factory(*, num_classes: int, **kwargs) -> nn.Module:
    return model(num_classes=num_classes, **fixed, **kwargs)

  factory.__name__ = factory.__qualname__ = name
  factory.__doc__ = doc
  return register('models', name)(factory)
