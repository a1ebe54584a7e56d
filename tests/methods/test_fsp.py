"""``fsp`` (Yim et al. 2017): the flow (Gram) matrices between consecutive layers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax import registry

CHAIN = ('stem', 'stage1', 'stage2', 'stage3')


@pytest.fixture
def pair(pair):
  """FSP needs the student's channel counts: the teacher is a second student-shaped output."""
  student, teacher, batch = pair
  return student, (teacher[0], jax.tree.map(lambda x: x[::-1] * 2.0, student[1])), batch


def _flow(bottom, top):
  """``G_ij = mean_x bottom_i(x) top_j(x)`` after average-pooling to the smaller map."""
  h, w = min(bottom.shape[1], top.shape[1]), min(bottom.shape[2], top.shape[2])
  pool = lambda x: np.asarray(x, np.float64).reshape(
      len(x), h, x.shape[1] // h, w, x.shape[2] // w, x.shape[3]).mean((2, 4))
  return np.einsum('bhwi,bhwj->bij', pool(bottom), pool(top)) / (h * w)


def test_worked_flow_example():
  # One 1x2 map with channels (1, 2) at x0 and (3, 4) at x1: G = mean_x f f^T.
  f = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
  np.testing.assert_allclose(_flow(f, f), [[[5.0, 7.0], [7.0, 10.0]]])


def test_loss_hand_computed(pair, distiller_loss):
  s, t = pair[0][1], pair[1][1]
  term = sum(np.mean((_flow(s[a], s[b]) - _flow(t[a], t[b]))**2) for a, b in zip(CHAIN, CHAIN[1:]))
  distiller_loss(registry.get('methods', 'fsp')(), term)


def test_flow_only_first_stage(two_stages):
  two_stages(registry.get('methods', 'fsp')(init_steps=3), 'fsp')


def test_zero_gradient_to_the_teacher(pair, zero_teacher_gradient):
  zero_teacher_gradient(registry.get('methods', 'fsp')(), *pair)


def test_shape_mismatch_names_both_layers(pair, run):
  student, teacher, batch = pair
  wide = jnp.concatenate([teacher[1]['stage1']] * 2, -1)
  with pytest.raises(ValueError, match=r"'fsp'.*student feature 'stage1' \(4, 8, 8, 2\) and "
                                       r"teacher feature 'stage1' \(4, 8, 8, 4\)"):
    run(registry.get('methods', 'fsp')(), student, (teacher[0], {**teacher[1], 'stage1': wide}),
        batch)


def test_defaults_and_bad_hyper_parameters(distiller_hyper_parameters):
  distiller_hyper_parameters('fsp', weight=50)


def test_two_steps_from_the_fashion_mnist_config(fashion_run):
  # Step index 0 is the FSP-only first stage; then CE alone (weight 0).
  first, second = fashion_run('fsp')
  assert first['loss'] == first['fsp'] > 0 and second['loss'] == second['ce']
