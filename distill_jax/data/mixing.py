"""Mixup and CutMix inside the jitted step, drawn from the step rng.

Each batch is mixed with itself rolled by one example (example ``i`` with
example ``i - 1``), with one mixing weight per batch: ``lam ~ Beta(a, a)``.
Rolling (rather than a random permutation) keeps the partner of every example
independent of how the batch is sharded, and costs one collective permute.

The mixed batch keeps ``label`` (int ``[B]``, weight ``mix_weight``) and adds
``mix_label`` (the partner's label) and ``mix_weight`` (float32 ``[B]``); the
cross-entropy of ``methods.ce.label_cross_entropy`` reads them. A teacher fed
the mixed pixels gives soft targets for the mixed image, which is what
"function matching" (Beyer et al., 2022) distils.
"""

from typing import Any, Mapping

import jax
import jax.numpy as jnp

from distill_jax.data import augment

MIXING_KEYS = ('mixup_alpha', 'cutmix_alpha')


def mixup(rng: jax.Array, images: jax.Array, *, alpha: float
          ) -> tuple[jax.Array, jax.Array]:
  """``lam * x + (1 - lam) * roll(x, 1)`` with ``lam ~ Beta(alpha, alpha)``.

  Args:
    rng: PRNG key.
    images: float ``[B, H, W, C]``.
    alpha: Beta parameter, > 0.

  Returns:
    The mixed images (float32 ``[B, H, W, C]``) and ``lam`` (float32 scalar,
    the weight of each example's own label).
  """
  lam = jax.random.beta(rng, alpha, alpha).astype(jnp.float32)
  images = images.astype(jnp.float32)
  return lam * images + (1.0 - lam) * jnp.roll(images, 1, axis=0), lam


def cutmix(rng: jax.Array, images: jax.Array, *, alpha: float
           ) -> tuple[jax.Array, jax.Array]:
  """Pastes one box of ``roll(x, 1)`` into every image (Yun et al., 2019).

  The box has area ``1 - lam`` of the image (``lam ~ Beta(alpha, alpha)``),
  a uniform random centre, and is clipped at the borders; the returned weight
  is recomputed from the clipped box's true area.

  Args:
    rng: PRNG key.
    images: ``[B, H, W, C]``.
    alpha: Beta parameter, > 0.

  Returns:
    The mixed images (float32 ``[B, H, W, C]``) and the weight of each
    example's own label (float32 scalar: the fraction of its own pixels).
  """
  lam_rng, y_rng, x_rng = jax.random.split(rng, 3)
  _, h, w, _ = images.shape
  lam = jax.random.beta(lam_rng, alpha, alpha)
  cut = jnp.sqrt(1.0 - lam)
  cy = jax.random.uniform(y_rng) * h
  cx = jax.random.uniform(x_rng) * w
  y0, y1 = jnp.clip(cy - cut * h / 2, 0, h), jnp.clip(cy + cut * h / 2, 0, h)
  x0, x1 = jnp.clip(cx - cut * w / 2, 0, w), jnp.clip(cx + cut * w / 2, 0, w)
  rows = jnp.arange(h)[:, None] + 0.5
  cols = jnp.arange(w)[None, :] + 0.5
  box = (rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1)   # [H, W]
  images = images.astype(jnp.float32)
  mixed = jnp.where(box[None, :, :, None], jnp.roll(images, 1, axis=0), images)
  return mixed, 1.0 - box.mean(dtype=jnp.float32)


def alphas(config: Mapping[str, Any] | None) -> tuple[float, float]:
  """``(mixup_alpha, cutmix_alpha)`` of a mixing config, checked (>= 0, known keys)."""
  config = augment.checked_options(config, MIXING_KEYS, 'mixing')
  values = tuple(config.get(key, 0.0) for key in MIXING_KEYS)
  for key, value in zip(MIXING_KEYS, values):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
      raise ValueError(f'data.mixing.{key} must be a number >= 0 (0 = off), got {value!r}.')
  return float(values[0]), float(values[1])


def mix(rng: jax.Array, batch: dict[str, jax.Array],
        config: Mapping[str, Any] | None) -> dict[str, jax.Array]:
  """Mixes ``batch['image']`` as ``config`` asks; a no-op when both alphas are 0.

  With both ``mixup_alpha`` and ``cutmix_alpha`` > 0, each batch uses one of
  the two, chosen with probability 1/2 (as timm does).

  Args:
    rng: PRNG key.
    batch: ``image`` ``[B, H, W, C]`` (pixels, before normalisation) and
      ``label`` int32 ``[B]``.
    config: dict or ConfigDict with ``mixup_alpha`` and ``cutmix_alpha``
      (>= 0; 0 = off). Other keys are an error.

  Returns:
    ``batch`` with the mixed ``image`` and ``mix_label``/``mix_weight`` added.
  """
  mixup_alpha, cutmix_alpha = alphas(config)
  if not (mixup_alpha or cutmix_alpha):
    return batch
  choice_rng, mixup_rng, cutmix_rng = jax.random.split(rng, 3)
  images = batch['image']
  if mixup_alpha and cutmix_alpha:
    use_cutmix = jax.random.bernoulli(choice_rng)
    mixed_a, lam_a = mixup(mixup_rng, images, alpha=mixup_alpha)
    mixed_b, lam_b = cutmix(cutmix_rng, images, alpha=cutmix_alpha)
    mixed, lam = jnp.where(use_cutmix, mixed_b, mixed_a), jnp.where(use_cutmix, lam_b, lam_a)
  elif mixup_alpha:
    mixed, lam = mixup(mixup_rng, images, alpha=mixup_alpha)
  else:
    mixed, lam = cutmix(cutmix_rng, images, alpha=cutmix_alpha)
  labels = batch['label']
  return {**batch, 'image': mixed, 'mix_label': jnp.roll(labels, 1, axis=0),
          'mix_weight': jnp.full(labels.shape, lam, jnp.float32)}
