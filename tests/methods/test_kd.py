"""``kd`` (Hinton et al. 2015) against hand-computed values; its config errors."""

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from distill_jax import methods


def _method(**values):
  return methods.from_config(ml_collections.ConfigDict(values))


def test_kd_matches_hinton_formula(logits_example, ref):
  student, teacher, labels = logits_example
  temperature, alpha = 4.0, 0.3
  loss, metrics = _method(name='kd', temperature=temperature, alpha=alpha).loss(
      (jnp.asarray(student), {}), (jnp.asarray(teacher), {}), {'label': labels}, {}, 0)
  log_p_s = ref.log_softmax(student / temperature)
  log_p_t = ref.log_softmax(teacher / temperature)
  kl = temperature**2 * np.mean(np.sum(np.exp(log_p_t) * (log_p_t - log_p_s), -1))
  ce = -np.mean(ref.log_softmax(student)[np.arange(2), labels])
  np.testing.assert_allclose(metrics['kl'], kl, rtol=1e-5)
  np.testing.assert_allclose(metrics['ce'], ce, rtol=1e-6)
  np.testing.assert_allclose(loss, alpha * ce + (1 - alpha) * kl, rtol=1e-5)


def test_kd_of_identical_logits_is_alpha_ce(logits_example):
  student, _, labels = logits_example
  loss, metrics = _method(name='kd', alpha=0.5).loss(
      (jnp.asarray(student), {}), (jnp.asarray(student), {}), {'label': labels}, {}, 0)
  np.testing.assert_allclose(metrics['kl'], 0.0, atol=1e-6)
  np.testing.assert_allclose(loss, 0.5 * metrics['ce'], rtol=1e-6)


def test_zero_gradient_to_the_teacher(pair, zero_teacher_gradient):
  zero_teacher_gradient(_method(name='kd', alpha=0.0), *pair)


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


def test_two_steps_from_the_fashion_mnist_config(fashion_run):
  for logged in fashion_run('kd'):  # the CRD paper's alpha = 0.1
    np.testing.assert_allclose(logged['loss'], 0.1 * logged['ce'] + 0.9 * logged['kl'], rtol=1e-5)
