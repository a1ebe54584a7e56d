"""``dist`` (Huang et al. 2022): relations of the tempered class distributions."""

import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax import registry


def _pearson_distance(a, b):
  """``1 - pearson`` along the last axis."""
  a = a - a.mean(-1, keepdims=True)
  b = b - b.mean(-1, keepdims=True)
  return 1 - np.sum(a * b, -1) / np.sqrt(np.sum(a * a, -1) * np.sum(b * b, -1))


def test_loss_hand_computed(pair, run, ref):
  student, teacher, batch = pair
  loss, m, _ = run(registry.get('methods', 'dist')(), student, teacher, batch)
  p_s = np.exp(ref.log_softmax(student[0] / 4.0))
  p_t = np.exp(ref.log_softmax(teacher[0] / 4.0))
  inter = 16 * _pearson_distance(p_s, p_t).mean()  # T**2 (1 - rho) of each example's row
  intra = 16 * _pearson_distance(p_s.T, p_t.T).mean()  # ... and of each class's column
  ce = ref.cross_entropy(student[0], batch['label'])
  np.testing.assert_allclose([m['ce'], m['inter'], m['intra']], [ce, inter, intra], rtol=1e-4)
  np.testing.assert_allclose(loss, ce + 2 * inter + 2 * intra, rtol=1e-5)
  np.testing.assert_allclose(loss, m['ce'] + 2 * m['inter'] + 2 * m['intra'], rtol=1e-6)


def test_invariants(pair, run):
  student, teacher, batch = pair
  method = registry.get('methods', 'dist')()
  same = run(method, student, student, batch)[1]
  assert same['inter'] == pytest.approx(0.0, abs=1e-3)  # T**2 times an fp32 epsilon
  assert same['intra'] == pytest.approx(0.0, abs=1e-3)
  # A constant added to a row of logits leaves its softmax, so both relations, unchanged.
  before = run(method, student, teacher, batch)[1]
  after = run(method, student, (teacher[0] + jnp.arange(4.0)[:, None], teacher[1]), batch)[1]
  np.testing.assert_allclose([after['inter'], after['intra']], [before['inter'], before['intra']],
                             rtol=1e-5)


def test_zero_gradient_to_the_teacher(pair, zero_teacher_gradient):
  zero_teacher_gradient(registry.get('methods', 'dist')(), *pair)


@pytest.mark.parametrize('kwargs, message', [
    ({'temperature': 0}, 'dist.temperature must be > 0'),
    ({'gamma': None}, 'dist.gamma must be a number')])
def test_bad_hyper_parameters(kwargs, message):
  with pytest.raises(ValueError, match=message):
    registry.get('methods', 'dist')(**kwargs)


def test_two_steps_from_the_fashion_mnist_config(fashion_run):
  for logged in fashion_run('dist'):  # beta = gamma = 2
    np.testing.assert_allclose(logged['loss'], logged['ce'] + 2 * logged['inter'] +
                               2 * logged['intra'], rtol=1e-5)
