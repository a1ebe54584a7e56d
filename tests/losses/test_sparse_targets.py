"""KL against sparse (top-k / sampled-k) teacher targets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax import losses
from distill_jax.losses import sparse_targets

V = 50


def _logits(seed):
  return 3 * jax.random.normal(jax.random.key(seed), (4, V))


def test_tail_bucket_with_all_classes_is_full_kl():
  s, t = _logits(0), _logits(1)
  log_p_t = jax.nn.log_softmax(t)
  ids = jnp.broadcast_to(jnp.arange(V), (4, V))
  full = losses.kl_divergence(s, t)
  for tail in (None, jnp.full((4,), -jnp.inf)):
    got = sparse_targets.sparse_kl_divergence(s, ids, log_p_t, tail_logprob=tail)
    np.testing.assert_allclose(got, full, rtol=1e-5, atol=1e-6)
  grad = jax.grad(lambda s: sparse_targets.sparse_kl_divergence(
      s, ids, log_p_t, tail_logprob=jnp.full((4,), -jnp.inf)).sum())(s)
  np.testing.assert_allclose(grad, jax.grad(lambda s: losses.kl_divergence(s, t).sum())(s),
                             atol=1e-6)


def test_renormalized_gradient_is_p_minus_sparse_target():
  s, t = _logits(2), _logits(3)
  log_p_t = jax.nn.log_softmax(t / 2.0)
  logprobs, ids = jax.lax.top_k(log_p_t, 8)
  logprobs = logprobs.at[:, -1].set(-jnp.inf)  # one padding entry
  grad = jax.grad(lambda s: sparse_targets.sparse_kl_divergence(
      s, ids, logprobs, temperature=2.0).sum())(s)
  q = jax.nn.softmax(logprobs / 2.0)
  dense_q = jnp.zeros_like(s).at[jnp.arange(4)[:, None], ids].add(q)
  np.testing.assert_allclose(grad, 2.0 * (jax.nn.softmax(s / 2.0) - dense_q), atol=1e-6)
  value = sparse_targets.sparse_kl_divergence(s, ids, logprobs, temperature=2.0)
  assert np.all(np.asarray(value) >= 0)


def test_top_k_tail_is_close_to_full_kl():
  s, t = _logits(4), _logits(5) * 2
  log_p_t = jax.nn.log_softmax(t)
  logprobs, ids = jax.lax.top_k(log_p_t, 16)
  tail = sparse_targets.log_mass_outside(log_p_t, ids, jnp.ones(ids.shape, bool))
  np.testing.assert_allclose(jnp.exp(tail), 1 - jnp.exp(logprobs).sum(-1), atol=1e-6)
  got = sparse_targets.sparse_kl_divergence(s, ids, logprobs, tail_logprob=tail)
  np.testing.assert_allclose(got, losses.kl_divergence(s, t), rtol=0.1)


def test_mass_outside_padding_repeats_and_full_cover():
  log_p = jax.nn.log_softmax(_logits(6)[:2, :4])
  ids = jnp.asarray([[0, 0, 3, 1], [0, 1, 2, 3]])
  valid = jnp.asarray([[True, True, True, False], [True, True, True, True]])
  got = sparse_targets.log_mass_outside(log_p, ids, valid)
  np.testing.assert_allclose(got[0], jax.nn.logsumexp(log_p[0, 1:3]), rtol=1e-6)
  assert got[1] == -jnp.inf  # every class covered: exactly no tail

  def finite_sum(x):
    out = sparse_targets.log_mass_outside(x, ids, valid)
    return jnp.where(jnp.isfinite(out), out, 0.0).sum()

  assert np.all(np.isfinite(jax.grad(finite_sum)(log_p)))


def test_bad_input():
  s = _logits(0)
  ids = jnp.zeros((4, 3), jnp.int32)
  with pytest.raises(TypeError, match='target_ids must be integer'):
    sparse_targets.sparse_kl_divergence(s, ids.astype(jnp.float32), jnp.zeros((4, 3)))
  with pytest.raises(ValueError, match='same'):
    sparse_targets.sparse_kl_divergence(s, ids, jnp.zeros((4, 2)))
  with pytest.raises(ValueError, match='tail_logprob'):
    sparse_targets.sparse_kl_divergence(s, ids, jnp.zeros((4, 3)),
                                        tail_logprob=jnp.zeros((3,)))
