"""``pkt`` (Passalis & Tefas 2018): CE + 30000 * KL of the cosine-similarity distributions."""

import numpy as np
import pytest

from distill_jax import losses
from distill_jax import registry


def test_zero_gradient_to_the_teacher(pair, zero_teacher_gradient):
  zero_teacher_gradient(registry.get('methods', 'pkt')(), *pair)


def test_loss_is_ce_plus_weighted_kernel(pair, distiller_loss):
  (_, s), (_, t), _ = pair
  distiller_loss(registry.get('methods', 'pkt')(kd_weight=0.5),
                 losses.probabilistic_knowledge_transfer(s['pre_logits'], t['pre_logits']).mean())


def test_same_features_give_zero_term(pair, run):
  same = run(registry.get('methods', 'pkt')(), pair[0], pair[0], pair[2])
  assert same[1]['pkt'] == pytest.approx(0.0, abs=1e-5)


def test_defaults_and_bad_hyper_parameters(distiller_hyper_parameters):
  distiller_hyper_parameters('pkt', weight=30000)


def test_two_steps_from_the_fashion_mnist_config(fashion_run):
  for logged in fashion_run('pkt'):
    np.testing.assert_allclose(logged['loss'], logged['ce'] + 30000 * logged['pkt'], rtol=1e-5)
