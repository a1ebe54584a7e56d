"""Vocabulary-sharded fused kernels on 8 simulated devices (data=2, tensor=4)."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from distill_jax import losses
from distill_jax import sharding

N, DS, DT, V = 16, 8, 12, 64
ROWS = P(('data', 'fsdp'))
COLS = P(None, 'tensor')


@pytest.fixture(scope='module')
def mesh():
  return sharding.make_mesh(ml_collections.ConfigDict(dict(data=2, fsdp=1, tensor=4)))


def _inputs():
  k = jax.random.split(jax.random.key(3), 6)
  return (jax.random.normal(k[0], (N, DS)), 2 * jax.random.normal(k[1], (DS, V)),
          jax.random.normal(k[2], (N, DT)), 2 * jax.random.normal(k[3], (DT, V)),
          jax.random.normal(k[4], (N,)), jax.random.uniform(k[5], (V,)) > 0.2)


@pytest.mark.parametrize('fused,naive,kw', [
    (losses.fused_linear_kl, losses.kl_divergence, {}),
    (losses.fused_linear_reverse_kl, losses.reverse_kl, {}),
    (losses.fused_linear_generalized_jsd, losses.generalized_jsd, {'beta': 0.3}),
])
def test_sharded_matches_naive_inside_jit(mesh, fused, naive, kw):
  h_s, w_s, h_t, w_t, ct, where = _inputs()
  put = lambda x, spec: jax.device_put(x, NamedSharding(mesh, spec))
  loss = losses.vocab_sharded(fused, mesh)

  @jax.jit
  def step(h_s, w_s, h_t, w_t, where):
    f = lambda h_s, w_s: jnp.vdot(ct, loss(h_s, w_s, h_t, w_t, where=where,
                                           temperature=2.0, chunk_size=4, **kw))
    return jax.value_and_grad(f, argnums=(0, 1))(h_s, w_s)

  value, (d_h, d_w) = step(put(h_s, ROWS), put(w_s, COLS), put(h_t, ROWS),
                           put(w_t, COLS), put(where, P('tensor')))
  g = lambda h_s, w_s: jnp.vdot(ct, naive(h_s @ w_s, h_t @ w_t, where=where,
                                          temperature=2.0, **kw))
  ref, (ref_h, ref_w) = jax.value_and_grad(g, argnums=(0, 1))(h_s, w_s)
  np.testing.assert_allclose(value, ref, rtol=1e-5)
  np.testing.assert_allclose(d_h, ref_h, rtol=1e-4, atol=1e-4 * np.abs(ref_h).max())
  np.testing.assert_allclose(d_w, ref_w, rtol=1e-4, atol=1e-4 * np.abs(ref_w).max())
  assert d_w.sharding.spec == COLS


def test_sharded_masked_mean_with_row_weights(mesh):
  """A masked mean with row_weights = mask: the head gradient from the forward pass."""
  h_s, w_s, h_t, w_t, _, where = _inputs()
  mask = (jnp.arange(N) % 4 != 0).astype(jnp.float32)
  loss = losses.vocab_sharded(losses.fused_linear_kl, mesh)

  @jax.jit
  def step(h_s, w_s):
    f = lambda h_s, w_s: jnp.sum(mask * loss(
        h_s, w_s, h_t, w_t, where=where, row_weights=mask, temperature=2.0,
        chunk_size=4)) / mask.sum()
    return jax.value_and_grad(f, argnums=(0, 1))(h_s, w_s)

  value, grads = step(h_s, w_s)
  g = lambda h_s, w_s: jnp.sum(mask * losses.kl_divergence(
      h_s @ w_s, h_t @ w_t, where=where, temperature=2.0)) / mask.sum()
  ref, ref_grads = jax.value_and_grad(g, argnums=(0, 1))(h_s, w_s)
  np.testing.assert_allclose(value, ref, rtol=1e-5)
  for a, b in zip(grads, ref_grads):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * np.abs(b).max())


def test_sharded_cross_entropy(mesh):
  h, w, _, _, ct, _ = _inputs()
  labels = jax.random.randint(jax.random.key(0), (N,), 0, V)
  loss = losses.vocab_sharded(losses.fused_linear_cross_entropy, mesh)
  f = jax.jit(jax.value_and_grad(
      lambda h, w: jnp.vdot(ct, loss(h, w, labels, chunk_size=8)), argnums=(0, 1)))
  value, grads = f(h, w)
  g = lambda h, w: jnp.vdot(ct, optax.softmax_cross_entropy_with_integer_labels(h @ w, labels))
  ref, ref_grads = jax.value_and_grad(g, argnums=(0, 1))(h, w)
  np.testing.assert_allclose(value, ref, rtol=1e-5)
  for a, b in zip(grads, ref_grads):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * np.abs(b).max())


def test_vocab_not_divisible_by_shards(mesh):
  h_s, w_s, h_t, w_t, _, _ = _inputs()
  loss = losses.vocab_sharded(losses.fused_linear_kl, mesh)
  with pytest.raises(ValueError, match=r'V=62 .* not divisible by the 4 shards.*where'):
    loss(h_s, w_s[:, :62], h_t, w_t[:, :62])
