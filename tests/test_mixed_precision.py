"""Mixed precision: bf16 compute for teacher (default) and student, fp32 params and losses."""

import jax
import jax.numpy as jnp

from distill_jax import defaults
from distill_jax import train


def test_teacher_infers_in_bfloat16_by_default(small_config, data_dir, digits_teachers):
  assert defaults.default_config().teacher.dtype == 'bfloat16'
  exp = train.build(small_config(data_dir, **{'method.name': 'kd',
                                              'teacher.workdir': digits_teachers['mlp']}))
  assert exp.compiled.memory['teachers'] > 0
  text = exp.compiled.train_fn.as_text()
  assert 'bf16' in text   # The teacher's matmuls run in bfloat16.


def test_bfloat16_student_keeps_float32_params_and_loss(small_config, data_dir, digits_teachers):
  config = small_config(data_dir, **{'method.name': 'kd', 'student.dtype': 'bfloat16',
                                     'teacher.workdir': digits_teachers['mlp']})
  exp = train.build(config)
  state = exp.compiled.init_fn(jax.random.PRNGKey(0))
  batches = exp.train_batches(0)
  batch = train.global_batch(next(batches), exp.compiled.batch_sharding)
  state, metrics = exp.compiled.train_fn(state, exp.compiled.teacher_variables, batch)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state.params))
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state.opt_state)
             if jnp.issubdtype(x.dtype, jnp.floating))
  assert metrics['loss'].dtype == jnp.float32 and jnp.isfinite(metrics['loss'])
