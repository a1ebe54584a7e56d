"""``dkd`` (Zhao et al. 2022): hand-computed TCKD, the KD decomposition, warm-up."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax import losses
from distill_jax import registry
from distill_jax.methods import dkd


def test_tckd_plus_weighted_nckd_is_kd():
  rng = np.random.default_rng(0)
  s = jnp.asarray(rng.normal(size=(3, 6)), jnp.float32)
  t = jnp.asarray(rng.normal(size=(3, 6)), jnp.float32)
  labels = jnp.array([0, 3, 5])
  tckd, nckd = dkd.decoupled_kd(s, t, labels, temperature=2.0)
  p_gt = jax.nn.softmax(t / 2.0)[jnp.arange(3), labels]
  np.testing.assert_allclose(tckd + (1 - p_gt) * nckd,
                             losses.kl_divergence(s, t, temperature=2.0), rtol=1e-5)


def test_tckd_hand_computed():
  s = jnp.log(jnp.array([[0.5, 0.25, 0.25]]))
  t = jnp.log(jnp.array([[0.8, 0.1, 0.1]]))
  tckd, nckd = dkd.decoupled_kd(s, t, jnp.array([0]), temperature=1.0)
  np.testing.assert_allclose(tckd, [0.8 * np.log(0.8 / 0.5) + 0.2 * np.log(0.2 / 0.5)], rtol=1e-5)
  np.testing.assert_allclose(nckd, [0.0], atol=1e-6)  # same non-target shape


def test_dkd_loss_and_warmup(pair, run):
  student, teacher, batch = pair
  method = registry.get('methods', 'dkd')(alpha=1.0, beta=8.0, warmup_steps=4)
  loss0, m, _ = run(method, student, teacher, batch, step=0)
  np.testing.assert_allclose(loss0, m['ce'] + 0.25 * (m['tckd'] + 8 * m['nckd']), rtol=1e-5)
  loss9 = run(method, student, teacher, batch, step=9)[0]
  np.testing.assert_allclose(loss9, m['ce'] + m['tckd'] + 8 * m['nckd'], rtol=1e-5)


def test_zero_gradient_to_the_teacher(pair, zero_teacher_gradient):
  zero_teacher_gradient(registry.get('methods', 'dkd')(), *pair)


@pytest.mark.parametrize('kwargs, message', [
    ({'temperature': -1.0}, 'dkd.temperature must be > 0'),
    ({'beta': '8'}, 'dkd.beta must be a number')])
def test_bad_hyper_parameters(kwargs, message):
  with pytest.raises(ValueError, match=message):
    registry.get('methods', 'dkd')(**kwargs)


def test_two_steps_from_the_fashion_mnist_config(fashion_run):
  # Warm-up over 1/8 of an epoch of the full run, round(468 / 8) = 58 steps:
  # the DKD terms weigh s / 58 at logged step s (step index s - 1).
  for step, logged in enumerate(fashion_run('dkd'), start=1):
    expected = logged['ce'] + step / 58 * (logged['tckd'] + 8 * logged['nckd'])
    np.testing.assert_allclose(logged['loss'], expected, rtol=1e-5)
