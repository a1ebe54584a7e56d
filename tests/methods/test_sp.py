"""``sp`` (Tung & Mori 2019): CE + 3000 * the batch-similarity difference of the last stage."""

import numpy as np
import pytest

from distill_jax import losses
from distill_jax import registry


def test_loss_is_ce_plus_weighted_kernel(pair, distiller_loss):
  term = losses.similarity_preserving(pair[0][1]['stage3'], pair[1][1]['stage3']).mean()
  distiller_loss(registry.get('methods', 'sp')(kd_weight=0.5), term)


def test_defaults_and_bad_hyper_parameters(distiller_hyper_parameters):
  distiller_hyper_parameters('sp', weight=3000)


def test_same_features_give_zero_term(pair, run):
  student, _, batch = pair
  sp = run(registry.get('methods', 'sp')(), student, student, batch)[1]['sp']
  assert sp == pytest.approx(0.0, abs=1e-5)


def test_zero_gradient_to_the_teacher(pair, zero_teacher_gradient):
  zero_teacher_gradient(registry.get('methods', 'sp')(), *pair)


def test_two_steps_from_the_fashion_mnist_config(fashion_run):
  for logged in fashion_run('sp'):
    np.testing.assert_allclose(logged['loss'], logged['ce'] + 3000 * logged['sp'], rtol=1e-5)
