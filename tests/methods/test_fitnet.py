"""``fitnet`` (Romero et al. 2015): CE + 100 * the hint MSE through a learnt regressor."""

import numpy as np
import pytest

from distill_jax import registry


def test_loss_hand_computed(pair, distiller_loss, ref):
  # Student and teacher stage2 are both 4x4x4: the regressor is a 1x1 conv, BN and
  # ReLU, so with an identity conv it is ReLU(BN(s)).
  s, t = pair[0][1]['stage2'], pair[1][1]['stage2']
  hint = np.mean((np.maximum(ref.batch_norm(s), 0.0) - t)**2)
  distiller_loss(registry.get('methods', 'fitnet')(), hint, identity_connectors=True)


def test_hint_only_first_stage(two_stages):
  two_stages(registry.get('methods', 'fitnet')(init_steps=3), 'fitnet')


def test_regressor_is_the_only_aux(pair, run):
  assert set(run(registry.get('methods', 'fitnet')(), *pair)[2]) == {'regressor'}


def test_zero_gradient_to_the_teacher(pair, zero_teacher_gradient):
  zero_teacher_gradient(registry.get('methods', 'fitnet')(), *pair)


def test_shape_mismatch_names_both_layers(pair, run):
  method = registry.get('methods', 'fitnet')(student_features='stage3', teacher_features='stage1')
  with pytest.raises(ValueError, match=r"'fitnet'.*'stage3' \(4, 2, 2, 8\).*'stage1' \(4, 8, 8, 4\)"):
    run(method, *pair)


def test_defaults_and_bad_hyper_parameters(distiller_hyper_parameters):
  distiller_hyper_parameters('fitnet', weight=100)


def test_two_steps_from_the_fashion_mnist_config(fashion_run):
  for logged in fashion_run('fitnet'):  # one stage, as RepDistiller
    np.testing.assert_allclose(logged['loss'], logged['ce'] + 100 * logged['fitnet'], rtol=1e-5)
