"""``ce`` and ``kd`` methods against hand-computed values."""

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from distill_jax import methods


def _log_softmax(x):
  x = np.asarray(x, np.float64)
  return x - np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True)) - x.max(-1, keepdims=True)


STUDENT = np.array([[2.0, 0.0, -1.0], [0.5, 0.5, 1.0]], np.float32)
TEACHER = np.array([[3.0, 1.0, 0.0], [0.0, 2.0, 0.0]], np.float32)
LABELS = np.array([0, 1], np.int32)


def _method(**values):
  return methods.from_config(ml_collections.ConfigDict(values))


def test_ce_is_mean_negative_log_likelihood():
  loss, metrics = _method(name='ce').loss((jnp.asarray(STUDENT), {}), None,
                                          {'label': LABELS}, {}, 0)
  expected = -np.mean(_log_softmax(STUDENT)[np.arange(2), LABELS])
  np.testing.assert_allclose(loss, expected, rtol=1e-6)
  np.testing.assert_allclose(metrics['ce'], expected, rtol=1e-6)


def test_kd_matches_hinton_formula():
  temperature, alpha = 4.0, 0.3
  loss, metrics = _method(name='kd', temperature=temperature, alpha=alpha).loss(
      (jnp.asarray(STUDENT), {}), (jnp.asarray(TEACHER), {}), {'label': LABELS}, {}, 0)
  log_p_s = _log_softmax(STUDENT / temperature)
  log_p_t = _log_softmax(TEACHER / temperature)
  kl = temperature**2 * np.mean(np.sum(np.exp(log_p_t) * (log_p_t - log_p_s), -1))
  ce = -np.mean(_log_softmax(STUDENT)[np.arange(2), LABELS])
  np.testing.assert_allclose(metrics['kl'], kl, rtol=1e-5)
  np.testing.assert_allclose(metrics['ce'], ce, rtol=1e-6)
  np.testing.assert_allclose(loss, alpha * ce + (1 - alpha) * kl, rtol=1e-5)


def test_kd_of_identical_logits_is_alpha_ce():
  loss, metrics = _method(name='kd', alpha=0.5).loss(
      (jnp.asarray(STUDENT), {}), (jnp.asarray(STUDENT), {}), {'label': LABELS}, {}, 0)
  np.testing.assert_allclose(metrics['kl'], 0.0, atol=1e-6)
  np.testing.assert_allclose(loss, 0.5 * metrics['ce'], rtol=1e-6)


@pytest.mark.parametrize('values, message', [
    ({'name': 'kd', 'temperature': 0.0}, 'kd.temperature must be > 0'),
    ({'name': 'kd', 'temperature': -2.0}, 'kd.temperature must be > 0'),
    ({'name': 'kd', 'alpha': 'a lot'}, 'kd.alpha must be a number'),
    ({'name': 'kd', 'alpha': 1.5}, r'kd.alpha must be in \[0, 1\]'),
    ({'name': 'kd', 'temprature': 4.0}, "no hyper-parameter.*temprature.*takes: alpha, temperature"),
    ({'name': 'kdd'}, "Unknown name 'kdd'.*Registered methods: .*ce, .*kd"),
])
def test_bad_hyper_parameters_are_clear_errors(values, message):
  with pytest.raises(ValueError, match=message):
    _method(**values)
