"""``ft`` (Kim et al. 2018): a paraphraser's factors of the teacher, a translator's of the student."""

import jax
import numpy as np

from distill_jax import registry


def _leaky_relu(x, times):
  for _ in range(times):
    x = np.where(x > 0, x, 0.1 * x)
  return x


def test_loss_hand_computed(pair, distiller_loss, ref):
  # Identity connectors on the last stages (student 2x2x8, teacher 2x2x16, rate 0.5):
  # the paraphraser's encoder keeps the teacher's first 8 channels through three
  # LeakyReLUs, its decoder pads them back to 16 after three more; the translator
  # is three rounds of BN and LeakyReLU.
  s, t = pair[0][1]['stage3'], np.asarray(pair[1][1]['stage3'], np.float64)
  factor_t = _leaky_relu(t[..., :8], 3)
  factor_s = np.asarray(s, np.float64)
  for _ in range(3):
    factor_s = _leaky_relu(ref.batch_norm(factor_s), 1)
  flat = lambda f: ref.l2_normalize(f.reshape(len(f), -1))
  term = np.mean(np.abs(flat(factor_s) - flat(factor_t)))
  _, metrics = distiller_loss(registry.get('methods', 'ft')(), term, identity_connectors=True)
  reconstruction = ref.channels(_leaky_relu(factor_t, 3), 16)
  np.testing.assert_allclose(metrics['reconstruction'], np.mean((reconstruction - t)**2),
                             rtol=1e-5)


def test_reconstruction_only_first_stage(two_stages):
  two_stages(registry.get('methods', 'ft')(init_steps=3), 'reconstruction')


def test_paraphraser_trains_only_in_the_first_stage(pair, run):
  student, teacher, batch = pair
  method = registry.get('methods', 'ft')(init_steps=3)
  aux = run(method, *pair)[2]
  trained = lambda step: {
      name: any(np.any(leaf != 0) for leaf in jax.tree.leaves(grad))
      for name, grad in jax.grad(lambda a: method.loss(student, teacher, batch, a, step)[0])(
          aux).items()}
  assert trained(2) == {'paraphraser': True, 'translator': False}
  assert trained(3) == {'paraphraser': False, 'translator': True}


def test_zero_gradient_to_the_teacher(pair, zero_teacher_gradient):
  zero_teacher_gradient(registry.get('methods', 'ft')(), *pair)


def test_defaults_and_bad_hyper_parameters(distiller_hyper_parameters):
  distiller_hyper_parameters('ft', weight=200)


def test_two_steps_from_the_fashion_mnist_config(fashion_run):
  # Step index 0 pre-trains the paraphraser; then CE + 200 * FT.
  first, second = fashion_run('ft')
  assert first['loss'] == first['reconstruction']
  np.testing.assert_allclose(second['loss'], second['ce'] + 200 * second['ft'], rtol=1e-5)
