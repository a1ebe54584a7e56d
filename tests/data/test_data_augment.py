"""Augmentations: shapes, dtypes, determinism, hand-checked crops, sharding invariance."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax.data import augment


def _images(b=16, h=8, w=8, c=3, dtype=jnp.float32):
  return jnp.asarray(np.random.default_rng(0).integers(0, 256, (b, h, w, c)), dtype)


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.uint8])
def test_shapes_dtypes_and_determinism(dtype):
  images = _images(dtype=dtype)
  key = jax.random.key(0)
  for fn in (lambda k, x: augment.random_crop(k, x, padding=2), augment.random_flip):
    out = fn(key, images)
    assert out.shape == images.shape and out.dtype == images.dtype
    np.testing.assert_array_equal(out, fn(key, images))
    assert not np.array_equal(out, fn(jax.random.key(1), images))


# All 9 results of a 2x2 image shifted by up to 1 pixel, written out by hand.
_IMAGE = [[1, 2],
          [3, 4]]
_SHIFTS = [
    [[0, 0], [0, 1]], [[0, 0], [1, 2]], [[0, 0], [2, 0]],
    [[0, 1], [0, 3]], [[1, 2], [3, 4]], [[2, 0], [4, 0]],
    [[0, 3], [0, 0]], [[3, 4], [0, 0]], [[4, 0], [0, 0]],
]


def test_crop_is_a_zero_filled_shift_of_at_most_padding():
  images = jnp.tile(jnp.asarray(_IMAGE, jnp.float32)[None, :, :, None], (256, 1, 1, 1))
  out = np.asarray(augment.random_crop(jax.random.key(0), images, padding=1))[..., 0]
  seen = set()
  for example in out:
    matches = [i for i, shift in enumerate(_SHIFTS) if np.array_equal(example, shift)]
    assert len(matches) == 1, example
    seen.add(matches[0])
  assert seen == set(range(9))  # Every shift in [-1, 1]^2 occurs.


def test_crop_per_example_key_is_split_of_rng():
  images = _images(b=4)
  key = jax.random.key(7)
  out = augment.random_crop(key, images, padding=3)
  for i, example_key in enumerate(jax.random.split(key, 4)):
    dy, dx = np.asarray(jax.random.randint(example_key, (2,), 0, 7))
    padded = np.pad(np.asarray(images[i]), ((3, 3), (3, 3), (0, 0)))
    np.testing.assert_array_equal(out[i], padded[dy:dy + 8, dx:dx + 8])


def test_crop_padding_zero_and_bad_arguments():
  images = _images()
  np.testing.assert_array_equal(augment.random_crop(jax.random.key(0), images, padding=0), images)
  with pytest.raises(ValueError, match='padding'):
    augment.random_crop(jax.random.key(0), images, padding=-1)
  with pytest.raises(ValueError, match=r'\[B, H, W, C\]'):
    augment.random_flip(jax.random.key(0), images[0])


def test_flip_flips_some_examples_left_right():
  images = _images(b=64)
  out = augment.random_flip(jax.random.key(0), images)
  flipped = [bool(np.array_equal(o, x[:, ::-1])) for o, x in zip(out, images)]
  kept = [bool(np.array_equal(o, x)) for o, x in zip(out, images)]
  assert all(f != k for f, k in zip(flipped, kept))
  assert 10 < sum(flipped) < 54


def test_per_example_randomness_does_not_depend_on_sharding():
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:8]), ('data',))
  sharded = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  images = _images(b=32)
  config = {'crop_padding': 4, 'flip': True}
  fn = lambda key, x: augment.augment(key, x, config)
  expected = jax.jit(fn)(jax.random.key(3), images)
  got = jax.jit(fn, in_shardings=(replicated, sharded), out_shardings=sharded)(
      jax.random.key(3), jax.device_put(images, sharded))
  np.testing.assert_array_equal(got, expected)


def test_normalize():
  images = jnp.asarray([[[[0, 255]], [[51, 102]]]], jnp.uint8)  # [1, 2, 1, 2]
  out = augment.normalize(images, mean=(0.5, 0.2), std=(0.5, 0.1))
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(out[0, :, 0], [[-1.0, 8.0], [-0.6, 2.0]], rtol=1e-5)
  with pytest.raises(ValueError, match='per channel'):
    augment.normalize(images, mean=(0.5,), std=(0.5,))


def test_augment_applies_what_config_turns_on():
  images = _images()
  key = jax.random.key(5)
  np.testing.assert_array_equal(augment.augment(key, images, {}), images)
  np.testing.assert_array_equal(augment.augment(key, images, None), images)
  crop_key, flip_key = jax.random.split(key)
  expected = augment.random_flip(flip_key, augment.random_crop(crop_key, images, padding=2))
  got = jax.jit(lambda k, x: augment.augment(k, x, {'crop_padding': 2, 'flip': True}))(key, images)
  np.testing.assert_array_equal(got, expected)
  only_flip = augment.augment(key, images, {'crop_padding': 0, 'flip': True})
  np.testing.assert_array_equal(only_flip, augment.random_flip(flip_key, images))
  with pytest.raises(ValueError, match='crop_pading'):
    augment.augment(key, images, {'crop_pading': 2})
