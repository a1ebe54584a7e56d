"""Image augmentations as pure JAX functions, applied inside the jitted train step.

The trainer draws them from the step rng, so a teacher and a student fed the
same batch see the same pixels. Every example gets its own key,
``jax.random.split(rng, B)[i]``: with JAX's (default) partitionable threefry,
example ``i``'s augmentation does not depend on how the global batch is
sharded over devices or hosts. Call them on the global batch inside ``jit``
(not on per-device shards inside ``shard_map``, where ``B`` would be local).

Apply crop/flip before ``normalize`` (they work on uint8 or float pixels and
keep the dtype), so the crop's padding is black, as in torchvision's
``RandomCrop(padding=...)``::

    x = augment(rng, batch['image'], {'crop_padding': 4, 'flip': True})
    x = normalize(x, spec.mean, spec.std)   # float32 [B, H, W, C]
"""

from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp

AUGMENT_KEYS = ('crop_padding', 'flip')


def checked_options(config: Mapping[str, Any] | None, known: Sequence[str],
                    kind: str) -> dict[str, Any]:
  """``config`` (None: empty) as a dict; a key not in ``known`` is an error."""
  config = dict(config or {})
  unknown = sorted(set(config) - set(known))
  if unknown:
    raise ValueError(f'Unknown {kind} option(s) {unknown}; known: {list(known)}.')
  return config


def _check_images(images: jax.Array, fn: str) -> None:
  if images.ndim != 4:
    raise ValueError(f'{fn} expects images [B, H, W, C], got shape {images.shape}.')


def random_crop(rng: jax.Array, images: jax.Array, *, padding: int) -> jax.Array:
  """Zero-pads by ``padding`` and crops back: a random shift of up to ``padding`` px.

  Example ``i`` is shifted by ``(dy, dx)``, each uniform in
  ``[-padding, padding]``, drawn from ``jax.random.split(rng, B)[i]``; pixels
  shifted in from outside are 0. ``padding=2`` is the +-2 px MNIST jitter of
  Hinton et al. (2015), ``padding=4`` the CIFAR pad-and-crop.

  Args:
    rng: PRNG key.
    images: ``[B, H, W, C]``, any dtype.
    padding: maximum shift in pixels, >= 0 (0 returns ``images``).

  Returns:
    ``[B, H, W, C]``, same dtype.
  """
  _check_images(images, 'random_crop')
  if padding < 0:
    raise ValueError(f'padding must be >= 0, got {padding}.')
  if padding == 0:
    return images
  b, h, w, c = images.shape
  keys = jax.random.split(rng, b)
  corners = jax.vmap(lambda k: jax.random.randint(k, (2,), 0, 2 * padding + 1))(keys)
  padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))

  def crop(image, corner):
    return jax.lax.dynamic_slice(image, (corner[0], corner[1], 0), (h, w, c))

  return jax.vmap(crop)(padded, corners)


def random_flip(rng: jax.Array, images: jax.Array) -> jax.Array:
  """Flips each example left-right with probability 1/2 (key ``split(rng, B)[i]``).

  Args:
    rng: PRNG key.
    images: ``[B, H, W, C]``, any dtype.

  Returns:
    ``[B, H, W, C]``, same dtype.
  """
  _check_images(images, 'random_flip')
  keys = jax.random.split(rng, images.shape[0])
  flip = jax.vmap(jax.random.bernoulli)(keys)
  return jnp.where(flip[:, None, None, None], images[:, :, ::-1, :], images)


def normalize(images: jax.Array, mean: Sequence[float], std: Sequence[float]) -> jax.Array:
  """``(images / 255 - mean) / std`` in float32.

  Args:
    images: ``[..., C]`` pixels in 0..255 (uint8, or float after augmentation).
    mean: ``[C]`` per-channel mean of pixels in [0, 1] (``DatasetSpec.mean``).
    std: ``[C]`` per-channel standard deviation, same units.

  Returns:
    float32 ``[..., C]``.
  """
  mean = jnp.asarray(mean, jnp.float32)
  std = jnp.asarray(std, jnp.float32)
  if mean.shape != (images.shape[-1],) or std.shape != mean.shape:
    raise ValueError(
        f'normalize: mean {mean.shape} and std {std.shape} must have one entry '
        f'per channel of images {images.shape}.')
  return (images.astype(jnp.float32) / 255.0 - mean) / std


def augment(rng: jax.Array, images: jax.Array, config: Mapping[str, Any] | None) -> jax.Array:
  """Applies what ``config`` turns on: crop (``crop_padding: int``), then flip (``flip: bool``).

  Args:
    rng: PRNG key (e.g. the step rng folded for augmentation).
    images: ``[B, H, W, C]``, any dtype.
    config: dict or ConfigDict with optional keys ``crop_padding`` (default 0,
      off) and ``flip`` (default False); None or empty means no augmentation.
      Other keys are an error (a typo would silently turn augmentation off).

  Returns:
    ``[B, H, W, C]``, same dtype.
  """
  config = checked_options(config, AUGMENT_KEYS, 'augmentation')
  crop_rng, flip_rng = jax.random.split(rng)
  padding = int(config.get('crop_padding', 0) or 0)
  if padding:
    images = random_crop(crop_rng, images, padding=padding)
  if config.get('flip', False):
    images = random_flip(flip_rng, images)
  return images
