"""ULD and the hybrid cross-vocabulary loss, against NumPy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax.losses import cross_vocab


def _softmax(x, scale=None, temperature=1.0):
  x = np.asarray(x, np.float64) / temperature
  p = np.exp(x - x.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  return p if scale is None else p * np.exp(np.asarray(scale, np.float64))[:, None]


def _uld_reference(p_s, p_t):
  width = max(p_s.shape[-1], p_t.shape[-1])
  sort_pad = lambda p: np.pad(-np.sort(-p, -1), ((0, 0), (0, width - p.shape[-1])))
  return np.abs(sort_pad(p_s) - sort_pad(p_t)).sum(-1)


def _rows(seed, n, v, scale=3.0):
  return scale * np.asarray(jax.random.normal(jax.random.key(seed), (n, v)))


@pytest.mark.parametrize('chunk_rows', [1, 4, 64])
def test_uld_matches_numpy_with_different_vocabularies_and_scales(chunk_rows):
  s, t = _rows(0, 7, 30), _rows(1, 7, 45)
  s_scale, t_scale = -np.abs(_rows(2, 7, 1, 1.0))[:, 0], -np.abs(_rows(3, 7, 1, 1.0))[:, 0]
  got = cross_vocab.uld_distance(s, t, student_log_scale=s_scale, teacher_log_scale=t_scale,
                                 temperature=2.0, chunk_rows=chunk_rows)
  want = _uld_reference(_softmax(s, s_scale, 2.0), _softmax(t, t_scale, 2.0))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_uld_hand_computed_and_permutation_invariant():
  # p_s = (0.5, 0.5), p_t = (0.25, 0.25, 0.5): sorted (0.5, 0.5, 0) vs (0.5, 0.25, 0.25).
  s = jnp.log(jnp.array([[0.5, 0.5]]))
  t = jnp.log(jnp.array([[0.25, 0.25, 0.5]]))
  np.testing.assert_allclose(cross_vocab.uld_distance(s, t), [0.5], rtol=1e-6)
  # A relabelled teacher (same probabilities, other order) is at distance 0.
  p = _rows(4, 3, 20)
  np.testing.assert_allclose(cross_vocab.uld_distance(p, p[:, ::-1]), 0.0, atol=1e-6)


def test_uld_gradient_flows_to_the_student_only_and_matches_the_unchunked_form():
  s, t = jnp.asarray(_rows(5, 6, 12)), jnp.asarray(_rows(6, 6, 9))

  def direct(s, t):
    p_s, p_t = jax.nn.softmax(s), jax.nn.softmax(t)
    sorted_t = jnp.pad(-jnp.sort(-p_t, -1), ((0, 0), (0, 3)))  # 9 -> 12 labels.
    return jnp.abs(-jnp.sort(-p_s, -1) - sorted_t).sum()

  loss = lambda s, t: cross_vocab.uld_distance(s, t, chunk_rows=4).sum()
  grad_s, grad_t = jax.grad(loss, argnums=(0, 1))(s, t)
  np.testing.assert_allclose(grad_s, jax.grad(direct)(s, t), atol=1e-6)
  np.testing.assert_array_equal(grad_t, 0.0)


def test_hybrid_uld_matches_numpy():
  s, t = _rows(7, 5, 16), _rows(8, 5, 20)
  s_ids, t_ids = np.array([0, 3, 7, 15]), np.array([2, 3, 19, 0])
  s_scale = -np.abs(_rows(9, 5, 1, 1.0))[:, 0]
  kl, uld = cross_vocab.hybrid_uld(s, t, matched_student_ids=s_ids, matched_teacher_ids=t_ids,
                                   student_log_scale=s_scale, chunk_rows=2)
  p_s, p_t = _softmax(s, s_scale), _softmax(t)
  want_kl = (p_t[:, t_ids] * (np.log(p_t[:, t_ids]) - np.log(p_s[:, s_ids]))).sum(-1)
  want_uld = _uld_reference(np.delete(p_s, s_ids, -1), np.delete(p_t, t_ids, -1))
  np.testing.assert_allclose(kl, want_kl, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(uld, want_uld, rtol=1e-5, atol=1e-6)


def test_hybrid_with_every_label_matched_is_forward_kl():
  s, t = _rows(10, 4, 11), _rows(11, 4, 11)
  perm = np.random.default_rng(0).permutation(11)
  # Teacher label perm[i] is student label i.
  kl, uld = cross_vocab.hybrid_uld(s, t[:, perm], matched_student_ids=np.arange(11),
                                   matched_teacher_ids=np.argsort(perm))
  p_s, p_t = _softmax(s), _softmax(t)
  np.testing.assert_allclose(kl, (p_t * np.log(p_t / p_s)).sum(-1), rtol=1e-5)
  np.testing.assert_array_equal(uld, 0.0)  # Nothing left unmatched.


def test_misaligned_rows_are_one_clear_error():
  with pytest.raises(ValueError, match='align them first'):
    cross_vocab.uld_distance(jnp.zeros((3, 5)), jnp.zeros((4, 6)))
  with pytest.raises(ValueError, match=r'rows \[N, V\]'):
    cross_vocab.uld_distance(jnp.zeros((2, 3, 5)), jnp.zeros((2, 3, 6)))


def test_top_k_compares_the_largest_entries_and_the_tails_mass():
  s, t = _rows(12, 6, 40, 4.0), _rows(13, 6, 50, 4.0)
  exact = cross_vocab.uld_distance(s, t)
  np.testing.assert_allclose(cross_vocab.uld_distance(s, t, top_k=50), exact, rtol=1e-6)
  p_s, p_t = _softmax(s), _softmax(t)
  top = lambda p: -np.sort(-p, -1)[:, :8]
  want = (np.abs(top(p_s) - top(p_t)).sum(-1) +
          np.abs((p_s.sum(-1) - top(p_s).sum(-1)) - (p_t.sum(-1) - top(p_t).sum(-1))))
  got = cross_vocab.uld_distance(s, t, top_k=8)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  assert np.all(np.asarray(got) <= np.asarray(exact) + 1e-6)  # A lower bound.
