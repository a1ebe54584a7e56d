"""Tensor parallelism (+ FSDP + data) of the Llama on 8 simulated CPU devices.

Mesh data=2, fsdp=2, tensor=2 with ``defaults.LM_RULES`` (embedding width
over ``fsdp``; heads, KV heads, SwiGLU width and vocabulary over ``tensor``):
the logits and two LM train steps (the real LM run's build) equal the one-device results to float32
tolerance, and the params really are split.
"""

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from distill_jax import config_args
from distill_jax import defaults
from distill_jax import sharding
from distill_jax import train
from distill_jax.llm.model import Llama
from distill_jax.llm.weights import param_shardings
from tests.llm.conftest import random_variables, tiny_config, write_gguf

LM_CONFIG = os.path.join(os.path.dirname(__file__), '..', '..', 'configs', 'llm', 'smollm2.py')
CONFIG = tiny_config(vocab_size=264)  # divisible by tensor=2
MESH_8 = ml_collections.ConfigDict({'data': 2, 'fsdp': 2, 'tensor': 2})
MESH_1 = ml_collections.ConfigDict({'data': 1, 'fsdp': 1, 'tensor': 1})


def _tokens(shape, seed):
  return jnp.asarray(np.random.default_rng(seed).integers(3, CONFIG.vocab_size, shape), jnp.int32)


def test_logits_match_one_device_and_params_are_split():
  assert jax.device_count() == 8
  mesh = sharding.make_mesh(MESH_8)
  variables = random_variables(CONFIG)
  shardings = param_shardings(CONFIG, mesh, defaults.LM_RULES)
  sharded = jax.device_put(variables, shardings)
  gate = sharded['params']['layers_0']['mlp']['gate']
  assert gate.sharding.spec == P('fsdp', 'tensor')
  assert gate.addressable_shards[0].data.shape == (CONFIG.hidden_size // 2,
                                                   CONFIG.intermediate_size // 2)
  assert sharded['params']['layers_0']['attn']['k'].sharding.spec == P('fsdp', 'tensor', None)
  assert sharded['params']['embed']['embedding'].sharding.spec == P('tensor', 'fsdp')
  tokens = _tokens((4, 12), 0)
  model = Llama(CONFIG)
  forward = jax.jit(lambda v, t: model.apply(v, t)[0])
  one = forward(jax.device_put(variables, jax.devices()[0]),
                jax.device_put(tokens, jax.devices()[0]))
  many = forward(sharded, jax.device_put(tokens, sharding.batch_sharding(mesh)))
  np.testing.assert_allclose(many, one, atol=1e-5, rtol=1e-5)


SEQUENCE_PARALLEL = tuple(r for r in defaults.LM_RULES if r[0] != 'activation_length') + (
    ('activation_length', 'tensor'),)


@pytest.mark.parametrize('rules,spec', [
    (defaults.LM_RULES, '[{"data", "fsdp"}, {}, {}]'),
    (SEQUENCE_PARALLEL, '[{"data", "fsdp"}, {"tensor"}, {}]'),
    (tuple(r for r in defaults.LM_RULES if r[0] != 'activation_embed'), None)])
def test_activations_between_blocks_are_constrained_by_the_rules(rules, spec):
  """Embeddings, each block's output and pre_logits carry the rules' layout
  (none when the rules leave an activation axis out); the logits are unchanged."""
  mesh = sharding.make_mesh(MESH_8)
  variables = random_variables(CONFIG)
  tokens = _tokens((4, 12), 0)
  model = Llama(CONFIG)

  def forward(v, t):
    with sharding.activation_layout(mesh, rules):
      return model.apply(v, t)[0]

  sharded = (jax.device_put(variables, param_shardings(CONFIG, mesh, defaults.LM_RULES)),
             jax.device_put(tokens, sharding.batch_sharding(mesh)))
  lowered = jax.jit(forward).lower(*sharded).as_text()
  activation = f'tensor<4x12x{CONFIG.hidden_size}x'
  constraints = [line for line in lowered.splitlines()
                 if 'sdy.sharding_constraint' in line and activation in line]
  if spec is None:
    assert not constraints
  else:
    assert len(constraints) == CONFIG.num_layers + 2
    assert all(spec in line for line in constraints), constraints
  one = model.apply(variables, tokens)[0]
  np.testing.assert_allclose(jax.jit(forward)(*sharded), one, atol=1e-5, rtol=1e-5)


@pytest.fixture(scope='module')
def teacher_gguf(tmp_path_factory):
  teacher_config = tiny_config(vocab_size=264, hidden_size=48, num_layers=1)
  path = str(tmp_path_factory.mktemp('teacher') / 'teacher.gguf')
  write_gguf(path, teacher_config, random_variables(teacher_config, seed=1))
  return path


def _train(teacher, mesh_config, devices):
  """Two steps of the configs/llm/smollm2.py runlocal run with the student CONFIG."""
  config = config_args.load_config_file(LM_CONFIG, f'runlocal,teacher={teacher},'
                                        'method=token_jsd')
  config.mesh.update(mesh_config)
  config.student.kwargs.update(hidden_size=CONFIG.hidden_size, num_layers=CONFIG.num_layers,
                               intermediate_size=CONFIG.intermediate_size,
                               tie_embeddings=CONFIG.tie_embeddings)
  # SGD: Adam's first steps are ~lr * sign(g), which amplifies float noise in tiny gradients.
  config.optim.update(name='sgd', learning_rate=0.5, weight_decay=0.0, grad_clip_norm=0.0)
  exp = train.build(config, devices)
  state = exp.compiled.init_fn(jax.random.PRNGKey(0))
  rows = []
  batches = exp.train_batches(0)
  for _ in range(2):
    batch = train.global_batch(next(batches), exp.compiled.batch_sharding)
    state, metrics = exp.compiled.train_fn(state, exp.compiled.teacher_variables, batch)
    rows.append(jax.device_get(metrics))
  return state, rows


def test_train_steps_match_one_device(teacher_gguf):
  one_state, one_rows = _train(teacher_gguf, MESH_1, jax.devices()[:1])
  state, rows = _train(teacher_gguf, MESH_8, None)
  down = state.params['layers_1']['mlp']['down']
  assert down.sharding.spec == P('tensor', 'fsdp') and len(down.sharding.device_set) == 8
  assert down.addressable_shards[0].data.shape == (CONFIG.intermediate_size // 2,
                                                   CONFIG.hidden_size // 2)
  for a, b in zip(rows, one_rows):
    for key in ('loss', 'ce', 'divergence', 'grad_norm'):
      np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               jax.device_get(state.params), jax.device_get(one_state.params))
