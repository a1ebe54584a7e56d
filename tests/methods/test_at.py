"""``at`` (Zagoruyko & Komodakis 2017): CE + 1000 * attention transfer over the stages."""

import numpy as np
import pytest

from distill_jax import losses
from distill_jax import registry
from distill_jax.methods import base


def test_loss_is_ce_plus_weighted_kernel(pair, distiller_loss):
  s, t = pair[0][1], pair[1][1]
  distiller_loss(registry.get('methods', 'at')(kd_weight=0.5),
                 sum(losses.attention_transfer(s[f'stage{i}'], t[f'stage{i}']).mean()
                     for i in (1, 2, 3)))


def test_same_features_give_zero_term(pair, run):
  student, _, batch = pair
  assert run(registry.get('methods', 'at')(), student, student, batch)[1]['at'] == pytest.approx(
      0.0, abs=1e-5)


def test_defaults_and_bad_hyper_parameters(distiller_hyper_parameters):
  distiller_hyper_parameters('at', weight=1000)


def test_missing_feature_lists_the_available_ones(pair, run):
  student, teacher, batch = pair
  with pytest.raises(base.MissingFeatureError,
                     match=r"stage9.*Its features: pre_logits .*stem \(4, 8, 8, 2\)"):
    run(registry.get('methods', 'at')(student_features='stage9'), student, teacher, batch)


def test_zero_gradient_to_the_teacher(pair, zero_teacher_gradient):
  zero_teacher_gradient(registry.get('methods', 'at')(), *pair)


def test_two_steps_from_the_fashion_mnist_config(fashion_run):
  for logged in fashion_run('at'):
    np.testing.assert_allclose(logged['loss'], logged['ce'] + 1000 * logged['at'], rtol=1e-5)
