"""Test set-up: 8 simulated CPU devices, as the design asks for every sharded test.

XLA's persistent compilation cache is on for the session (in a temporary
folder): many tests compile the same small steps (every method's 2-step run
shares its init and eval steps), and compiling dominates their time.
"""

import os
import tempfile

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import jax
import pytest

jax.config.update('jax_compilation_cache_dir', tempfile.mkdtemp(prefix='distill_jax_xla_cache_'))
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)

from distill_jax import defaults
from distill_jax import train


@pytest.fixture(scope='session')
def data_dir(tmp_path_factory):
  """One tfds data_dir for the whole session (offline builders prepare into it)."""
  return str(tmp_path_factory.mktemp('tensorflow_datasets'))


def make_small_config(data_dir, **overrides):
  """A digits MLP run of a few steps; ``overrides`` are dotted keys."""
  config = defaults.default_config()
  config.data.name = 'digits'
  config.data.data_dir = data_dir
  config.student.model = 'mlp'
  config.student.kwargs.hidden_sizes = (32,)
  config.train.batch_size = 16
  config.train.eval_batch_size = 200
  config.train.num_steps = 6
  config.train.log_every_steps = 2
  config.optim.schedule = 'constant'
  config.optim.learning_rate = 0.05
  for key, value in overrides.items():
    parent = config
    *path, leaf = key.split('.')
    for part in path:
      parent = parent[part]
    parent[leaf] = value
  return config


@pytest.fixture(scope='session')
def small_config():
  """``small_config(data_dir, **{'dotted.key': value})`` -> a few-step digits MLP config."""
  return make_small_config


@pytest.fixture(scope='session')
def digits_teachers(data_dir, small_config, tmp_path_factory):
  """``{'mlp': workdir, 'cnn': workdir}``: 6-step digits runs with checkpoints."""
  root = tmp_path_factory.mktemp('scheme_teachers')
  made = {}
  for model in ('mlp', 'cnn'):
    config = small_config(data_dir, **{'student.model': model})
    if model == 'cnn':
      config.student.kwargs = {}
    train.run(config, str(root / model))
    made[model] = str(root / model)
  return made
