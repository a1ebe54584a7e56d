"""MiniLM / MiniLMv2 relation kernels against NumPy, masking and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax import losses
from distill_jax.losses import token_relations


def _np_softmax_rows(scores, allowed):
  """Rows with no allowed key (padded queries) come out NaN; the tests skip them."""
  with np.errstate(invalid='ignore', divide='ignore'):
    scores = np.where(allowed, scores, -np.inf)
    scores = scores - scores.max(-1, keepdims=True)
    e = np.where(allowed, np.exp(scores), 0.0)
    return e / e.sum(-1, keepdims=True)


def _np_relation(x, heads, allowed):
  """``[T, D]`` -> ``[R, T, T]`` probabilities, by loops."""
  t, d = x.shape
  dr = d // heads
  out = np.zeros((heads, t, t))
  for r in range(heads):
    xr = x[:, r * dr:(r + 1) * dr]
    out[r] = _np_softmax_rows(xr @ xr.T / np.sqrt(dr), allowed)
  return out


def _np_kl(p_t, p_s, allowed):
  """``[R, T, T]`` -> ``[T]``: the KL over allowed keys, mean over heads."""
  with np.errstate(divide='ignore', invalid='ignore'):
    terms = np.where(allowed, p_t * (np.log(p_t) - np.log(p_s)), 0.0)
  return terms.sum(-1).mean(0)


TOKEN_MASK = np.array([[False, True, True, True, True], [True, True, True, True, True]])


def test_causal_allowed():
  allowed = np.asarray(token_relations.causal_allowed(jnp.asarray(TOKEN_MASK)))
  assert allowed.shape == (2, 5, 5)
  assert allowed[0, 3].tolist() == [False, True, True, True, False]
  assert allowed[1, 0].tolist() == [True, False, False, False, False]


def test_self_relation_kl_matches_numpy_across_widths_and_head_counts():
  """Student [B, T, 2 heads, 6] against teacher [B, T, 3 heads, 4]: 4 relation heads."""
  student = np.random.default_rng(0).normal(size=(2, 5, 2, 6)).astype(np.float32)
  teacher = np.random.default_rng(1).normal(size=(2, 5, 3, 4)).astype(np.float32)
  allowed = np.asarray(token_relations.causal_allowed(jnp.asarray(TOKEN_MASK)))
  got = losses.self_relation_kl(jnp.asarray(student), jnp.asarray(teacher),
                                jnp.asarray(allowed), relation_heads=4)
  for b in range(2):
    p_s = _np_relation(student[b].reshape(5, 12), 4, allowed[b])
    p_t = _np_relation(teacher[b].reshape(5, 12), 4, allowed[b])
    rows = TOKEN_MASK[b]
    np.testing.assert_allclose(np.asarray(got[b])[rows], _np_kl(p_t, p_s, allowed[b])[rows],
                               rtol=1e-4, atol=1e-6)
  assert np.all(np.asarray(got) >= -1e-6)


def test_self_relation_kl_is_zero_on_itself_and_ignores_padded_keys():
  x = jax.random.normal(jax.random.key(0), (2, 5, 8))
  allowed = token_relations.causal_allowed(jnp.asarray(TOKEN_MASK))
  np.testing.assert_allclose(losses.self_relation_kl(x, x, allowed, relation_heads=2), 0.0,
                             atol=1e-6)
  moved = x.at[0, 0].set(100.0)  # row 0's first token is padding: never a key there
  a = losses.self_relation_kl(x, x * 0.5, allowed, relation_heads=2)
  b = losses.self_relation_kl(moved, moved * 0.5, allowed, relation_heads=2)
  np.testing.assert_allclose(a[0, 1:], b[0, 1:], rtol=1e-5)


def test_attention_kl_matches_numpy_and_never_differentiates_the_teacher():
  allowed = token_relations.causal_allowed(jnp.asarray(TOKEN_MASK))
  scores = jax.random.normal(jax.random.key(1), (2, 2, 2, 5, 5))
  mask = allowed[:, None]
  probs_s, probs_t = (jax.nn.softmax(jnp.where(mask, s, -1e30), -1) for s in scores)
  got = losses.attention_kl(probs_s, probs_t, allowed)
  for b in range(2):
    want = _np_kl(np.asarray(probs_t[b], np.float64), np.asarray(probs_s[b], np.float64),
                  np.asarray(allowed[b]))
    rows = TOKEN_MASK[b]
    np.testing.assert_allclose(np.asarray(got[b])[rows], want[rows], rtol=1e-4, atol=1e-6)
  grad = jax.grad(lambda t: losses.attention_kl(probs_s, t, allowed).sum())(probs_t)
  assert float(jnp.abs(grad).max()) == 0.0


def test_attention_kl_needs_one_head_count():
  allowed = token_relations.causal_allowed(jnp.ones((1, 3), bool))
  with pytest.raises(ValueError, match='token_minilmv2 relates models of any head counts'):
    losses.attention_kl(jnp.ones((1, 2, 3, 3)) / 3, jnp.ones((1, 4, 3, 3)) / 3, allowed)


def test_relation_heads_must_divide_the_width():
  allowed = token_relations.causal_allowed(jnp.ones((1, 3), bool))
  with pytest.raises(ValueError, match='3 relation heads do not divide the width 8'):
    losses.self_relation_kl(jnp.ones((1, 3, 8)), jnp.ones((1, 3, 6)), allowed,
                            relation_heads=3)
