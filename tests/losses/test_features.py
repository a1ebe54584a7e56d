"""Feature kernels: hand-computed values and the invariants of their definitions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax import losses


def _map(values, channels=1):
  """``[1, H, W, C]`` from a nested list ``[H][W]`` (or ``[H][W][C]``)."""
  x = jnp.asarray(values, jnp.float32)
  return x.reshape(1, x.shape[0], x.shape[1], channels)


def test_hint_mse_hand_computed():
  s = jnp.array([[1.0, 2.0], [0.0, 0.0]])
  t = jnp.array([[0.0, 0.0], [0.0, 2.0]])
  np.testing.assert_allclose(losses.hint_mse(s, t), [2.5, 2.0])


def test_match_spatial_pools_the_larger_map():
  big = jnp.arange(16.0).reshape(1, 4, 4, 1)
  small = jnp.zeros((1, 2, 2, 3))
  s, t = losses.match_spatial(big, small)
  np.testing.assert_allclose(s[0, :, :, 0], [[2.5, 4.5], [10.5, 12.5]])
  assert t.shape == (1, 2, 2, 3)
  with pytest.raises(ValueError, match='integer multiple'):
    losses.match_spatial(jnp.zeros((1, 3, 3, 1)), jnp.zeros((1, 2, 2, 1)))


def test_attention_transfer_hand_computed():
  s = _map([[1.0, 0.0]])
  t = _map([[0.0, 2.0]])
  # at(s) = [1, 0], at(t) = [0, 1]: mean of squared differences = 1.
  np.testing.assert_allclose(losses.attention_transfer(s, t), [1.0])
  # Scaling a map or adding channels with the same attention changes nothing.
  np.testing.assert_allclose(losses.attention_transfer(3 * s, jnp.concatenate([s, s], -1)), [0.0],
                             atol=1e-7)


def test_nst_is_an_mmd():
  rng = np.random.default_rng(0)
  s = jnp.asarray(rng.normal(size=(2, 2, 2, 3)), jnp.float32)
  np.testing.assert_allclose(losses.neuron_selectivity_mmd(s, s), [0.0, 0.0], atol=1e-6)
  # One channel each, [1, 0] vs [0, 1]: k(t,t)=1, k(s,s)=1, k(s,t)=0 -> 2.
  np.testing.assert_allclose(losses.neuron_selectivity_mmd(_map([[1.0, 0.0]]), _map([[0.0, 5.0]])),
                             [2.0])
  assert (losses.neuron_selectivity_mmd(s, s[::-1]) >= 0).all()


def test_factor_transfer_hand_computed():
  s = jnp.array([[3.0, 4.0]])
  t = jnp.array([[1.0, 0.0]])
  # normalized: [0.6, 0.8] vs [1, 0] -> L1 mean (0.4 + 0.8) / 2.
  np.testing.assert_allclose(losses.factor_transfer(s, t), [0.6], rtol=1e-6)
  np.testing.assert_allclose(losses.factor_transfer(s, t, p=2), [(0.16 + 0.64) / 2], rtol=1e-6)


def test_fsp_matrix_and_distance():
  bottom = _map([[1.0, 2.0]])
  top = _map([[3.0, 4.0]])
  np.testing.assert_allclose(losses.fsp_matrix(bottom, top), [[[5.5]]])  # (3 + 8) / 2
  np.testing.assert_allclose(losses.fsp_distance((bottom, top), (bottom, 2 * top)), [5.5**2])
  with pytest.raises(ValueError, match='channels must match'):
    losses.fsp_distance((bottom, top), (bottom, jnp.zeros((1, 1, 2, 2))))


def test_activation_boundary_hand_computed():
  s = jnp.array([[0.5, -2.0, 0.5, 2.0]])
  t = jnp.array([[-1.0, -1.0, 1.0, 1.0]])
  # off & s > -1: (0.5 + 1)^2; off & s <= -1: 0; on & s <= 1: (0.5 - 1)^2; on & s > 1: 0.
  np.testing.assert_allclose(losses.activation_boundary(s, t), [2.25 + 0.25])


def test_vid_hand_computed():
  mean = jnp.zeros((1, 1, 1, 1))
  target = jnp.ones((1, 1, 1, 1))
  log_scale = jnp.array([jnp.log(jnp.expm1(2.0))])  # softplus -> 2
  np.testing.assert_allclose(losses.variational_information(mean, target, log_scale, eps=0.0),
                             [0.5 * (0.5 + np.log(2.0))], rtol=1e-5)


@pytest.mark.parametrize('kernel', [losses.attention_transfer, losses.neuron_selectivity_mmd,
                                    losses.hint_mse, losses.activation_boundary])
def test_no_gradient_reaches_the_teacher(kernel):
  rng = np.random.default_rng(1)
  s = jnp.asarray(rng.normal(size=(2, 2, 2, 3)), jnp.float32)
  t = jnp.asarray(rng.normal(size=(2, 2, 2, 3)), jnp.float32)
  grad = jax.grad(lambda t: kernel(s, t).sum())(t)
  np.testing.assert_array_equal(grad, 0.0)
  assert jnp.abs(jax.grad(lambda s: kernel(s, t).sum())(s)).sum() > 0


def test_bad_shapes_are_named():
  with pytest.raises(ValueError, match=r'NHWC.*\(2, 3\)'):
    losses.attention_transfer(jnp.zeros((2, 3)), jnp.zeros((2, 2, 2, 1)))
  with pytest.raises(ValueError, match='same shape'):
    losses.hint_mse(jnp.zeros((2, 3)), jnp.zeros((2, 4)))
