"""The explicit shard_map data-parallel path gives the numbers of the jit/NamedSharding path."""

import jax
import numpy as np
import pytest

from distill_jax import train


def _run_steps(config, steps=3):
  exp = train.build(config)
  compiled = exp.compiled
  state = compiled.init_fn(jax.random.PRNGKey(0))
  batches = exp.train_batches(0)
  losses = []
  for _ in range(steps):
    batch = train.global_batch(next(batches), exp.compiled.batch_sharding)
    state, metrics = compiled.train_fn(state, compiled.teacher_variables, batch)
    losses.append(float(metrics['loss']))
  return jax.device_get(state.params), losses


@pytest.mark.parametrize('overrides', [
    {},
    {'method.name': 'kd', 'method.alpha': 0.5, 'teacher': 'mlp'},
])
def test_same_numbers_as_jit(overrides, small_config, data_dir, digits_teachers):
  overrides = dict(overrides)
  if overrides.pop('teacher', None):
    overrides['teacher.workdir'] = digits_teachers['mlp']
  auto_params, auto_losses = _run_steps(small_config(data_dir, **overrides))
  map_params, map_losses = _run_steps(small_config(data_dir, **overrides,
                                                   **{'sharding.mode': 'shard_map'}))
  np.testing.assert_allclose(map_losses, auto_losses, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
               map_params, auto_params)


def test_the_compiled_step_has_explicit_all_reduces(small_config, data_dir):
  exp = train.build(small_config(data_dir, **{'sharding.mode': 'shard_map'}))
  assert 'all-reduce' in exp.compiled.train_fn.as_text()


@pytest.mark.parametrize('overrides, message', [
    ({'scheme.name': 'dml', 'method.name': 'kd'}, 'needs sharding.mode=auto'),
    ({'sharding.rules': (('batch', ('data', 'fsdp')), ('embed', 'data'), ('mlp', None),
                         ('classes', None), ('conv_in', None), ('conv_out', None))},
     'data-parallel only'),
    ({'sharding.mode': 'pmap'}, "choose one of auto, shard_map"),
])
def test_bad_layouts(overrides, message, small_config, data_dir):
  overrides = {'sharding.mode': 'shard_map', **overrides}
  with pytest.raises(ValueError, match=message):
    train.build(small_config(data_dir, **overrides))
