"""Mixup / CutMix in the step: the mixed pixels, labels and weights."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from distill_jax.data import mixing
from distill_jax.methods.ce import label_cross_entropy


def _batch():
  images = jnp.arange(4 * 4 * 4 * 1, dtype=jnp.float32).reshape(4, 4, 4, 1)
  return {'image': images, 'label': jnp.asarray([0, 1, 2, 3])}


def test_mixup_mixes_each_example_with_the_previous_one():
  batch = _batch()
  mixed = mixing.mix(jax.random.PRNGKey(0), batch, {'mixup_alpha': 0.4})
  lam = mixed['mix_weight'][0]
  expected = lam * batch['image'] + (1 - lam) * jnp.roll(batch['image'], 1, axis=0)
  np.testing.assert_allclose(mixed['image'], expected, rtol=1e-6)
  np.testing.assert_array_equal(mixed['mix_label'], [3, 0, 1, 2])
  assert 0.0 <= lam <= 1.0 and np.all(mixed['mix_weight'] == lam)


def test_cutmix_weight_is_the_share_of_own_pixels():
  batch = _batch()
  for seed in range(5):
    mixed = mixing.mix(jax.random.PRNGKey(seed), batch, {'cutmix_alpha': 1.0})
    own = np.mean(np.asarray(mixed['image'] == batch['image'])[1:])   # examples differ pixelwise
    np.testing.assert_allclose(mixed['mix_weight'][0], own, atol=1e-6)


def test_off_is_the_identity_and_bad_options_are_refused():
  batch = _batch()
  assert mixing.mix(jax.random.PRNGKey(0), batch, {}) is batch
  assert mixing.mix(jax.random.PRNGKey(0), batch, {'mixup_alpha': 0.0}) is batch
  with pytest.raises(ValueError, match='Unknown mixing option'):
    mixing.mix(jax.random.PRNGKey(0), batch, {'mixup': 1.0})
  with pytest.raises(ValueError, match='>= 0'):
    mixing.alphas({'cutmix_alpha': -1.0})


def test_mixed_cross_entropy_is_the_weighted_sum_of_both_labels():
  logits = jnp.asarray(np.random.default_rng(0).normal(size=(4, 5)), jnp.float32)
  batch = {'label': jnp.asarray([0, 1, 2, 3]), 'mix_label': jnp.asarray([3, 0, 1, 2]),
           'mix_weight': jnp.full((4,), 0.3)}
  ce = optax.softmax_cross_entropy_with_integer_labels
  expected = (0.3 * ce(logits, batch['label']) + 0.7 * ce(logits, batch['mix_label'])).mean()
  np.testing.assert_allclose(label_cross_entropy(logits, batch), expected, rtol=1e-6)
