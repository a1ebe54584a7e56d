"""Tests for distill_jax.losses.logits: the KL-family logit kernels.

Hand-computed fixtures, invariants (KL(p,p)=0, non-negativity, zero teacher
gradient, temperature limits, mask == slice), ``check_grads`` and dtype /
extreme-value robustness, per CONTRIBUTING.md rule 10.

Speed: on CPU, eager dispatch compiles every primitive per shape, and each
``jax.jit`` compiles once per function and shape. The numerical tests
therefore go through two module-level jitted functions (``_values``,
``_grads``) that evaluate all five kernels at once with traced
hyper-parameters, on a few shared shapes, so the file compiles little; ``RAW``
calls exercise the eager path and the trace-time validation.
"""

import functools
import math

import jax
import jax.numpy as jnp
from jax import test_util as jtu
import numpy as np
import pytest

from distill_jax import losses
from distill_jax import registry

RAW = {
    'kl': losses.kl_divergence,
    'reverse_kl': losses.reverse_kl,
    'generalized_jsd': losses.generalized_jsd,
    'total_variation': losses.total_variation,
    'soft_cross_entropy': losses.soft_cross_entropy,
}
NAMES = sorted(RAW)
# Divergences: 0 iff the distributions agree (soft CE is not one).
DIVERGENCES = ['generalized_jsd', 'kl', 'reverse_kl', 'total_variation']
# Power of T each kernel is multiplied by.
T_POWER = {
    'kl': 2,
    'reverse_kl': 2,
    'generalized_jsd': 2,
    'total_variation': 1,
    'soft_cross_entropy': 2,
}
SHAPE = (4, 6)  # [B, V], shared so compiled code is reused across tests.

# The 3-class fixture: teacher p = [1/2, 1/4, 1/4], student q = [1/8, 3/8, 1/2]
# (logits = log-probabilities). Values computed by hand with natural logs:
#   KL(p||q) = 1/2 ln 4 + 1/4 ln(2/3) + 1/4 ln(1/2) = 3/4 ln 2 + 1/4 ln(2/3)
#   KL(q||p) = 1/8 ln(1/4) + 3/8 ln(3/2) + 1/2 ln 2 = 1/4 ln 2 + 3/8 ln(3/2)
#   TV       = 1/2 (3/8 + 1/8 + 1/4) = 3/8
#   CE       = -(1/2 ln(1/8) + 1/4 ln(3/8) + 1/4 ln(1/2)) = 5/2 ln 2 - 1/4 ln 3
#   JSD_0.5: M = [5/16, 5/16, 3/8],
#     KL(p||M) = 1/2 ln(8/5) + 1/4 ln(4/5) + 1/4 ln(2/3)
#     KL(q||M) = 1/8 ln(2/5) + 3/8 ln(6/5) + 1/2 ln(4/3)
#     generalized_jsd(beta=0.5) = (0.5 KL(p||M) + 0.5 KL(q||M)) / 0.25
P_TEACHER = np.array([1 / 2, 1 / 4, 1 / 4])
Q_STUDENT = np.array([1 / 8, 3 / 8, 1 / 2])
LN = math.log
HAND_KL = 3 / 4 * LN(2) + 1 / 4 * LN(2 / 3)  # 0.418494...
HAND_RKL = 1 / 4 * LN(2) + 3 / 8 * LN(3 / 2)  # 0.325336...
HAND_TV = 3 / 8
HAND_CE = 5 / 2 * LN(2) - 1 / 4 * LN(3)  # 1.458215...
_KL_P_M = 1 / 2 * LN(8 / 5) + 1 / 4 * LN(4 / 5) + 1 / 4 * LN(2 / 3)
_KL_Q_M = 1 / 8 * LN(2 / 5) + 3 / 8 * LN(6 / 5) + 1 / 2 * LN(4 / 3)
HAND_GJSD_HALF = (0.5 * _KL_P_M + 0.5 * _KL_Q_M) / 0.25  # 0.351050...
HAND = {
    'kl': HAND_KL,
    'reverse_kl': HAND_RKL,
    'generalized_jsd': HAND_GJSD_HALF,
    'total_variation': HAND_TV,
    'soft_cross_entropy': HAND_CE,
}


def _call(name, s, t, temperature, where, beta):
  kwargs = dict(temperature=temperature, where=where)
  if name == 'generalized_jsd':
    kwargs['beta'] = beta
  return RAW[name](s, t, **kwargs)


@jax.jit
def _values(s, t, temperature=1.0, where=None, beta=0.5):
  """All five kernels, jitted together; temperature and beta are traced."""
  return {name: _call(name, s, t, temperature, where, beta) for name in NAMES}


@functools.partial(jax.jit, static_argnames=('argnum',))
def _grads(s, t, temperature=1.0, where=None, beta=0.5, *, argnum=0):
  """Gradients of each ``kernel(s, t).sum()`` w.r.t. s (0) or t (1)."""
  def grad(name):
    f = lambda s, t: _call(name, s, t, temperature, where, beta).sum()
    return jax.grad(f, argnums=argnum)(s, t)
  return {name: grad(name) for name in NAMES}


def _fixture_logits(dtype=np.float32):
  return np.log(Q_STUDENT).astype(dtype), np.log(P_TEACHER).astype(dtype)


def _random_logits(seed, shape=SHAPE, scale=2.0, dtype=jnp.float32):
  ks, kt = jax.random.split(jax.random.key(seed))
  return (scale * jax.random.normal(ks, shape, dtype),
          scale * jax.random.normal(kt, shape, dtype))


def _np_softmax(logits, temperature=1.0):
  """Float64 softmax in NumPy (JAX would compute in float32 without x64)."""
  z = np.asarray(logits, np.float64) / temperature
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _np_gjsd(p, q, beta):
  """NumPy float64 reference straight from the GKD definition (normalized)."""
  m = beta * p + (1 - beta) * q
  kl_pm = np.sum(p * np.log(p / m), axis=-1)
  kl_qm = np.sum(q * np.log(q / m), axis=-1)
  return (beta * kl_pm + (1 - beta) * kl_qm) / (beta * (1 - beta))


# -------------------------------------------------------------- hand values


def test_hand_computed_three_classes():
  s, t = _fixture_logits()
  for name in NAMES:
    # Eager calls (the rest of the file mostly runs jitted).
    np.testing.assert_allclose(RAW[name](s, t), HAND[name], rtol=1e-6,
                               err_msg=name)
    # Logits 2*log(p) at T=2 give the same distributions as log(p) at T=1,
    # so the value is exactly the hand value times T**power.
    np.testing.assert_allclose(
        RAW[name](2 * s, 2 * t, temperature=2.0),
        2**T_POWER[name] * HAND[name], rtol=1e-6, err_msg=name)
  # Jitted, batched: the same numbers.
  out = _values(np.stack([s, 2 * s]), np.stack([t, 2 * t]),
                jnp.array([1.0, 2.0]))
  for name in NAMES:
    np.testing.assert_allclose(
        out[name], [HAND[name], 2**T_POWER[name] * HAND[name]], rtol=1e-6,
        err_msg=name)


def test_hand_values_agree_with_numpy():
  # The closed forms above, re-derived with NumPy from the definitions.
  p, q = P_TEACHER, Q_STUDENT
  np.testing.assert_allclose(np.sum(p * np.log(p / q)), HAND_KL, rtol=1e-12)
  np.testing.assert_allclose(np.sum(q * np.log(q / p)), HAND_RKL, rtol=1e-12)
  np.testing.assert_allclose(0.5 * np.abs(p - q).sum(), HAND_TV, rtol=1e-12)
  np.testing.assert_allclose(-np.sum(p * np.log(q)), HAND_CE, rtol=1e-12)
  np.testing.assert_allclose(_np_gjsd(p, q, 0.5), HAND_GJSD_HALF, rtol=1e-12)


def test_generalized_jsd_middle_matches_numpy():
  s, t = _random_logits(0)
  p, q = _np_softmax(t), _np_softmax(s)
  for beta in (0.1, 0.3, 0.5, 0.9):
    got = _values(s, t, beta=beta)['generalized_jsd']
    np.testing.assert_allclose(got, _np_gjsd(p, q, beta), rtol=1e-5)
    # GKD's / TRL's unnormalized JSD(beta) is beta (1 - beta) times the kernel.
    m = beta * p + (1 - beta) * q
    gkd = (beta * np.sum(p * np.log(p / m), -1) +
           (1 - beta) * np.sum(q * np.log(q / m), -1))
    np.testing.assert_allclose(beta * (1 - beta) * got, gkd, rtol=1e-5)


# ---------------------------------------------------------- GJSD endpoints


def test_generalized_jsd_limits():
  s, t = _random_logits(1)
  kl = RAW['kl'](s, t, temperature=1.5)
  rkl = RAW['reverse_kl'](s, t, temperature=1.5)
  gjsd = lambda beta: RAW['generalized_jsd'](s, t, beta=beta, temperature=1.5)
  # Python endpoints are exactly the two KLs.
  np.testing.assert_array_equal(gjsd(0.0), kl)
  np.testing.assert_array_equal(gjsd(1.0), rkl)
  np.testing.assert_array_equal(gjsd(0), kl)
  np.testing.assert_array_equal(gjsd(1), rkl)
  # ... and the limits of the interior formula: continuous, error O(beta).
  np.testing.assert_allclose(gjsd(1e-4), kl, rtol=2e-3, atol=1e-5)
  np.testing.assert_allclose(gjsd(1 - 1e-4), rkl, rtol=2e-3, atol=1e-5)
  # Near the endpoints the interior formula stays accurate in float32 (no
  # cancellation before the division by beta (1 - beta)): compare with the
  # float64 NumPy definition.
  p, q = _np_softmax(t, 1.5), _np_softmax(s, 1.5)
  for beta in (1e-6, 1e-4, 1e-2, 1 - 1e-2, 1 - 1e-4):
    np.testing.assert_allclose(gjsd(beta), 1.5**2 * _np_gjsd(p, q, beta),
                               rtol=1e-5, err_msg=f'beta={beta}')


def test_generalized_jsd_traced_beta_selects_endpoints():
  s, t = _random_logits(2)
  for beta in (0.0, 0.25, 1.0):
    np.testing.assert_allclose(
        _values(s, t, beta=beta)['generalized_jsd'],
        RAW['generalized_jsd'](s, t, beta=beta), rtol=1e-6)
  # The student gradient at a traced endpoint is the KL's.
  for beta, name in ((0.0, 'kl'), (1.0, 'reverse_kl')):
    g = _grads(s, t, beta=beta)
    np.testing.assert_allclose(g['generalized_jsd'], g[name], rtol=1e-5,
                               atol=1e-6)


@pytest.mark.parametrize('beta', [-0.1, 1.5, float('nan'), True, [0.5]])
def test_generalized_jsd_bad_beta(beta):
  s, t = _fixture_logits()
  with pytest.raises(ValueError, match='beta'):
    RAW['generalized_jsd'](s, t, beta=beta)


def test_generalized_jsd_traced_beta_must_be_scalar():
  s, t = _fixture_logits()
  with pytest.raises(ValueError, match='beta must be a scalar'):
    RAW['generalized_jsd'](s, t, beta=jnp.array([0.5]))


# --------------------------------------------------------------- invariants


def test_zero_on_equal_inputs():
  s, _ = _random_logits(3, scale=3.0)
  same = _values(s, s, 2.0)
  # A constant shift of the logits does not change the distribution.
  shifted = _values(s, s + 7.0)
  for name in DIVERGENCES:
    np.testing.assert_allclose(same[name], 0.0, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(shifted[name], 0.0, atol=1e-5, err_msg=name)


def test_soft_cross_entropy_is_entropy_plus_kl():
  s, t = _random_logits(4)
  temp = 3.0
  p = jax.nn.softmax(t / temp)
  entropy = -jnp.sum(p * jax.nn.log_softmax(t / temp), -1)
  out = _values(s, t, temp)
  np.testing.assert_allclose(out['soft_cross_entropy'],
                             temp**2 * entropy + out['kl'], rtol=1e-5)


def test_non_negative():
  for seed, temperature in enumerate((0.5, 1.0, 4.0)):
    s, t = _random_logits(5 + seed, scale=4.0)
    for name, out in _values(s, t, temperature).items():
      assert out.shape == SHAPE[:1]
      assert bool(jnp.all(out > 0)), (name, out)  # Random pairs differ.


def test_total_variation_bounds():
  s, t = _random_logits(6, scale=20.0)
  assert bool(jnp.all(_values(s, t)['total_variation'] <= 1.0))
  # Disjoint point masses: TV = 1.
  big = jnp.array([[50.0, -50.0]])
  np.testing.assert_allclose(RAW['total_variation'](big, -big), [1.0])


@pytest.mark.parametrize('name', NAMES)
def test_output_shapes_and_dtypes(name):
  for shape in ((2, 3, 1, 6), (6,)):
    for dtype in (jnp.float32, jnp.bfloat16, jnp.float16):
      x = jax.ShapeDtypeStruct(shape, dtype)
      out = jax.eval_shape(RAW[name], x, x)
      assert (out.shape, out.dtype) == (shape[:-1], jnp.float32)


# ---------------------------------------------------------------- gradients


def test_teacher_gradient_is_exactly_zero():
  s, t = _random_logits(8)
  for beta in (0.5, 1.0):
    for name, g_t in _grads(s, t, 2.0, beta=beta, argnum=1).items():
      np.testing.assert_array_equal(g_t, jnp.zeros_like(t), err_msg=name)


@jax.jit
def _self_distillation_grads(z):
  return {name: jax.grad(lambda z: RAW[name](z, z * 1.5).sum())(z)
          for name in NAMES}


def test_self_distillation_gradient_is_student_only():
  # Teacher and student from the same array: only the student path counts.
  s, _ = _random_logits(9)
  g_self = _self_distillation_grads(s)
  g_student = _grads(s, s * 1.5)
  for name in NAMES:
    np.testing.assert_allclose(g_self[name], g_student[name], rtol=1e-5,
                               atol=1e-7, err_msg=name)


def test_kl_student_gradient_closed_form():
  # d/dz_s [T**2 KL(p_t || p_s)] = T (p_s - p_t); the same for soft CE.
  s, t = _random_logits(10)
  for temperature in (1.0, 3.0):
    want = temperature * (jax.nn.softmax(s / temperature) -
                          jax.nn.softmax(t / temperature))
    g = _grads(s, t, temperature)
    for name in ('kl', 'soft_cross_entropy'):
      np.testing.assert_allclose(g[name], want, rtol=1e-5, atol=1e-6,
                                 err_msg=name)


def _stacked(s, t, temperature, beta=0.5):
  """All kernels' outputs stacked, ``[5, ...]``, for one ``check_grads``."""
  return jnp.stack(list(_values(s, t, temperature, beta=beta).values()))


def test_check_grads_student():
  # Numerical vs automatic derivatives (forward and reverse mode), in float64.
  with jax.enable_x64(True):
    s, t = _random_logits(11, (3, 5), dtype=jnp.float64)
    jtu.check_grads(lambda s: _stacked(s, t, 1.7, 0.2), (s,), order=1,
                    modes=('fwd', 'rev'))


def test_gradient_wrt_traced_temperature():
  # A learned temperature (e.g. CTKD) gets a gradient; check it numerically.
  with jax.enable_x64(True):
    s, t = _random_logits(12, (3, 5), dtype=jnp.float64)
    jtu.check_grads(lambda temp: _stacked(s, t, temp), (jnp.float64(2.0),),
                    order=1, modes=('rev',))


# ------------------------------------------------------- temperature limits


def test_high_temperature_limit():
  # With c = z - mean(z), T -> inf gives (Hinton et al. 2015, section 2.1)
  #   T**2 * D -> 1/(2V) sum (c_s - c_t)**2   for KL, reverse KL, GJSD(beta),
  #   T * TV   -> 1/(2V) sum |c_s - c_t|,
  # with a relative error O(1/T). Checked in float64 at T = 1e3.
  with jax.enable_x64(True):
    s, t = _random_logits(13, dtype=jnp.float64)
    v = s.shape[-1]
    diff = (s - s.mean(-1, keepdims=True)) - (t - t.mean(-1, keepdims=True))
    quadratic = jnp.sum(diff**2, -1) / (2 * v)
    absolute = jnp.sum(jnp.abs(diff), -1) / (2 * v)
    temp = 1e3
    for beta in (0.0, 0.1, 0.5, 0.9, 1.0):
      out = _values(s, t, temp, beta=beta)
      for name in ('kl', 'reverse_kl', 'generalized_jsd'):
        np.testing.assert_allclose(out[name], quadratic, rtol=1e-2,
                                   err_msg=f'{name} beta={beta}')
      np.testing.assert_allclose(out['total_variation'], absolute, rtol=1e-2)
    # The error shrinks like 1/T.
    err = lambda temp: jnp.max(
        jnp.abs(_values(s, t, temp)['kl'] / quadratic - 1))
    assert err(1e3) < err(1e2) / 5 < err(1e1) / 25


def test_high_temperature_limit_float32():
  # Same limit in float32 at a moderate temperature.
  s, t = _random_logits(14)
  diff = (s - s.mean(-1, keepdims=True)) - (t - t.mean(-1, keepdims=True))
  quadratic = jnp.sum(diff**2, -1) / (2 * s.shape[-1])
  np.testing.assert_allclose(_values(s, t, 100.0)['kl'], quadratic, rtol=5e-2)


def test_low_temperature_limit():
  # T -> 0: distributions become one-hot; T * TV -> T * [argmax differs].
  s = jnp.array([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0]])
  t = jnp.array([[3.0, 0.0, 1.0], [2.0, 0.0, 1.0]])
  temp = 0.01
  out = _values(s, t, temp)
  np.testing.assert_allclose(out['total_variation'], [0.0, temp], atol=1e-6)
  np.testing.assert_allclose(out['kl'][0], 0.0, atol=1e-6)


# ------------------------------------------------------------------ masking


def test_mask_equals_slice():
  s, t = _random_logits(15)
  keep = np.array([True, False, True, True, False, True])
  where = jnp.asarray(keep)
  got = _values(s, t, 2.0, where)
  want = _values(s[:, keep], t[:, keep], 2.0)
  # Same for the student gradient; masked classes get exactly zero.
  g_mask = _grads(s, t, 2.0, where)
  g_slice = _grads(s[:, keep], t[:, keep], 2.0)
  for name in NAMES:
    np.testing.assert_allclose(got[name], want[name], rtol=1e-6, atol=1e-7,
                               err_msg=name)
    np.testing.assert_allclose(g_mask[name][:, keep], g_slice[name],
                               rtol=1e-5, atol=1e-7, err_msg=name)
    np.testing.assert_array_equal(g_mask[name][:, ~keep], 0.0, err_msg=name)


def test_per_example_mask_broadcasts():
  # A [B, 1, V] mask against [B, L, V] logits equals setting the masked logits
  # to -inf in both models (itself equal to slicing, see the -inf test).
  s, t = _random_logits(16, (2, 3, 6))
  keep = np.ones((2, 1, 6), bool)
  keep[0, 0, [1, 4]] = False
  keep[1, 0, [0]] = False
  got = _values(s, t, 1.0, jnp.asarray(keep))
  want = _values(jnp.where(keep, s, -jnp.inf), jnp.where(keep, t, -jnp.inf))
  for name in NAMES:
    assert got[name].shape == (2, 3)
    np.testing.assert_allclose(got[name], want[name], rtol=1e-6, atol=1e-7,
                               err_msg=name)


def test_mask_bad_shape_and_dtype():
  s, t = _random_logits(17, (3, 8))
  with pytest.raises(ValueError, match=r'where.*\(3, 8\).*\(5,\)'):
    losses.kl_divergence(s, t, where=jnp.ones((5,), bool))
  with pytest.raises(ValueError, match='where'):
    losses.kl_divergence(s, t, where=jnp.ones((2, 3, 8), bool))
  with pytest.raises(TypeError, match='boolean'):
    losses.kl_divergence(s, t, where=jnp.ones((8,), jnp.float32))


def test_fully_masked_row_is_zero_and_finite():
  s, t = _random_logits(18)
  keep = jnp.ones(SHAPE, bool).at[1].set(False).at[2, 3].set(False)
  out = _values(s, t, 1.0, keep)
  g = _grads(s, t, 1.0, keep)
  for name in NAMES:
    assert out[name][1] == 0.0, name
    assert bool(jnp.all(jnp.isfinite(out[name]))), name
    assert bool(jnp.all(jnp.isfinite(g[name]))), name
    np.testing.assert_array_equal(g[name][1], 0.0, err_msg=name)


# ---------------------------------------------------- extreme values, dtypes


def test_neg_inf_in_both_models_is_finite():
  s, t = _random_logits(19)
  dead = np.array([False, True, False, False, True, False])
  s_inf = s.at[:, dead].set(-jnp.inf)
  t_inf = t.at[:, dead].set(-jnp.inf)
  for beta in (0.0, 0.5, 1.0):
    out = _values(s_inf, t_inf, 2.0, beta=beta)
    g = _grads(s_inf, t_inf, 2.0, beta=beta)
    # -inf classes are simply absent: same as slicing them out.
    want = _values(s[:, ~dead], t[:, ~dead], 2.0, beta=beta)
    for name in NAMES:
      msg = f'{name} beta={beta}'
      assert bool(jnp.all(jnp.isfinite(out[name]))), msg
      assert bool(jnp.all(jnp.isfinite(g[name]))), msg
      np.testing.assert_allclose(out[name], want[name], rtol=1e-6, atol=1e-7,
                                 err_msg=msg)
      np.testing.assert_array_equal(g[name][:, dead], 0.0, err_msg=msg)


def test_student_neg_inf_where_teacher_has_mass():
  # Forward KL/CE are honestly infinite; JSD/TV stay bounded and finite;
  # reverse KL ignores classes the student does not support.
  s = jnp.array([[0.0, -jnp.inf, 1.0]])
  t = jnp.array([[0.0, 1.0, 1.0]])
  for beta in (0.2, 0.5, 0.8, 1.0):
    out = _values(s, t, beta=beta)
    g = _grads(s, t, beta=beta)
    assert out['kl'] == jnp.inf and out['soft_cross_entropy'] == jnp.inf
    for name in ('generalized_jsd', 'total_variation', 'reverse_kl'):
      assert bool(jnp.isfinite(out[name])) and out[name] > 0, (name, beta)
      assert bool(jnp.all(jnp.isfinite(g[name]))), (name, beta, g[name])


def test_huge_logits_are_finite():
  s = jnp.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4], [1e4, 1e4, -1e4]])
  t = jnp.array([[-1e4, 1e4, 0.0], [1e4, -1e4, 1e4], [1e4, 1e4, -1e4]])
  for beta in (0.0, 0.5, 1.0):
    out = _values(s, t, beta=beta)
    g = _grads(s, t, beta=beta)
    for name in NAMES:
      msg = f'{name} beta={beta}'
      assert bool(jnp.all(jnp.isfinite(out[name]))), (msg, out[name])
      assert bool(jnp.all(jnp.isfinite(g[name]))), (msg, g[name])
      assert bool(jnp.all(out[name] >= 0)), msg
      np.testing.assert_allclose(
          out[name][2], math.log(2) if name == 'soft_cross_entropy' else 0.0,
          atol=1e-6, err_msg=msg)
  # Row 0: p_t = one-hot(1) and log p_s[1] = -2e4.
  np.testing.assert_allclose(out['kl'][0], 2e4, rtol=1e-6)


@pytest.mark.parametrize('dtype', [jnp.bfloat16, jnp.float16])
def test_low_precision_inputs_upcast(dtype):
  s, t = _random_logits(20)
  s_low, t_low = s.astype(dtype), t.astype(dtype)
  out = _values(s_low, t_low, 2.0)
  # Identical to the fp32 computation on the same (rounded) values ...
  rounded = _values(s_low.astype(jnp.float32), t_low.astype(jnp.float32), 2.0)
  # ... and close to the unrounded fp32 one (bf16 keeps ~3 digits).
  exact = _values(s, t, 2.0)
  # Mixed precision (low-precision teacher, fp32 student) gives fp32 too.
  mixed = _values(s, t_low)
  g = _grads(s_low, t_low)
  for name in NAMES:
    assert out[name].dtype == jnp.float32, name
    np.testing.assert_allclose(out[name], rounded[name], rtol=1e-6, atol=1e-7,
                               err_msg=name)
    np.testing.assert_allclose(out[name], exact[name], rtol=3e-2, atol=1e-3,
                               err_msg=name)
    assert mixed[name].dtype == jnp.float32, name
    assert g[name].dtype == dtype and bool(jnp.all(jnp.isfinite(g[name])))


# --------------------------------------------------- jit, vmap, validation


def test_jit_and_vmap():
  s, t = _random_logits(21, (2, 3, 6))
  want = _values(s, t, 2.0)
  vmapped = jax.vmap(lambda s, t: _values(s, t, 2.0))(s, t)
  # Per-example temperatures, vmapped or broadcast ([2, 1] against [2, 3]).
  temps = jnp.array([0.5, 4.0])
  per_example = jax.vmap(lambda s, t, temp: _values(s, t, temp))(s, t, temps)
  broadcast = _values(s, t, temps[:, None])
  last = _values(s[1], t[1], 4.0)
  for name in NAMES:
    np.testing.assert_allclose(vmapped[name], want[name], rtol=1e-6,
                               err_msg=name)
    np.testing.assert_allclose(broadcast[name], per_example[name], rtol=1e-6,
                               err_msg=name)
    np.testing.assert_allclose(per_example[name][1], last[name], rtol=1e-6,
                               err_msg=name)
  # jax.jit straight on a kernel, Python temperature closed over.
  np.testing.assert_allclose(
      jax.jit(functools.partial(RAW['kl'], temperature=2.0))(s, t),
      want['kl'], rtol=1e-6)


@pytest.mark.parametrize('name', NAMES)
def test_shape_mismatch_names_both_shapes(name):
  s, t = _fixture_logits()
  with pytest.raises(ValueError, match=r'\(3,\).*\(2,\)'):
    RAW[name](s, t[:2])
  with pytest.raises(ValueError, match='same shape'):
    jax.jit(RAW[name])(s, t[None])


@pytest.mark.parametrize('name', NAMES)
@pytest.mark.parametrize(
    'temperature', [0.0, -1.0, float('inf'), np.float32(0.0), [2.0, -1.0]])
def test_bad_temperature(name, temperature):
  s, t = _fixture_logits()
  s, t = np.stack([s, s]), np.stack([t, t])
  with pytest.raises(ValueError, match='temperature'):
    RAW[name](s, t, temperature=temperature)


def test_temperature_shape_dtype_and_keyword_only():
  s, t = _random_logits(24)
  with pytest.raises(ValueError, match=r'temperature.*\(4,\).*\(3,\)'):
    losses.kl_divergence(s, t, temperature=jnp.ones((3,)))
  with pytest.raises(TypeError):
    losses.kl_divergence(s, t, 2.0)  # pylint: disable=too-many-function-args
  with pytest.raises(TypeError, match='floating'):
    losses.kl_divergence(jnp.ones((2, 3), jnp.int32), jnp.ones((2, 3)))
  with pytest.raises(ValueError, match='class axis'):
    losses.kl_divergence(jnp.float32(1.0), jnp.float32(1.0))


def test_registered():
  assert set(RAW) <= set(registry.names('losses'))
  for name, kernel in RAW.items():
    assert registry.get('losses', name) is kernel
