"""Learnable connectors of the feature methods (their ``aux`` params).

Connectors map student features into the teacher's space (or both into a
common one). They run only in training, so their normalization always uses
batch statistics (:class:`BatchStatNorm`, no running averages), and their
parameters live in ``DistillState.aux_params``: optimised with the student,
never exported with it. Shapes follow RepDistiller's ``models/util.py``.
"""

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from distill_jax.losses import l2_normalize
from distill_jax.models import layers

Array = jax.Array


def _conv(features: int, kernel: Sequence[int], *, strides: int = 1,
          padding: Any = 'SAME', use_bias: bool = True, transpose: bool = False,
          name: str | None = None) -> nn.Module:
  cls = nn.ConvTranspose if transpose else nn.Conv
  return cls(features, tuple(kernel), strides=(strides, strides), padding=padding,
             use_bias=use_bias, name=name,
             kernel_init=nn.with_logical_partitioning(layers.kaiming_normal_fan_out,
                                                      layers.CONV_KERNEL_AXES),
             bias_init=nn.with_logical_partitioning(nn.initializers.zeros,
                                                    layers.CHANNEL_AXES))


class BatchStatNorm(nn.Module):
  """BatchNorm with batch statistics only: ``[..., C] -> [..., C]``."""

  @nn.compact
  def __call__(self, x: Array) -> Array:
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x, axes)
    var = jnp.var(x, axes)
    scale = self.param('scale', nn.with_logical_partitioning(
        nn.initializers.ones, layers.CHANNEL_AXES), (x.shape[-1],))
    bias = self.param('bias', nn.with_logical_partitioning(
        nn.initializers.zeros, layers.CHANNEL_AXES), (x.shape[-1],))
    return (x - mean) * jax.lax.rsqrt(var + 1e-5) * scale + bias


class ConvRegressor(nn.Module):
  """RepDistiller's ``ConvReg``: ``[B, Hs, Ws, Cs] -> [B, Ht, Wt, Ct]``, conv-BN(-ReLU).

  ``Hs == 2 Ht``: 3x3 conv, stride 2; ``2 Hs == Ht``: 4x4 transposed conv,
  stride 2; ``Hs >= Ht``: a valid conv of kernel ``(1 + Hs - Ht, 1 + Ws - Wt)``.

  Attributes:
    target_shape: ``(Ht, Wt, Ct)``.
    relu: end with a ReLU (FitNet) or not (AB's connector).
  """
  target_shape: Sequence[int]
  relu: bool = True

  @staticmethod
  def check(source_shape: Sequence[int], target_shape: Sequence[int]) -> str | None:
    """None if a regressor exists between the (H, W, C) shapes, else why not."""
    hs, ws = source_shape[:2]
    ht, wt = target_shape[:2]
    if hs == 2 * ht or 2 * hs == ht or (hs >= ht and ws >= wt):
      return None
    return ('need a student resolution at least the teacher\'s (or exactly half '
            'of it) for a convolutional regressor')

  @nn.compact
  def __call__(self, x: Array) -> Array:
    ht, wt, ct = self.target_shape
    hs, ws = x.shape[1:3]
    if hs == 2 * ht:
      conv = _conv(ct, (3, 3), strides=2, padding=((1, 1), (1, 1)))
    elif 2 * hs == ht:
      conv = _conv(ct, (4, 4), strides=2, transpose=True)
    else:
      conv = _conv(ct, (1 + hs - ht, 1 + ws - wt), padding='VALID')
    x = BatchStatNorm()(conv(x))
    return nn.relu(x) if self.relu else x


class Embed(nn.Module):
  """Flatten, linear to ``dim`` (``[B, ...] -> [B, dim]``), optional L2 norm.

  RepDistiller's ``Embed`` (CRD, ``normalize=True``) and ``LinearEmbed`` (CC).
  """
  dim: int
  normalize: bool = True

  @nn.compact
  def __call__(self, x: Array) -> Array:
    x = layers.dense(x.reshape(x.shape[0], -1), self.dim,
                     kernel_axes=layers.DENSE_KERNEL_AXES,
                     bias_axes=layers.DENSE_BIAS_AXES)
    return l2_normalize(x) if self.normalize else x


class ConvStack(nn.Module):
  """3x3 convs (or transposed convs), each followed by [BN and] LeakyReLU(0.1).

  FT's paraphraser encoder/decoder (no BN) and translator (BN).
  ``[B, H, W, C] -> [B, H, W, widths[-1]]``.
  """
  widths: Sequence[int]
  batch_norm: bool = False
  transpose: bool = False

  @nn.compact
  def __call__(self, x: Array) -> Array:
    for width in self.widths:
      x = _conv(width, (3, 3), transpose=self.transpose)(x)
      if self.batch_norm:
        x = BatchStatNorm()(x)
      x = nn.leaky_relu(x, 0.1)
    return x


class Paraphraser(nn.Module):
  """FT's teacher autoencoder: ``[B, H, W, C] -> (factor [B, H, W, k C], reconstruction)``."""
  rate: float = 0.5

  @nn.compact
  def __call__(self, x: Array) -> tuple[Array, Array]:
    c = x.shape[-1]
    factor_c = int(c * self.rate)
    factor = ConvStack((c, factor_c, factor_c), name='encoder')(x)
    return factor, ConvStack((factor_c, c, c), transpose=True, name='decoder')(factor)


class VIDRegressor(nn.Module):
  """VID's mean predictor (three 1x1 convs, ReLU between) and per-channel variance.

  ``[B, H, W, Cs] -> (mean [B, H, W, Ct], log_scale [Ct])``; the variance is
  ``softplus(log_scale) + eps``, initialised to ``init_variance``.
  """
  target_channels: int
  init_variance: float = 5.0
  eps: float = 1e-5

  @nn.compact
  def __call__(self, x: Array) -> tuple[Array, Array]:
    c = self.target_channels
    x = nn.relu(_conv(c, (1, 1), use_bias=False)(x))
    x = nn.relu(_conv(c, (1, 1), use_bias=False)(x))
    mean = _conv(c, (1, 1), use_bias=False)(x)
    start = math.log(math.expm1(self.init_variance - self.eps))
    log_scale = self.param('log_scale', nn.with_logical_partitioning(
        nn.initializers.constant(start), layers.CHANNEL_AXES), (c,))
    return mean, log_scale


def init(module: nn.Module, rng: Array, *shapes: Sequence[int]) -> Any:
  """``module``'s params for zero inputs of the given shapes."""
  return module.init(rng, *(jnp.zeros(tuple(s), jnp.float32) for s in shapes))['params']


def apply(module: nn.Module, params: Any, *inputs: Array) -> Any:
  return module.apply({'params': params}, *inputs)
