"""``ce``: the student alone on the hard labels, against hand-computed values."""

import jax.numpy as jnp
import ml_collections
import numpy as np

from distill_jax import methods


def test_ce_is_mean_negative_log_likelihood(logits_example, ref):
  student, _, labels = logits_example
  loss, metrics = methods.from_config(ml_collections.ConfigDict({'name': 'ce'})).loss(
      (jnp.asarray(student), {}), None, {'label': labels}, {}, 0)
  expected = ref.cross_entropy(student, labels)
  np.testing.assert_allclose(loss, expected, rtol=1e-6)
  np.testing.assert_allclose(metrics['ce'], expected, rtol=1e-6)


def test_worked_example_with_label_smoothing():
  # p = (1/2, 1/4, 1/4). Label 0 with smoothing 0.3: targets 0.7 one-hot + 0.3 / 3
  # = (0.8, 0.1, 0.1), CE = 0.8 log 2 + 2 * 0.1 log 4 = 1.2 log 2. Label 1: log 4.
  method = methods.from_config(ml_collections.ConfigDict({'name': 'ce', 'label_smoothing': 0.3}))
  logits = (jnp.log(jnp.array([[0.5, 0.25, 0.25]])), {})
  assert not method.needs_teacher
  np.testing.assert_allclose(method.loss(logits, None, {'label': jnp.array([0])}, {}, 0)[0],
                             1.2 * np.log(2.0), rtol=1e-6)
  plain = methods.from_config(ml_collections.ConfigDict({'name': 'ce'}))
  np.testing.assert_allclose(plain.loss(logits, None, {'label': jnp.array([1])}, {}, 0)[0],
                             np.log(4.0), rtol=1e-6)


def test_two_steps_from_the_fashion_mnist_config(fashion_run):
  for logged in fashion_run('ce'):
    assert logged['loss'] == logged['ce']
