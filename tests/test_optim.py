"""The optimizer's max-norm constraint: long kernel columns are projected back, the rest kept."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from distill_jax import defaults
from distill_jax import optim


def test_max_norm_projects_each_units_incoming_weights():
  params = {'kernel': jnp.array([[3.0, 0.1], [4.0, 0.2]]),  # columns of norm 5 and 0.22
            'conv': jnp.ones((2, 2, 1, 3)),  # each output unit: 4 weights, norm 2
            'bias': jnp.array([10.0, 10.0])}
  updates = {k: jnp.zeros_like(v) for k, v in params.items()}
  transform = optim.max_norm(1.0)
  projected, _ = transform.update(updates, transform.init(params), params)
  new = optax.apply_updates(params, projected)
  np.testing.assert_allclose(new['kernel'][:, 0], [0.6, 0.8], rtol=1e-6)
  np.testing.assert_allclose(new['kernel'][:, 1], [0.1, 0.2])  # Inside the ball: unchanged.
  np.testing.assert_allclose(new['conv'], 0.5 * np.ones((2, 2, 1, 3)), rtol=1e-6)
  np.testing.assert_array_equal(new['bias'], params['bias'])


def test_make_optimizer_applies_max_norm_after_sgd():
  config = defaults.default_config().optim
  config.max_norm, config.momentum = 1.0, 0.0
  params = {'kernel': jnp.zeros((2, 1))}
  optimizer = optim.make_optimizer(config, optax.constant_schedule(1.0))
  grads = {'kernel': jnp.array([[-30.0], [-40.0]])}  # SGD step to (30, 40): norm 50.
  updates, _ = optimizer.update(grads, optimizer.init(params), params)
  np.testing.assert_allclose(optax.apply_updates(params, updates)['kernel'][:, 0], [0.6, 0.8],
                             rtol=1e-6)
  config.max_norm = -1.0
  with pytest.raises(ValueError, match='optim.max_norm=-1.0 must be > 0'):
    optim.make_optimizer(config, optax.constant_schedule(1.0))
