"""at, nst, sp, pkt, rkd, fitnet, vid, ab, fsp, ft, cc: each method is CE + weight * its kernel."""

import dataclasses

import jax
import numpy as np
import pytest

from distill_jax import losses
from distill_jax import registry
from distill_jax.methods import base
from distill_jax.methods.ce import hard_label_cross_entropy

# method -> (its term from the kernels, for the fixture's features).
KERNEL_TERMS = {
    'at': lambda s, t: sum(losses.attention_transfer(s[f'stage{i}'], t[f'stage{i}']).mean()
                           for i in (1, 2, 3)),
    'nst': lambda s, t: sum(losses.neuron_selectivity_mmd(s[f'stage{i}'], t[f'stage{i}']).mean()
                            for i in (1, 2, 3)),
    'sp': lambda s, t: losses.similarity_preserving(s['stage3'], t['stage3']).mean(),
    'pkt': lambda s, t: losses.probabilistic_knowledge_transfer(s['pre_logits'],
                                                                t['pre_logits']).mean(),
    'rkd': lambda s, t: (25 * losses.rkd_distance(s['pre_logits'], t['pre_logits']).mean() +
                         50 * losses.rkd_angle(s['pre_logits'], t['pre_logits']).mean()),
}


def _teacher_for(name, student, teacher):
  """FSP needs the student's channel counts: use a second student-shaped output."""
  if name != 'fsp':
    return teacher
  return (teacher[0], jax.tree.map(lambda x: x[::-1] * 2.0, student[1]))


ALL = ('fitnet', 'at', 'nst', 'ft', 'ab', 'fsp', 'vid', 'rkd', 'sp', 'cc', 'pkt', 'crd')


@pytest.mark.parametrize('name', sorted(KERNEL_TERMS))
def test_loss_is_ce_plus_weighted_kernel(name, pair, run):
  student, teacher, batch = pair
  method = registry.get('methods', name)(kd_weight=0.5)
  loss, metrics, _ = run(method, student, teacher, batch)
  term = KERNEL_TERMS[name](student[1], teacher[1])
  ce = hard_label_cross_entropy(student[0], batch['label'])
  kl = losses.kl_divergence(student[0], teacher[0], temperature=4.0).mean()
  np.testing.assert_allclose(loss, ce + 0.5 * kl + method.weight * term, rtol=1e-5)
  np.testing.assert_allclose(metrics[name], term, rtol=1e-5)


def test_repdistiller_weights_are_the_defaults():
  weights = {'fitnet': 100, 'at': 1000, 'nst': 50, 'sp': 3000, 'pkt': 30000, 'ft': 200,
             'fsp': 50, 'vid': 1, 'rkd': 1, 'cc': 0.02, 'crd': 0.8, 'ab': 1}
  for name, weight in weights.items():
    method = registry.get('methods', name)()
    assert (method.weight, method.ce_weight, method.kd_weight, method.temperature) == (
        weight, 1.0, 0.0, 4.0), name


@pytest.mark.parametrize('name', ALL)
def test_finite_loss_and_zero_gradient_to_the_teacher(name, pair, run):
  student, teacher, batch = pair
  teacher = _teacher_for(name, student, teacher)
  method = registry.get('methods', name)(**({'nce_k': 4} if name == 'crd' else {}))
  loss = run(method, student, teacher, batch)[0]
  assert np.isfinite(loss)
  grad = jax.grad(lambda t: run(method, student, (teacher[0], t), batch)[0])(teacher[1])
  for leaf in jax.tree.leaves(grad):
    np.testing.assert_array_equal(leaf, 0.0)


@pytest.mark.parametrize('name', ('at', 'nst', 'sp', 'pkt', 'rkd'))
def test_same_features_give_zero_term(name, pair, run):
  student, _, batch = pair
  method = registry.get('methods', name)()
  assert run(method, student, student, batch)[1][name] == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize('name', ('fitnet', 'ab', 'fsp', 'ft'))
def test_first_stage_optimises_only_the_distillation_term(name, pair, run):
  student, teacher, batch = pair
  teacher = _teacher_for(name, student, teacher)
  method = registry.get('methods', name)(init_steps=3)
  first, metrics, _ = run(method, student, teacher, batch, step=2)
  second = run(method, student, teacher, batch, step=3)[0]
  stage_one = metrics['reconstruction'] if name == 'ft' else metrics[name]
  np.testing.assert_allclose(first, stage_one, rtol=1e-6)
  assert second != first


def test_fitnet_regressor_is_trained(pair, run):
  student, teacher, batch = pair
  method = registry.get('methods', 'fitnet')()
  _, _, aux = run(method, student, teacher, batch)
  assert set(aux) == {'regressor'}


def test_missing_feature_lists_the_available_ones(pair, run):
  student, teacher, batch = pair
  with pytest.raises(base.MissingFeatureError,
                     match=r"stage9.*Its features: pre_logits .*stem \(4, 8, 8, 2\)"):
    run(registry.get('methods', 'at')(student_features='stage9'), student, teacher, batch)


def test_shape_mismatch_names_both_layers(pair, run):
  student, teacher, batch = pair
  with pytest.raises(ValueError, match=r"'fsp'.*student feature 'stage1' \(4, 8, 8, 2\) and "
                                       r"teacher feature 'stage1' \(4, 8, 8, 4\)"):
    run(registry.get('methods', 'fsp')(), student, teacher, batch)
  with pytest.raises(ValueError, match=r"'fitnet'.*'stage3' \(4, 2, 2, 8\).*'stage1' \(4, 8, 8, 4\)"):
    run(registry.get('methods', 'fitnet')(student_features='stage3', teacher_features='stage1'),
        student, teacher, batch)


@pytest.mark.parametrize('name', ALL)
@pytest.mark.parametrize('field, value, message', [
    ('weight', 'ten', 'must be a number'), ('weight', -1.0, 'must be >= 0'),
    ('temperature', 0.0, 'must be > 0')])
def test_bad_hyper_parameters(name, field, value, message):
  with pytest.raises(ValueError, match=f'{name}.{field} {message}'):
    registry.get('methods', name)(**{field: value})


def test_methods_are_frozen_dataclasses():
  for name in ALL:
    assert dataclasses.is_dataclass(registry.get('methods', name))
