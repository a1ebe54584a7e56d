"""``cc`` (Peng et al. 2019): correlation congruence of two learnt linear embeddings."""

import jax
import numpy as np

from distill_jax import registry


def test_loss_hand_computed(pair, distiller_loss, ref):
  # Identity embeddings: (s, 0, ...) and (t, 0, ...); the term couples the absolute
  # differences of consecutive examples, sum_d |e_i - f_i|_d |e_{i+1} - f_{i+1}|_d.
  s, t = pair[0][1]['pre_logits'], pair[1][1]['pre_logits']
  delta = np.abs(ref.channels(s, 16) - t)
  distiller_loss(registry.get('methods', 'cc')(), np.mean(np.sum(delta[:-1] * delta[1:], -1)),
                 identity_connectors=True)


def test_zero_gradient_to_the_teacher(pair, zero_teacher_gradient):
  zero_teacher_gradient(registry.get('methods', 'cc')(), *pair)


def test_both_embeddings_are_trained(pair, run):
  student, teacher, batch = pair
  method = registry.get('methods', 'cc')(embed_dim=8)
  aux = run(method, *pair)[2]
  grad = jax.grad(lambda a: method.loss(student, teacher, batch, a, 0)[0])(aux)
  assert set(grad) == {'embed_student', 'embed_teacher'}
  for name in grad:
    assert any(np.any(leaf != 0) for leaf in jax.tree.leaves(grad[name])), name


def test_defaults_and_bad_hyper_parameters(distiller_hyper_parameters):
  distiller_hyper_parameters('cc', weight=0.02)


def test_two_steps_from_the_fashion_mnist_config(fashion_run):
  for logged in fashion_run('cc'):
    np.testing.assert_allclose(logged['loss'], logged['ce'] + 0.02 * logged['cc'], rtol=1e-5)
