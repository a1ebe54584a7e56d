"""Tensor parallelism (+ FSDP + data) of the Llama on 8 simulated CPU devices.

Mesh data=2, fsdp=2, tensor=2 with ``llm.config.LM_RULES`` (embedding width
over ``fsdp``; heads, KV heads, SwiGLU width and vocabulary over ``tensor``):
the logits and two LM train steps equal the one-device results to float32
tolerance, and the params really are split.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import PartitionSpec as P

from distill_jax import methods
from distill_jax import sharding
from distill_jax.llm import config as lm_config
from distill_jax.llm import train as lm_train
from distill_jax.llm.model import Llama
from distill_jax.llm.weights import param_shardings
from tests.llm.conftest import random_variables, tiny_config

CONFIG = tiny_config(vocab_size=264)  # divisible by tensor=2
MESH_8 = ml_collections.ConfigDict({'data': 2, 'fsdp': 2, 'tensor': 2})
MESH_1 = ml_collections.ConfigDict({'data': 1, 'fsdp': 1, 'tensor': 1})


def _tokens(shape, seed):
  return jnp.asarray(np.random.default_rng(seed).integers(3, CONFIG.vocab_size, shape), jnp.int32)


def test_logits_match_one_device_and_params_are_split():
  assert jax.device_count() == 8
  mesh = sharding.make_mesh(MESH_8)
  variables = random_variables(CONFIG)
  shardings = param_shardings(CONFIG, mesh, lm_config.LM_RULES)
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


def _train(mesh_config, devices):
  mesh = sharding.make_mesh(mesh_config, devices)
  teacher = Llama(tiny_config(vocab_size=264, hidden_size=48, num_layers=1))
  teacher_vars = jax.device_put(
      random_variables(teacher.config, seed=1),
      param_shardings(teacher.config, mesh, lm_config.LM_RULES))
  optim = lm_config.default_config().optim
  # SGD: Adam's first steps are ~lr * sign(g), which amplifies float noise in tiny gradients.
  optim.update(name='sgd', learning_rate=0.5, warmup_epochs=0.0, weight_decay=0.0)
  trainer = lm_train.build_trainer(
      student=Llama(CONFIG), teacher=teacher, teacher_variables=teacher_vars,
      method=methods.from_config(ml_collections.ConfigDict({'name': 'token_jsd'})),
      optim_config=optim, total_steps=4, seq_len=11, rules=lm_config.LM_RULES, mesh=mesh)
  state = trainer.init_fn(jax.random.PRNGKey(0))
  rows = []
  for step in range(2):
    tokens = _tokens((8, 12), step)
    mask = np.ones((8, 6), bool)
    example = {'prompt': tokens[:, :6], 'prompt_mask': mask, 'response': tokens[:, 6:],
               'response_mask': mask}
    batch, _ = lm_train.step_batch(trainer, state, example, step, None)
    state, metrics = trainer.train_fn(state, trainer.teacher_variables, batch)
    rows.append(jax.device_get(metrics))
  return state, rows


def test_train_steps_match_one_device():
  one_state, one_rows = _train(MESH_1, jax.devices()[:1])
  state, rows = _train(MESH_8, None)
  down = state.params['layers_1']['mlp']['down']
  assert down.sharding.spec == P('tensor', 'fsdp') and len(down.sharding.device_set) == 8
  assert down.addressable_shards[0].data.shape == (CONFIG.intermediate_size // 2,
                                                   CONFIG.hidden_size // 2)
  for a, b in zip(rows, one_rows):
    for key in ('loss', 'ce', 'divergence', 'grad_norm'):
      np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               jax.device_get(state.params), jax.device_get(one_state.params))
