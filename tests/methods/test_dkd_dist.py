"""dkd and dist: hand-computed values and their definitions' invariants."""

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


def test_dist_loss(pair, run):
  student, teacher, batch = pair
  loss, m, _ = run(registry.get('methods', 'dist')(), student, teacher, batch)
  np.testing.assert_allclose(loss, m['ce'] + 2 * m['inter'] + 2 * m['intra'], rtol=1e-6)
  same = run(registry.get('methods', 'dist')(), student, student, batch)[1]
  assert same['inter'] == pytest.approx(0.0, abs=1e-3)  # T**2 times an fp32 epsilon


@pytest.mark.parametrize('name, kwargs, message', [
    ('dkd', {'temperature': -1.0}, 'dkd.temperature must be > 0'),
    ('dkd', {'beta': '8'}, 'dkd.beta must be a number'),
    ('dist', {'temperature': 0}, 'dist.temperature must be > 0'),
    ('dist', {'gamma': None}, 'dist.gamma must be a number')])
def test_bad_hyper_parameters(name, kwargs, message):
  with pytest.raises(ValueError, match=message):
    registry.get('methods', name)(**kwargs)
