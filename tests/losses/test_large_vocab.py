"""Chunked fused large-vocabulary kernels vs the naive logits computation."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from distill_jax import losses
from distill_jax import registry
from distill_jax.losses import large_vocab

N, DS, DT, V = 12, 6, 10, 40


def _inputs(dtype=jnp.float32, rows=N, seed=0):
  k = jax.random.split(jax.random.key(seed), 6)
  return dict(
      h_s=jax.random.normal(k[0], (rows, DS)).astype(dtype),
      w_s=(2 * jax.random.normal(k[1], (DS, V))).astype(dtype),
      h_t=jax.random.normal(k[2], (rows, DT)).astype(dtype),
      w_t=(2 * jax.random.normal(k[3], (DT, V))).astype(dtype),
      ct=jax.random.normal(k[4], (rows,)),
      where=jax.random.uniform(k[5], (V,)) > 0.25)


# (fused kernel, naive kernel on logits, extra hyper-parameters)
PAIRS = [
    (losses.fused_linear_kl, losses.kl_divergence, {}),
    (losses.fused_linear_reverse_kl, losses.reverse_kl, {}),
    (losses.fused_linear_generalized_jsd, losses.generalized_jsd, {'beta': 0.3}),
    (losses.fused_linear_generalized_jsd, losses.generalized_jsd, {'beta': 0.0}),
    (losses.fused_linear_generalized_jsd, losses.generalized_jsd, {'beta': 1.0}),
]


def _naive_logits(h, w):
  return jnp.dot(h, w, preferred_element_type=jnp.float32)


def _check(fused, naive, kw, x, *, use_where, temperature, chunk_size, pad=False):
  where = x['where'] if use_where else None

  def f(h_s, w_s, h_t, w_t):
    out = fused(h_s, w_s, h_t, w_t, temperature=temperature, where=where,
                chunk_size=chunk_size, pad=pad, **kw)
    return jnp.vdot(x['ct'], out), out

  def g(h_s, w_s, h_t, w_t):
    out = naive(_naive_logits(h_s, w_s), _naive_logits(h_t, w_t),
                temperature=temperature, where=where, **kw)
    return jnp.vdot(x['ct'], out), out

  args = (x['h_s'], x['w_s'], x['h_t'], x['w_t'])
  (_, out_f), grads_f = jax.value_and_grad(f, argnums=(0, 1, 2, 3), has_aux=True)(*args)
  (_, out_g), grads_g = jax.value_and_grad(g, argnums=(0, 1), has_aux=True)(*args)
  assert out_f.dtype == jnp.float32 and out_f.shape == (N,)
  np.testing.assert_allclose(out_f, out_g, rtol=2e-5, atol=2e-5)
  for a, b in zip(grads_f[:2], grads_g):
    assert a.dtype == b.dtype
    # Both are float32 estimates, each ~1e-5 from a float64 reference.
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * np.abs(b).max())
  # The teacher gets exactly zero gradient.
  assert not np.any(grads_f[2]) and not np.any(grads_f[3])


@pytest.mark.parametrize('fused,naive,kw', PAIRS)
@pytest.mark.parametrize('use_where,temperature,chunk_size',
                         [(False, 1.0, 4), (True, 2.5, 6), (True, 0.7, 12)])
def test_matches_naive(fused, naive, kw, use_where, temperature, chunk_size):
  _check(fused, naive, kw, _inputs(), use_where=use_where,
         temperature=temperature, chunk_size=chunk_size)


def test_padding_path_matches_naive():
  _check(losses.fused_linear_kl, losses.kl_divergence, {}, _inputs(),
         use_where=False, temperature=2.0, chunk_size=5, pad=True)


@pytest.mark.parametrize('fused,naive,kw', PAIRS[:3])
@pytest.mark.parametrize('reduction', ['mean', 'masked_mean', 'other_weights'])
def test_head_gradient_from_forward_pass(fused, naive, kw, reduction):
  """Cotangents proportional to row_weights take the no-recompute branch.

  ``other_weights`` reduces with weights that are not ``row_weights``: the
  recomputing branch; all three must match the naive gradients.
  """
  x = _inputs()
  mask = jnp.arange(N) % 3 != 1
  row_weights = None if reduction == 'mean' else mask.astype(jnp.float32)
  weights = {'mean': jnp.full((N,), 1.0 / N), 'masked_mean': mask / mask.sum(),
             'other_weights': x['ct']}[reduction]

  def f(h_s, w_s):
    out = fused(h_s, w_s, x['h_t'], x['w_t'], temperature=2.0, chunk_size=5,
                pad=True, row_weights=row_weights, **kw)
    return jnp.sum(out * weights)

  def g(h_s, w_s):
    out = naive(_naive_logits(h_s, w_s),
                _naive_logits(x['h_t'], x['w_t']), temperature=2.0, **kw)
    return jnp.sum(out * weights)

  vf, grads_f = jax.jit(jax.value_and_grad(f, argnums=(0, 1)))(x['h_s'], x['w_s'])
  vg, grads_g = jax.value_and_grad(g, argnums=(0, 1))(x['h_s'], x['w_s'])
  np.testing.assert_allclose(vf, vg, rtol=2e-5)
  for a, b in zip(grads_f, grads_g):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * np.abs(b).max())


def test_proportionality_check():
  ones = jnp.ones(4)
  mask = jnp.array([1.0, 0.0, 1.0, 1.0])
  c, ok = large_vocab._proportionality(ones / 4, ones)  # pylint: disable=protected-access
  assert ok and c == 0.25
  c, ok = large_vocab._proportionality(mask / 3, mask)  # pylint: disable=protected-access
  assert ok and c == np.float32(1 / 3)
  assert not large_vocab._proportionality(ones / 4, mask)[1]  # pylint: disable=protected-access
  assert not large_vocab._proportionality(jnp.arange(4.0), ones)[1]  # pylint: disable=protected-access
  assert large_vocab._proportionality(jnp.zeros(4), jnp.zeros(4))[1]  # pylint: disable=protected-access


def test_cross_entropy_matches_optax():
  x = _inputs()
  labels = jax.random.randint(jax.random.key(1), (N,), 0, V)
  f = lambda h, w: jnp.vdot(x['ct'], losses.fused_linear_cross_entropy(
      h, w, labels, chunk_size=4))
  g = lambda h, w: jnp.vdot(x['ct'], optax.softmax_cross_entropy_with_integer_labels(
      h @ w, labels))
  vf, gf = jax.value_and_grad(f, argnums=(0, 1))(x['h_s'], x['w_s'])
  vg, gg = jax.value_and_grad(g, argnums=(0, 1))(x['h_s'], x['w_s'])
  np.testing.assert_allclose(vf, vg, rtol=1e-5)
  for a, b in zip(gf, gg):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)


def test_leading_axes_bf16_and_jit():
  x = _inputs(jnp.bfloat16)
  h_s, h_t = x['h_s'].reshape(3, 4, DS), x['h_t'].reshape(3, 4, DT)
  fn = jax.jit(jax.value_and_grad(
      lambda h, w: losses.fused_linear_kl(h, w, h_t, x['w_t'], temperature=2.0,
                                          chunk_size=4).sum(), argnums=(0, 1)))
  value, (d_h, d_w) = fn(h_s, x['w_s'])
  naive = losses.kl_divergence(_naive_logits(h_s, x['w_s']),
                               _naive_logits(h_t, x['w_t']), temperature=2.0)
  np.testing.assert_allclose(value, naive.sum(), rtol=1e-5)
  assert d_h.dtype == jnp.bfloat16 and d_h.shape == (3, 4, DS)
  assert d_w.dtype == jnp.bfloat16 and d_w.shape == (DS, V)


def test_kl_of_identical_models_is_zero():
  x = _inputs()
  out = losses.fused_linear_generalized_jsd(x['h_s'], x['w_s'], x['h_s'],
                                            x['w_s'], beta=0.5, chunk_size=4)
  np.testing.assert_allclose(out, 0.0, atol=1e-5)


def test_registered():
  assert registry.get('losses', 'fused_linear_kl') is losses.fused_linear_kl


def test_bad_input():
  x = _inputs()
  args = (x['h_s'], x['w_s'], x['h_t'], x['w_t'])
  with pytest.raises(ValueError, match=r'disagree on Ds.*\(12, 6\).*\(5, 40\)'):
    losses.fused_linear_kl(x['h_s'], x['w_s'][:5], x['h_t'], x['w_t'])
  with pytest.raises(ValueError, match='disagree on Dt'):
    losses.fused_linear_kl(x['h_s'], x['w_s'], x['h_t'][:, :3], x['w_t'])
  with pytest.raises(ValueError, match='same vocabulary size'):
    losses.fused_linear_kl(x['h_s'], x['w_s'], x['h_t'], x['w_t'][:, :30])
  with pytest.raises(ValueError, match='same rows'):
    losses.fused_linear_kl(x['h_s'], x['w_s'], x['h_t'][:6], x['w_t'])
  with pytest.raises(ValueError, match=r'chunk_size=5 does not divide the 12 rows.*pad=True'):
    losses.fused_linear_kl(*args, chunk_size=5)
  with pytest.raises(TypeError, match='floating-point'):
    losses.fused_linear_kl(x['h_s'].astype(jnp.int32), *args[1:])
  with pytest.raises(TypeError, match='floating-point'):
    losses.fused_linear_kl(*args[:3], x['w_t'].astype(jnp.int32))
  with pytest.raises(ValueError, match='temperature'):
    losses.fused_linear_kl(*args, temperature=0.0)
  with pytest.raises(ValueError, match='beta'):
    losses.fused_linear_generalized_jsd(*args, beta=1.5)
  with pytest.raises(ValueError, match='boolean vocabulary mask'):
    losses.fused_linear_kl(*args, where=x['where'][:10])
  with pytest.raises(ValueError, match='implementation'):
    losses.fused_linear_kl(*args, implementation='cuda')
  with pytest.raises(TypeError, match='labels must be integer'):
    losses.fused_linear_cross_entropy(x['h_s'], x['w_s'], jnp.zeros((N,)))
  with pytest.raises(ValueError, match='chunk_size must be a positive'):
    losses.fused_linear_kl(*args, chunk_size=0)
  with pytest.raises(ValueError, match=r'row_weights must be a float array with the rows shape \(12,\)'):
    losses.fused_linear_kl(*args, row_weights=jnp.ones((N, 1)))


def test_temp_memory_is_chunk_sized():
  """XLA's temp bytes: the fused kernel's do not grow with the rows."""
  def temp(fn, rows):
    shapes = [jax.ShapeDtypeStruct(s, jnp.float32) for s in
              [(rows, 16), (16, 2048), (rows, 16), (16, 2048)]]
    step = jax.jit(jax.grad(lambda *a: fn(*a).sum(), argnums=(0, 1)))
    return step.lower(*shapes).compile().memory_analysis().temp_size_in_bytes

  fused = lambda *a: large_vocab.fused_linear_kl(*a, chunk_size=64)
  naive = lambda hs, ws, ht, wt: losses.kl_divergence(hs @ ws, ht @ wt)
  assert temp(fused, 2048) < 1.5 * temp(fused, 256)
  assert temp(fused, 2048) * 8 < temp(naive, 2048)


def test_default_chunk_size():
  rows = (1, 12, 64, 100, 1024, 4096, 16384, 10**6)
  assert [large_vocab.default_chunk_size(n) for n in rows] == [1, 12, 64, 64, 64, 256, 1024, 1024]


@pytest.mark.parametrize('hidden', [256, 512])
def test_default_chunk_needs_a_sixteenth_of_the_naive_temp_memory(hidden):
  """With default arguments, N=4096 rows and V=131072 (compiled only: XLA's
  memory_analysis of forward + backward, nothing runs)."""
  rows, vocab = 4096, 131072
  shapes = [jax.ShapeDtypeStruct(s, jnp.float32) for s in
            [(rows, hidden), (hidden, vocab), (rows, hidden), (hidden, vocab)]]

  def temp(fn):
    step = jax.jit(jax.value_and_grad(lambda *a: fn(*a).mean(), argnums=(0, 1)))
    return step.lower(*shapes).compile().memory_analysis().temp_size_in_bytes
  fused = temp(losses.fused_linear_kl)
  naive = temp(lambda hs, ws, ht, wt: losses.kl_divergence(hs @ ws, ht @ wt))
  assert fused * 16 <= naive, fused / naive


def test_default_chunk_pads_rows_it_does_not_divide():
  k = jax.random.split(jax.random.PRNGKey(3), 4)
  h_s, h_t = jax.random.normal(k[0], (100, 8)), jax.random.normal(k[1], (100, 8))
  w_s, w_t = jax.random.normal(k[2], (8, 40)), jax.random.normal(k[3], (8, 40))
  assert large_vocab.default_chunk_size(100) == 64
  np.testing.assert_allclose(losses.fused_linear_kl(h_s, w_s, h_t, w_t),
                             losses.kl_divergence(h_s @ w_s, h_t @ w_t), rtol=1e-5, atol=1e-6)
