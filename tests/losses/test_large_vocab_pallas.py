"""The Pallas chunk kernels (interpret mode on CPU) against the XLA path."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax import losses
from distill_jax.losses import pallas_kl

N, DS, DT, V = 16, 8, 12, 384  # 3 vocabulary tiles of 128


def _inputs():
  k = jax.random.split(jax.random.key(7), 6)
  return (jax.random.normal(k[0], (N, DS)), 2 * jax.random.normal(k[1], (DS, V)),
          jax.random.normal(k[2], (N, DT)), 2 * jax.random.normal(k[3], (DT, V)),
          jax.random.normal(k[4], (N,)), jax.random.uniform(k[5], (V,)) > 0.2)




@pytest.mark.parametrize('fn,kw', [
    (losses.fused_linear_kl, {'temperature': 2.0}),
    (losses.fused_linear_reverse_kl, {'temperature': 0.8}),
    (losses.fused_linear_generalized_jsd, {'beta': 0.3, 'temperature': 2.0}),
])
def test_pallas_matches_xla(fn, kw):
  h_s, w_s, h_t, w_t, ct, where = _inputs()
  results = []
  for implementation in ('xla', 'pallas'):
    f = lambda h, w: jnp.vdot(ct, fn(h, w, h_t, w_t, where=where, chunk_size=8,
                                     implementation=implementation, **kw))
    results.append(jax.value_and_grad(f, argnums=(0, 1))(h_s, w_s))
  (v_x, g_x), (v_p, g_p) = results
  np.testing.assert_allclose(v_p, v_x, rtol=1e-5)
  for a, b in zip(g_p, g_x):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * np.abs(b).max())


def test_pallas_cross_entropy_matches_xla():
  h, w, _, _, ct, _ = _inputs()
  labels = jax.random.randint(jax.random.key(1), (N,), 0, V)
  results = [jax.value_and_grad(
      lambda h, w: jnp.vdot(ct, losses.fused_linear_cross_entropy(
          h, w, labels, chunk_size=8, implementation=impl)), argnums=(0, 1))(h, w)
             for impl in ('xla', 'pallas')]
  np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-5)
  for a, b in zip(results[1][1], results[0][1]):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * np.abs(b).max())


def test_lse_parts_online_combination():
  z = jax.random.normal(jax.random.key(2), (8, 1024)) * 30
  z = z.at[0].set(-jnp.inf).at[1, :512].set(-jnp.inf)
  m, l = pallas_kl.lse_parts(z)
  expected = jax.nn.logsumexp(z, axis=-1)
  got = jnp.where(jnp.isfinite(m[:, 0]), m[:, 0], 0.0) + jnp.log(l[:, 0])
  np.testing.assert_allclose(got[1:], expected[1:], rtol=1e-6)
  assert l[0, 0] == 0


def test_pallas_vocab_without_tile_is_an_error():
  h_s, w_s, h_t, w_t, _, _ = _inputs()
  w_s = jnp.tile(w_s, (1, 6))[:, :2100]
  w_t = jnp.tile(w_t, (1, 6))[:, :2100]
  with pytest.raises(ValueError, match='not a multiple of 128'):
    losses.fused_linear_kl(h_s, w_s, h_t, w_t, implementation='pallas')


def test_pallas_is_opt_in_on_every_backend(monkeypatch):
  """Until the Pallas kernels have run on an accelerator, None means XLA, on a GPU too."""
  from distill_jax.losses import large_vocab  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  assert large_vocab._resolve_implementation('fused_linear_kl', None) == 'xla'  # pylint: disable=protected-access
  assert large_vocab._resolve_implementation('fused_linear_kl', 'pallas') == 'pallas'  # pylint: disable=protected-access


@pytest.mark.parametrize('fn,kw', [
    (losses.fused_linear_total_variation, {'temperature': 2.0}),
    (losses.fused_linear_skew_kl, {'lam': 0.2, 'student_softcap': 5.0}),
    (losses.fused_linear_skew_kl, {'lam': 0.2, 'reverse': True, 'teacher_softcap': 5.0}),
])
def test_pallas_matches_xla_new_kinds(fn, kw):
  test_pallas_matches_xla(fn, kw)


def _block_widths(fn, *args) -> list[int]:
  """The last-axis block sizes of every operand and result of the pallas_calls in ``fn``."""
  widths = []
  for eqn in jax.make_jaxpr(fn)(*args).jaxpr.eqns:
    if eqn.primitive.name == 'pallas_call':
      widths += [int(getattr(b.block_shape[-1], 'block_size', b.block_shape[-1]))
                 for b in eqn.params['grid_mapping'].block_mappings]
  return widths


def test_pallas_kernels_load_one_vocabulary_tile_per_program():
  """Every block of the three chunk kernels is a [block_rows, 128] tile of the
  [8, 384] logits or a per-row column, never a whole [block_rows, V] band."""
  s, t = jax.random.normal(jax.random.key(3), (2, 8, V))
  lse = jnp.zeros((8, 1))
  spec = types.SimpleNamespace(kind='kl', beta=0.0)
  col0 = jnp.zeros((), jnp.int32)
  for fn, args in ((pallas_kl.lse_parts, (s,)),
                   (lambda *a: pallas_kl.row_terms(spec, *a, None, col0), (s, t, lse, lse)),
                   (lambda *a: pallas_kl.student_grad(spec, *a, None, col0),
                    (s, t, lse, lse, jnp.zeros((8,))))):
    widths = _block_widths(fn, *args)
    assert widths and max(widths) == 128 and V not in widths, widths
