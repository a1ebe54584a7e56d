"""``rkd`` (Park et al. 2019): CE + 25 * distance + 50 * angle losses of the embeddings."""

import numpy as np
import pytest

from distill_jax import losses
from distill_jax import registry


def test_loss_is_ce_plus_weighted_kernel(pair, distiller_loss):
  s, t = pair[0][1]['pre_logits'], pair[1][1]['pre_logits']
  distance, angle = losses.rkd_distance(s, t).mean(), losses.rkd_angle(s, t).mean()
  _, metrics = distiller_loss(registry.get('methods', 'rkd')(kd_weight=0.5),
                              25 * distance + 50 * angle)
  np.testing.assert_allclose([metrics['rkd_distance'], metrics['rkd_angle']], [distance, angle],
                             rtol=1e-6)


def test_same_features_give_zero_term(pair, run):
  student, _, batch = pair
  assert run(registry.get('methods', 'rkd')(), student, student, batch)[1]['rkd'] == (
      pytest.approx(0.0, abs=1e-5))


def test_zero_gradient_to_the_teacher(pair, zero_teacher_gradient):
  zero_teacher_gradient(registry.get('methods', 'rkd')(), *pair)


def test_defaults_and_bad_hyper_parameters(distiller_hyper_parameters):
  distiller_hyper_parameters('rkd', weight=1)


def test_two_steps_from_the_fashion_mnist_config(fashion_run):
  for logged in fashion_run('rkd'):
    np.testing.assert_allclose(logged['rkd'], 25 * logged['rkd_distance'] +
                               50 * logged['rkd_angle'], rtol=1e-5)
    np.testing.assert_allclose(logged['loss'], logged['ce'] + logged['rkd'], rtol=1e-5)
