"""The Flax Llama against a plain NumPy forward pass, the KV cache, padding, axes."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax.llm.model import Llama, LlamaConfig, init_cache
from tests.llm.conftest import tiny_config, random_variables


def numpy_llama(config: LlamaConfig, params, tokens: np.ndarray) -> np.ndarray:
  """Reference forward ``[B, T] -> [B, T, V]`` written from the Llama paper/HF code."""
  c, p = config, params['params']
  x = p['embed']['embedding'][tokens].astype(np.float64)
  t, dh = tokens.shape[1], c.head_dim

  def rms(v, scale):
    return v / np.sqrt(np.mean(v**2, -1, keepdims=True) + c.rms_norm_eps) * scale

  inv = 1.0 / c.rope_theta**(np.arange(0, dh, 2) / dh)
  ang = np.arange(t)[:, None] * inv[None]
  cos, sin = np.cos(np.concatenate([ang, ang], -1)), np.sin(np.concatenate([ang, ang], -1))

  def rope(v):  # [B, T, H, Dh]
    rot = np.concatenate([-v[..., dh // 2:], v[..., :dh // 2]], -1)
    return v * cos[None, :, None] + rot * sin[None, :, None]

  for i in range(c.num_layers):
    lp = p[f'layers_{i}']
    h = rms(x, lp['attn_norm']['scale'])
    q = rope(np.einsum('btd,dhk->bthk', h, lp['attn']['q']))
    k = rope(np.einsum('btd,dhk->bthk', h, lp['attn']['k']))
    v = np.einsum('btd,dhk->bthk', h, lp['attn']['v'])
    rep = c.num_heads // c.num_kv_heads
    k, v = np.repeat(k, rep, axis=2), np.repeat(v, rep, axis=2)
    s = np.einsum('bthk,bshk->bhts', q, k) / np.sqrt(dh)
    s = np.where(np.tril(np.ones((t, t), bool)), s, -np.inf)
    a = np.exp(s - s.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    o = np.einsum('bhts,bshk->bthk', a, v)
    x = x + np.einsum('bthk,hkd->btd', o, lp['attn']['o'])
    h = rms(x, lp['mlp_norm']['scale'])
    g = h @ lp['mlp']['gate']
    x = x + ((g / (1 + np.exp(-g))) * (h @ lp['mlp']['up'])) @ lp['mlp']['down']
  x = rms(x, p['final_norm']['scale'])
  head = p['embed']['embedding'].T if c.tie_embeddings else p['lm_head']
  return x @ head


@pytest.mark.parametrize('tied', [False, True])
def test_matches_numpy_reference(tied):
  config = tiny_config(tie_embeddings=tied)
  variables = random_variables(config, seed=1)
  tokens = np.random.default_rng(0).integers(0, config.vocab_size, (2, 9))
  logits, features = Llama(config).apply(variables, jnp.asarray(tokens))
  assert logits.dtype == jnp.float32 and logits.shape == (2, 9, config.vocab_size)
  np.testing.assert_allclose(logits, numpy_llama(config, variables, tokens), atol=1e-4)
  assert {f'hidden_{i}' for i in range(config.num_layers)} <= set(features)
  assert features['pre_logits'].shape == (2, 9, config.hidden_size)


def test_attention_maps_and_left_padding(tiny):
  config, variables = tiny
  model = Llama(config)
  tokens = np.random.default_rng(1).integers(0, config.vocab_size, (1, 6))
  ref = model.apply(variables, jnp.asarray(tokens))[0]
  padded = np.concatenate([np.zeros((1, 3), int), tokens], 1)
  mask = np.arange(9)[None] >= 3
  logits, features = model.apply(variables, jnp.asarray(padded), token_mask=jnp.asarray(mask),
                                 attention_features=('attn',))
  np.testing.assert_allclose(logits[:, 3:], ref, atol=1e-5)
  attn = features['attn_0']
  assert attn.shape == (1, config.num_heads, 9, 9)
  np.testing.assert_allclose(attn.sum(-1), 1.0, atol=1e-5)
  np.testing.assert_allclose(attn[..., 3:, :3], 0.0)  # real tokens ignore padding


def test_kv_cache_decode_matches_full_forward(tiny):
  config, variables = tiny
  model = Llama(config)
  tokens = jnp.asarray(np.random.default_rng(2).integers(0, config.vocab_size, (2, 7)))
  full = model.apply(variables, tokens)[0]
  cache = init_cache(config, 2, 10)
  pos = jnp.broadcast_to(jnp.arange(7), (2, 7))
  prefill, cache = model.apply(variables, tokens[:, :4], cache, positions=pos[:, :4],
                               method=Llama.decode)
  np.testing.assert_allclose(prefill, full[:, :4], atol=1e-5)
  for i in range(4, 7):
    step, cache = model.apply(variables, tokens[:, i:i + 1], cache, positions=pos[:, i:i + 1],
                              method=Llama.decode)
    np.testing.assert_allclose(step[:, 0], full[:, i], atol=1e-5)
  assert int(cache['index']) == 7


def test_logical_axes():
  config = tiny_config()
  boxed = jax.eval_shape(Llama(config).init, jax.random.PRNGKey(0), jnp.zeros((1, 2), jnp.int32))
  specs = nn.get_partition_spec(boxed)['params']
  assert specs['embed']['embedding'] == jax.sharding.PartitionSpec('vocab', 'embed')
  assert specs['layers_0']['attn']['k'] == jax.sharding.PartitionSpec(
      'embed', 'kv_heads', 'head_dim')
  assert specs['layers_0']['mlp']['down'] == jax.sharding.PartitionSpec('mlp', 'embed')
  assert specs['lm_head'] == jax.sharding.PartitionSpec('embed', 'vocab')
  count = sum(x.size for x in jax.tree.leaves(nn.unbox(boxed)))
  assert count == config.num_params()


def test_bad_input():
  config = tiny_config()
  with pytest.raises(ValueError, match='multiple of num_kv_heads'):
    tiny_config(num_heads=4, num_kv_heads=3)
  model = Llama(config)
  variables = random_variables(config)
  with pytest.raises(ValueError, match='longer than the context'):
    model.apply(variables, jnp.zeros((1, config.max_seq_len + 1), jnp.int32))
  with pytest.raises(ValueError, match='int token ids'):
    model.apply(variables, jnp.zeros((1, 3), jnp.float32))
