"""Relation kernels: hand-computed values and the invariants of their definitions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax import losses

RNG = np.random.default_rng(0)
S = jnp.asarray(RNG.normal(size=(5, 4)), jnp.float32)
T = jnp.asarray(RNG.normal(size=(5, 6)), jnp.float32)


def test_similarity_preserving_uses_the_normalized_gram():
  s = jnp.array([[1.0, 0.0], [0.0, 1.0]])
  t = jnp.array([[1.0, 0.0], [1.0, 0.0]])
  # G_s = I (rows already unit); G_t = [[1, 1], [1, 1]] / sqrt(2).
  g_t = 1 / np.sqrt(2)
  row = ((g_t - 1)**2 + g_t**2) / 2
  np.testing.assert_allclose(losses.similarity_preserving(s, t), [row, row], rtol=1e-6)
  np.testing.assert_allclose(losses.similarity_preserving(S, 3 * S), 0.0, atol=1e-6)


def test_rkd_distance_zero_for_identical_and_scale_invariant():
  np.testing.assert_allclose(losses.rkd_distance(S, S), 0.0, atol=1e-6)
  np.testing.assert_allclose(losses.rkd_distance(S, 7.0 * S), 0.0, atol=1e-5)
  np.testing.assert_allclose(losses.rkd_distance(2.0 * S, T), losses.rkd_distance(S, T), rtol=1e-5)


def test_rkd_distance_hand_computed():
  s = jnp.array([[0.0], [1.0], [3.0]])   # distances 1, 3, 2; mean 2
  t = jnp.array([[0.0], [1.0], [2.0]])   # distances 1, 2, 1; mean 4/3
  ds = np.array([[0, 1, 3], [1, 0, 2], [3, 2, 0]]) / 2
  dt = np.array([[0, 1, 2], [1, 0, 1], [2, 1, 0]]) / (4 / 3)
  diff = np.abs(ds - dt)
  huber = np.where(diff < 1, 0.5 * diff**2, diff - 0.5)
  np.testing.assert_allclose(losses.rkd_distance(s, t), huber.mean(1), rtol=1e-5, atol=1e-7)


def test_rkd_angle_invariants():
  np.testing.assert_allclose(losses.rkd_angle(S, 3.0 * S + 1.0), 0.0, atol=1e-5)
  assert (losses.rkd_angle(S, T[:, :4]) > 0).any()


def test_pkt_hand_computed_and_zero():
  np.testing.assert_allclose(losses.probabilistic_knowledge_transfer(S, S), 0.0, atol=1e-6)
  s = jnp.array([[1.0, 0.0], [0.0, 1.0]])   # cos sim I -> [[1, .5], [.5, 1]] -> rows [2/3, 1/3]
  t = jnp.array([[1.0, 0.0], [1.0, 0.0]])   # all 1 -> rows [1/2, 1/2]
  kl = 0.5 * np.log(0.5 / (2 / 3)) + 0.5 * np.log(0.5 / (1 / 3))
  np.testing.assert_allclose(losses.probabilistic_knowledge_transfer(s, t), [kl / 2] * 2,
                             rtol=1e-5)


def test_correlation_congruence_hand_computed():
  s = jnp.array([[1.0, 2.0], [3.0, 1.0], [0.0, 0.0]])
  t = jnp.zeros((3, 2))
  np.testing.assert_allclose(losses.correlation_congruence(s, t), [1 * 3 + 2 * 1, 0.0])


def test_dist_relations():
  logits = jnp.asarray(RNG.normal(size=(4, 5)), jnp.float32)
  np.testing.assert_allclose(losses.inter_class_relation(logits, logits + 3.0), 0.0, atol=1e-6)
  np.testing.assert_allclose(losses.intra_class_relation(logits, logits), 0.0, atol=1e-6)
  # Anti-correlated probabilities: 1 - (-1) = 2, times T**2.
  a = jnp.log(jnp.array([[0.6, 0.4]]))
  b = jnp.log(jnp.array([[0.4, 0.6]]))
  np.testing.assert_allclose(losses.inter_class_relation(a, b), [2.0], rtol=1e-5)
  with pytest.raises(ValueError, match='temperature must be > 0'):
    losses.inter_class_relation(a, b, temperature=0.0)


def test_nce_contrast_hand_computed():
  scores = jnp.array([[0.5, 0.1, 0.2]])  # K = 2 negatives, N = 4: K P_n = 0.5
  expected = -(np.log(0.5 / 1.0) + np.log(0.5 / 0.6) + np.log(0.5 / 0.7))
  np.testing.assert_allclose(losses.nce_contrast(scores, num_data=4), [expected], rtol=1e-5)


@pytest.mark.parametrize('kernel', [losses.similarity_preserving, losses.rkd_distance,
                                    losses.rkd_angle, losses.probabilistic_knowledge_transfer])
def test_no_gradient_reaches_the_teacher(kernel):
  grad = jax.grad(lambda t: kernel(S, t).sum())(T)
  np.testing.assert_array_equal(grad, 0.0)
