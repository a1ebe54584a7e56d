"""The Llama at scale: scanned blocks equal unrolled ones, remat policies, fused attention.

``LlamaConfig.scan_layers`` stacks the blocks' params ``[L, ...]`` under
``layers``; with the same weights (``stack_layers``) the scanned model gives
the unrolled one's logits, features, KV-cache decoding and greedy samples, and
the GGUF loader fills the stacked layout directly. ``remat`` changes memory,
not values or gradients. ``jax.nn.dot_product_attention`` (the default path)
equals the explicit softmax attention that returns probabilities.
"""

import dataclasses
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax import train as train_lib
from distill_jax.llm import weights
from distill_jax.llm.model import Llama, LlamaConfig, init_cache
from distill_jax.llm.sampling import SamplingParams, generate
from tests.llm.conftest import random_variables, tiny_config, write_gguf
from tests.llm.test_run import _config, assert_same_step, one_step


def stack_layers(config: LlamaConfig, variables):
  """Unrolled ``layers_<i>`` params -> the scanned ``layers`` ``[L, ...]`` layout."""
  params = dict(variables['params'])
  blocks = [params.pop(f'layers_{i}') for i in range(config.num_layers)]
  params['layers'] = jax.tree.map(lambda *xs: jnp.stack(xs), *blocks)
  return {'params': params}


@pytest.fixture(scope='module')
def pair():
  config = tiny_config(num_layers=3)
  variables = random_variables(config, seed=4)
  scanned = dataclasses.replace(config, scan_layers=True)
  return config, variables, scanned, stack_layers(config, variables)


def _tokens(config, shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).integers(0, config.vocab_size, shape))


def test_scanned_params_are_stacked_with_a_layers_axis(pair):
  config, _, scanned, _ = pair
  boxed = jax.eval_shape(Llama(scanned).init, jax.random.PRNGKey(0), jnp.zeros((1, 2), jnp.int32))
  specs = nn.get_partition_spec(boxed)['params']
  assert set(specs) == {'embed', 'layers', 'final_norm', 'lm_head'}
  assert specs['layers']['attn']['k'] == jax.sharding.PartitionSpec(
      'layers', 'embed', 'kv_heads', 'head_dim')
  shapes = nn.unbox(boxed)['params']['layers']['mlp']['down'].shape
  assert shapes == (3, config.intermediate_size, config.hidden_size)
  assert sum(x.size for x in jax.tree.leaves(nn.unbox(boxed))) == config.num_params()


def test_scanned_equals_unrolled(pair):
  config, variables, scanned, stacked = pair
  tokens = _tokens(config, (2, 9))
  mask = jnp.asarray(np.arange(9)[None] >= np.array([[0], [3]]))
  want, want_f = Llama(config).apply(variables, tokens, token_mask=mask)
  got, got_f = Llama(scanned).apply(stacked, tokens, token_mask=mask)
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
  assert set(got_f) == set(want_f)
  for name in want_f:
    np.testing.assert_allclose(got_f[name], want_f[name], atol=1e-5, rtol=1e-5)


def test_scanned_decode_and_greedy_generation_equal_unrolled(pair):
  config, variables, scanned, stacked = pair
  tokens = _tokens(config, (2, 7), seed=1)
  full = Llama(scanned).apply(stacked, tokens)[0]
  cache = init_cache(scanned, 2, 10)
  assert cache['layers']['k'].shape == (3, 2, 10, config.num_kv_heads, config.head_dim)
  pos = jnp.broadcast_to(jnp.arange(7), (2, 7))
  prefill, cache = Llama(scanned).apply(stacked, tokens[:, :4], cache, positions=pos[:, :4],
                                        method=Llama.decode)
  np.testing.assert_allclose(prefill, full[:, :4], atol=1e-5)
  step, _ = Llama(scanned).apply(stacked, tokens[:, 4:5], cache, positions=pos[:, 4:5],
                                 method=Llama.decode)
  np.testing.assert_allclose(step[:, 0], full[:, 4], atol=1e-5)
  mask = jnp.ones((2, 5), bool)
  greedy = SamplingParams(max_new_tokens=6, temperature=0.0)
  outs = [generate(Llama(c), v, tokens[:, :5], mask, jax.random.PRNGKey(0), greedy,
                   eos_id=None, pad_id=0).tokens
          for c, v in ((config, variables), (scanned, stacked))]
  np.testing.assert_array_equal(outs[1], outs[0])


@pytest.mark.parametrize('scan', [False, True])
def test_remat_policies_keep_values_and_gradients(pair, scan):
  config, variables, scanned, stacked = pair
  base, params = (scanned, stacked) if scan else (config, variables)
  tokens = _tokens(config, (2, 8), seed=2)

  def loss(p, c):
    logits = Llama(c).apply(p, tokens)[0]
    return jnp.mean(jax.nn.logsumexp(logits, -1) - logits[..., 0])

  want = jax.value_and_grad(loss)(params, base)
  for remat in ('full', 'save_dots'):
    got = jax.jit(jax.value_and_grad(loss), static_argnums=1)(
        params, dataclasses.replace(base, remat=remat))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), got, want)
  with pytest.raises(ValueError, match="remat='some'.*none, full, save_dots"):
    dataclasses.replace(base, remat='some')


def test_dot_product_attention_equals_explicit_softmax(pair):
  config, variables, _, _ = pair
  tokens = _tokens(config, (2, 9), seed=3)
  mask = jnp.asarray(np.arange(9)[None] >= np.array([[0], [4]]))
  fast = Llama(config).apply(variables, tokens, token_mask=mask)
  explicit = Llama(config).apply(variables, tokens, token_mask=mask,
                                 attention_features=('attn',))
  np.testing.assert_allclose(explicit[0], fast[0], atol=1e-5, rtol=1e-5)
  assert 'attn_0' in explicit[1] and 'attn_0' not in fast[1]


def test_scanned_rematerialized_model_gives_the_same_attention_features(pair):
  """The relation methods' features come out of the scan layer by layer."""
  config, variables, scanned, stacked = pair
  tokens = _tokens(config, (2, 7), seed=4)
  names = ('attn', 'query', 'key', 'value')
  want = Llama(config).apply(variables, tokens, attention_features=names)[1]
  got = Llama(dataclasses.replace(scanned, remat='full')).apply(
      stacked, tokens, attention_features=names)[1]
  assert set(got) == set(want)
  for name in want:
    np.testing.assert_allclose(got[name], want[name], atol=1e-5, err_msg=name)
  assert want['key_0'].shape == (2, 7, config.num_kv_heads, config.head_dim)
  for bad in ('probs', f'attn_{config.num_layers}'):
    with pytest.raises(ValueError, match=re.escape(f"unknown attention_features ['{bad}']")):
      Llama(config).apply(variables, tokens, attention_features=(bad,))
  one_block = Llama(config).apply(variables, tokens, attention_features=('value_1',))[1]
  assert 'value_1' in one_block and 'value_0' not in one_block and 'attn_1' not in one_block
  np.testing.assert_allclose(one_block['value_1'], want['value_1'], atol=1e-6)


def test_gguf_loads_into_the_scanned_layout(pair, tmp_path):
  config, variables, _, stacked = pair
  path = str(tmp_path / 'tiny.gguf')
  write_gguf(path, config, variables)
  loaded_config, loaded = weights.load_gguf(path, scan_layers=True)
  assert loaded_config.scan_layers
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
               loaded, stacked)



def test_scanned_teacher_takes_the_same_step(tiny, tmp_path):
  """Through train.build: a scanned GGUF teacher (loaded into the stacked layout,
  in its shardings) gives the unrolled one's first step."""
  config, variables = tiny
  teacher = str(tmp_path / 'tiny.gguf')
  write_gguf(teacher, config, variables)
  assert_same_step(*[one_step(_config(teacher, ',method=token_hidden', **{
      'teacher.scan_layers': scan, 'optim.name': 'sgd'})) for scan in (False, True)],
                   atol=1e-6)


def test_scanned_rematerialized_student_run(tiny, tmp_path):
  config, variables = tiny
  teacher = str(tmp_path / 'tiny.gguf')
  write_gguf(teacher, config, variables)
  results = train_lib.run(_config(teacher, ',method=token_kl', **{
      'teacher.scan_layers': True, 'student.kwargs.scan_layers': True,
      'student.kwargs.remat': 'save_dots'}), str(tmp_path / 'run'))
  assert results['steps'] == 2 and results['nonfinite_steps'] == 0
  assert np.isfinite(results['eval']['perplexity'])
