"""``vid`` (Ahn et al. 2019): Gaussian NLL of the teacher's maps under a learnt regressor."""

import numpy as np

from distill_jax import registry


def test_loss_hand_computed(pair, distiller_loss, ref):
  # Identity regressors (1x1 conv, ReLU, 1x1 conv, ReLU, 1x1 conv) predict the mean
  # ReLU(s), zero-padded to the teacher's channels; the variance starts at 5.
  s, t = pair[0][1], pair[1][1]
  term = 0.0
  for name in ('stage1', 'stage2', 'stage3'):
    mean = ref.channels(np.maximum(s[name], 0.0), t[name].shape[-1])
    term += np.mean(0.5 * ((mean - t[name])**2 / 5.0 + np.log(5.0)))
  distiller_loss(registry.get('methods', 'vid')(), term, identity_connectors=True)


def test_defaults_and_bad_hyper_parameters(distiller_hyper_parameters):
  distiller_hyper_parameters('vid', weight=1)


def test_variance_floor_and_start(pair, run):
  aux = run(registry.get('methods', 'vid')(init_variance=2.0, eps=0.5), *pair)[2]
  for name in ('stage1', 'stage2', 'stage3'):
    np.testing.assert_allclose(np.log1p(np.exp(aux[name]['log_scale'])) + 0.5, 2.0, rtol=1e-6)


def test_zero_gradient_to_the_teacher(pair, zero_teacher_gradient):
  zero_teacher_gradient(registry.get('methods', 'vid')(), *pair)


def test_two_steps_from_the_fashion_mnist_config(fashion_run):
  for logged in fashion_run('vid'):
    np.testing.assert_allclose(logged['loss'], logged['ce'] + logged['vid'], rtol=1e-5)
