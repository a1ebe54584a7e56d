"""``nst`` (Huang & Wang 2017): CE + 50 * the MMD of the stages' channel maps."""

import numpy as np
import pytest

from distill_jax import losses
from distill_jax import registry


def test_loss_is_ce_plus_weighted_kernel(pair, distiller_loss):
  s, t = pair[0][1], pair[1][1]
  term = sum(losses.neuron_selectivity_mmd(s[f'stage{i}'], t[f'stage{i}']).mean()
             for i in (1, 2, 3))
  distiller_loss(registry.get('methods', 'nst')(kd_weight=0.5), term)


def test_zero_gradient_to_the_teacher(pair, zero_teacher_gradient):
  zero_teacher_gradient(registry.get('methods', 'nst')(), *pair)


def test_same_features_give_zero_term(pair, run):
  metrics = run(registry.get('methods', 'nst')(), pair[0], pair[0], pair[2])[1]
  assert metrics['nst'] == pytest.approx(0.0, abs=1e-5)


def test_defaults_and_bad_hyper_parameters(distiller_hyper_parameters):
  distiller_hyper_parameters('nst', weight=50)


def test_two_steps_from_the_fashion_mnist_config(fashion_run):
  for logged in fashion_run('nst'):
    np.testing.assert_allclose(logged['loss'], logged['ce'] + 50 * logged['nst'], rtol=1e-5)
