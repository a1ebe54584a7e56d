"""``ab`` (Heo et al. 2019): activation boundaries of the pre-activations, layer-weighted."""

import numpy as np
import pytest

from distill_jax import registry


def _boundary(source, target, margin=1.0):
  """Batch mean of the summed alternative L2 loss: (s + m)**2 where the teacher
  neuron is off but s > -m, (s - m)**2 where it is on but s <= m."""
  source, target = np.asarray(source, np.float64), np.asarray(target)
  off = (source > -margin) & (target <= 0)
  on = (source <= margin) & (target > 0)
  per_element = np.where(off, (source + margin)**2, 0.0) + np.where(on, (source - margin)**2, 0.0)
  return per_element.reshape(len(source), -1).sum(-1).mean()


def test_worked_boundary_example():
  # Off and inside the margin: (0.5 + 1)**2; on but below it: (0.2 - 1)**2;
  # on and beyond it, off and beyond -m: nothing.
  assert _boundary(np.array([[0.5, 0.2, 3.0, -2.0]]), np.array([[-1, 1, 1, -1]])) == (
      pytest.approx(1.5**2 + 0.8**2))


def test_loss_hand_computed(pair, distiller_loss, ref):
  # Identity connectors (1x1 conv + BN) where the shapes differ (stages 1 and 3:
  # BN(s), zero-padded to the teacher's channels); stage 2 is compared as it is.
  s, t = pair[0][1], pair[1][1]
  sources = [ref.channels(ref.batch_norm(s['stage1_preact']), 4), s['stage2_preact'],
             ref.channels(ref.batch_norm(s['stage3_preact']), 16)]
  term = sum(2.0**(i - 2) * _boundary(source, t[f'stage{i + 1}_preact']) * 3 / 1000
             for i, source in enumerate(sources))
  distiller_loss(registry.get('methods', 'ab')(), term, identity_connectors=True)


def test_zero_gradient_to_the_teacher(pair, zero_teacher_gradient):
  zero_teacher_gradient(registry.get('methods', 'ab')(), *pair)


def test_boundaries_only_first_stage(two_stages):
  two_stages(registry.get('methods', 'ab')(init_steps=3), 'ab')


def test_defaults_and_bad_hyper_parameters(distiller_hyper_parameters):
  distiller_hyper_parameters('ab', weight=1)


def test_two_steps_from_the_fashion_mnist_config(fashion_run):
  # Step index 0 is the AB-only first stage; then CE alone (weight 0).
  first, second = fashion_run('ab')
  assert first['loss'] == first['ab'] and np.isfinite(second['ab'])
  assert second['loss'] == second['ce']
