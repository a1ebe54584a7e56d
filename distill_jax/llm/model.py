"""A Llama-family decoder in Flax Linen (Llama 2/3, SmolLM, Qwen2-style without biases).

RMSNorm, rotary position embeddings (HF's rotate-half convention, configurable
theta), grouped-query attention, SwiGLU MLP, tied or untied embeddings, a
causal mask combined with a padding mask, and a KV cache for generation.

Every parameter carries logical axis names (CONTRIBUTING.md rule 3), so the
scale rules of ``config.sharding.rules`` apply unchanged:

==============================  =====================================
parameter                       logical axes
==============================  =====================================
``embed/embedding`` ``[V, D]``  ``('vocab', 'embed')``
``attn/q`` ``[D, H, Dh]``       ``('embed', 'heads', 'head_dim')``
``attn/k``, ``attn/v``          ``('embed', 'kv_heads', 'head_dim')``
``attn/o`` ``[H, Dh, D]``       ``('heads', 'head_dim', 'embed')``
``attn/{q,k,v}_bias`` (Qwen2)   ``('heads' | 'kv_heads', 'head_dim')``
``mlp/gate``, ``mlp/up``        ``('embed', 'mlp')``
``mlp/down`` ``[F, D]``         ``('mlp', 'embed')``
norm ``scale`` ``[D]``          ``('embed',)``
``lm_head`` ``[D, V]``          ``('embed', 'vocab')`` (untied only)
==============================  =====================================

The activations between blocks (the embeddings, every block's output and
``pre_logits``, ``[B, T, D]``) carry the logical axes ``('activation_batch',
'activation_length', 'activation_embed')`` as sharding constraints; they apply
within ``sharding.activation_layout`` (the train and eval steps under jit) when
the rules name all three, and are no-ops otherwise.

With ``LlamaConfig.scan_layers`` the blocks are one ``nn.scan`` (compile time
flat in depth) and their parameters are stacked under ``layers`` with a
leading ``[L]`` axis, logical name ``'layers'`` (``layers/attn/q`` ``[L, D,
H, Dh]``); ``LlamaConfig.remat`` rematerializes each block in the backward
pass. Attention runs through ``jax.nn.dot_product_attention``.

The model returns ``(logits [B, T, V] float32, features)`` (CONTRIBUTING.md
rule 5) with features ``embed`` (token embeddings), ``hidden_<i>`` (output of
block ``i``, ``[B, T, D]``), ``pre_logits`` (after the final norm) and, when
asked for (``attention_features``), block ``i``'s ``attn_<i>`` (attention
probabilities ``[B, H, T, S]`` float32) and its projections before RoPE
``query_<i>`` ``[B, T, H, Dh]``, ``key_<i>`` and ``value_<i>`` ``[B, T, H_kv,
Dh]`` (the relation methods, ``methods/token_minilm*.py``): a bare name
(``'attn'``) asks every block, ``'attn_3'`` block 3 only, so the other blocks
keep the fused attention (with ``scan_layers`` every block computes what any
block is asked for).

Generation keeps a KV cache (``init_cache``): a pytree with the keys and values
of every layer ``[B, S, H_kv, Dh]``, the validity of each cache slot ``[B, S]``
and the next write slot. ``Llama.decode`` writes the new tokens' keys and
values at that slot and attends over all valid slots up to each query's own.
Batched prompts are left-padded; positions count real tokens only, so a
padded row gets the same RoPE phases as the same prompt unpadded.
"""

import dataclasses
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from distill_jax.losses.large_vocab import LinearLogits, softcap

Array = jax.Array
Dtype = Any
Cache = dict[str, Any]
ATTENTION_FEATURES = ('attn', 'query', 'key', 'value')


def _check_attention_features(requested: Sequence[str], num_layers: int) -> None:
  def valid(name):
    base, _, index = name.rpartition('_')
    return name in ATTENTION_FEATURES or (
        base in ATTENTION_FEATURES and index.isdigit() and int(index) < num_layers)
  bad = [name for name in requested if not valid(name)]
  if bad:
    raise ValueError(f'Llama: unknown attention_features {bad}: use {", ".join(ATTENTION_FEATURES)}'
                     f' (every block) or <name>_<block> for a block in 0..{num_layers - 1}.')


def _block_outputs(requested: Sequence[str], block: int | None) -> tuple[str, ...]:
  """The ``ATTENTION_FEATURES`` block ``block`` returns for ``requested``
  (``None``: the scanned blocks, which all return what any is asked for)."""
  def asked(name):
    if name in requested:
      return True
    if block is None:
      return any(r.rpartition('_')[0] == name for r in requested)
    return f'{name}_{block}' in requested
  return tuple(name for name in ATTENTION_FEATURES if asked(name))


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
  """Architecture of a Llama-family decoder.

  Attributes:
    vocab_size: ``V``.
    hidden_size: ``D``.
    intermediate_size: ``F``, the SwiGLU width.
    num_layers: ``L`` decoder blocks.
    num_heads: ``H`` query heads.
    num_kv_heads: key/value heads; ``H`` must be a multiple (GQA).
    head_dim: ``Dh``; defaults to ``D // H``.
    rope_theta: RoPE base frequency.
    rope_freq_factors: ``Dh / 2`` divisors of the RoPE frequencies (Llama
      3.1+'s ``rope_scaling``, GGUF's ``rope_freqs`` tensor; ``weights.
      rope_freq_factors`` computes them from an HF ``rope_scaling``); () = none.
    rms_norm_eps: RMSNorm epsilon.
    tie_embeddings: the output projection is the embedding matrix.
    attention_bias: q/k/v projections have biases (Qwen2).
    max_seq_len: the context length (prompt + generated tokens).
    logit_scale: the logits are multiplied by it (Cohere's ``logit_scale``).
    logit_softcap: ``c > 0`` caps the logits at ``c tanh(z / c)`` after the
      scale (Gemma 2's ``final_logit_softcapping``); 0 = none.
    scan_layers: run the blocks as one ``nn.scan`` (compile time and HLO
      size flat in depth): their params are stacked ``[L, ...]`` under
      ``layers`` (logical axis ``'layers'``) instead of ``layers_<i>``.
    remat: rematerialization of each block in the backward pass: ``'none'``,
      ``'full'`` (keep only the block inputs) or ``'save_dots'`` (keep the
      matmul outputs, recompute the rest).
  """
  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int = 0
  rope_theta: float = 10000.0
  rope_freq_factors: tuple[float, ...] = ()
  rms_norm_eps: float = 1e-5
  tie_embeddings: bool = True
  attention_bias: bool = False
  max_seq_len: int = 2048
  logit_scale: float = 1.0
  logit_softcap: float = 0.0
  scan_layers: bool = False
  remat: str = 'none'

  def __post_init__(self):
    if not self.head_dim:
      object.__setattr__(self, 'head_dim', self.hidden_size // self.num_heads)
    if self.num_heads % self.num_kv_heads:
      raise ValueError(
          f'LlamaConfig: num_heads={self.num_heads} must be a multiple of '
          f'num_kv_heads={self.num_kv_heads}.')
    if self.head_dim % 2:
      raise ValueError(f'LlamaConfig: head_dim={self.head_dim} must be even (RoPE).')
    if self.rope_freq_factors and len(self.rope_freq_factors) != self.head_dim // 2:
      raise ValueError(f'LlamaConfig: {len(self.rope_freq_factors)} rope_freq_factors; '
                       f'head_dim={self.head_dim} needs {self.head_dim // 2}.')
    object.__setattr__(self, 'rope_freq_factors', tuple(float(f) for f in self.rope_freq_factors))
    if self.remat not in REMAT_POLICIES:
      raise ValueError(f'LlamaConfig: remat={self.remat!r}; choose one of '
                       f'{", ".join(REMAT_POLICIES)}.')

  def num_params(self) -> int:
    """Parameter count (embeddings counted once when tied)."""
    d, f, h, kv, dh = (self.hidden_size, self.intermediate_size, self.num_heads,
                       self.num_kv_heads, self.head_dim)
    block = d * dh * (2 * h + 2 * kv) + 3 * d * f + 2 * d
    head = 0 if self.tie_embeddings else d * self.vocab_size
    if self.attention_bias:
      block += dh * (h + 2 * kv)
    return self.vocab_size * d + self.num_layers * block + d + head


_init = nn.initializers.normal(0.02)

# LlamaConfig.remat -> the jax.checkpoint policy of a block (None: no remat).
REMAT_POLICIES = {'none': None, 'full': jax.checkpoint_policies.nothing_saveable,
                  'save_dots': jax.checkpoint_policies.checkpoint_dots}


ACTIVATION_AXES = ('activation_batch', 'activation_length', 'activation_embed')


def constrain_activation(x: Array) -> Array:
  """``x`` ``[B, T, D]`` constrained to the layout the rules give ``ACTIVATION_AXES``."""
  return nn.with_logical_constraint(x, ACTIVATION_AXES,
                                    fallback=nn.spmd.RulesFallback.NO_CONSTRAINT)


def _sow_importance(module: nn.Module, x: Array, per_head: bool = False) -> None:
  """Sows ``mean |x|`` over all but the last axis as ``intermediates/importance``
  (``per_head``: of the norm of ``x`` ``[..., H, Dh]`` over ``Dh``): the
  activation statistics width pruning ranks channels by (``student_init``).
  Computes nothing unless ``apply`` is called with ``mutable=['intermediates']``."""
  if not module.is_mutable_collection('intermediates'):
    return
  x = x.astype(jnp.float32)
  if per_head:
    x = jnp.linalg.norm(x, axis=-1)
  module.sow('intermediates', 'importance', jnp.mean(jnp.abs(x), axis=tuple(range(x.ndim - 1))))


def _param(module: nn.Module, name: str, shape: tuple[int, ...],
           axes: tuple[str | None, ...], init=_init) -> Array:
  return module.param(name, nn.with_logical_partitioning(init, axes), shape,
                      module.param_dtype)


class RMSNorm(nn.Module):
  """``x / rms(x) * scale`` over the last axis, computed in float32."""
  eps: float
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    scale = _param(self, 'scale', (x.shape[-1],), ('embed',), nn.initializers.ones)
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    out = x32 * scale.astype(jnp.float32)
    _sow_importance(self, out)
    return out.astype(self.dtype)


def rope_tables(positions: Array, head_dim: int, theta: float,
                freq_factors: tuple[float, ...] = ()) -> tuple[Array, Array]:
  """``cos``, ``sin`` ``[B, T, Dh]`` for int ``positions`` ``[B, T]`` (HF layout);
  frequency ``i`` is divided by ``freq_factors[i]`` when given (RoPE scaling)."""
  inv_freq = 1.0 / theta**(jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim)
  if freq_factors:
    inv_freq = inv_freq / jnp.asarray(freq_factors, jnp.float32)
  angles = positions.astype(jnp.float32)[..., None] * inv_freq
  angles = jnp.concatenate([angles, angles], axis=-1)
  return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x: Array, cos: Array, sin: Array) -> Array:
  """Rotate-half RoPE of ``x`` ``[B, T, heads, Dh]`` with tables ``[B, T, Dh]``."""
  half = x.shape[-1] // 2
  rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
  cos, sin = cos[:, :, None, :], sin[:, :, None, :]
  return (x.astype(jnp.float32) * cos + rotated.astype(jnp.float32) * sin).astype(x.dtype)


class Attention(nn.Module):
  """Grouped-query self-attention with RoPE and an optional KV cache."""
  config: LlamaConfig
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, cos: Array, sin: Array, allowed: Array,
               kv_cache: dict[str, Array] | None, index: Array | None,
               outputs: tuple[str, ...] = ()
               ) -> tuple[Array, dict[str, Array], dict[str, Array] | None]:
    """``x`` ``[B, T, D]``; ``allowed`` bool ``[B, T, S]`` (query may see key).

    Without a cache the keys are this call's ``T`` tokens (``S = T``); with
    one, this call's keys and values are written at slot ``index`` of the
    cache's ``[B, S, H_kv, Dh]`` arrays first. Attention is
    ``jax.nn.dot_product_attention`` (cuDNN's fused kernel on GPU where it
    applies, XLA elsewhere); ``'attn'`` in ``outputs`` computes it explicitly
    instead, to return the probabilities.

    Returns the output ``[B, T, D]``, the ``outputs`` asked for (of
    ``ATTENTION_FEATURES``: ``attn`` ``[B, H, T, S]`` float32, ``query``
    ``[B, T, H, Dh]``, ``key`` / ``value`` ``[B, T, H_kv, Dh]`` before RoPE
    and the cache) and the updated cache (or None).
    """
    c = self.config
    d, h, kv, dh = c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim
    wq = _param(self, 'q', (d, h, dh), ('embed', 'heads', 'head_dim'))
    wk = _param(self, 'k', (d, kv, dh), ('embed', 'kv_heads', 'head_dim'))
    wv = _param(self, 'v', (d, kv, dh), ('embed', 'kv_heads', 'head_dim'))
    wo = _param(self, 'o', (h, dh, d), ('heads', 'head_dim', 'embed'))
    x = x.astype(self.dtype)
    q = jnp.einsum('btd,dhk->bthk', x, wq.astype(self.dtype))
    k = jnp.einsum('btd,dhk->bthk', x, wk.astype(self.dtype))
    v = jnp.einsum('btd,dhk->bthk', x, wv.astype(self.dtype))
    if c.attention_bias:
      zeros = nn.initializers.zeros
      q = q + _param(self, 'q_bias', (h, dh), ('heads', 'head_dim'), zeros).astype(self.dtype)
      k = k + _param(self, 'k_bias', (kv, dh), ('kv_heads', 'head_dim'), zeros).astype(self.dtype)
      v = v + _param(self, 'v_bias', (kv, dh), ('kv_heads', 'head_dim'), zeros).astype(self.dtype)
    extras = {name: x for name, x in (('query', q), ('key', k), ('value', v)) if name in outputs}
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    new_cache = None
    if kv_cache is not None:
      start = (0, index, 0, 0)
      k = jax.lax.dynamic_update_slice(kv_cache['k'], k.astype(kv_cache['k'].dtype), start)
      v = jax.lax.dynamic_update_slice(kv_cache['v'], v.astype(kv_cache['v'].dtype), start)
      new_cache = {'k': k, 'v': v}
      k, v = k.astype(self.dtype), v.astype(self.dtype)
    b, t = q.shape[:2]
    if 'attn' in outputs:
      q = q.reshape(b, t, kv, h // kv, dh)
      scores = jnp.einsum('btkgd,bskd->bkgts', q, k,
                          preferred_element_type=jnp.float32) / math.sqrt(dh)
      scores = jnp.where(allowed[:, None, None], scores, jnp.finfo(jnp.float32).min)
      probs = jax.nn.softmax(scores, axis=-1)
      out = jnp.einsum('bkgts,bskd->btkgd', probs.astype(self.dtype), v).reshape(b, t, h, dh)
      extras['attn'] = probs.reshape(b, h, t, -1)
    else:
      out = jax.nn.dot_product_attention(q, k, v, mask=allowed[:, None])
    _sow_importance(self, out, per_head=True)
    return jnp.einsum('bthk,hkd->btd', out, wo.astype(self.dtype)), extras, new_cache


class SwiGLU(nn.Module):
  """``down(silu(gate(x)) * up(x))``, ``[B, T, D] -> [B, T, D]``."""
  config: LlamaConfig
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    d, f = self.config.hidden_size, self.config.intermediate_size
    gate = _param(self, 'gate', (d, f), ('embed', 'mlp')).astype(self.dtype)
    up = _param(self, 'up', (d, f), ('embed', 'mlp')).astype(self.dtype)
    down = _param(self, 'down', (f, d), ('mlp', 'embed')).astype(self.dtype)
    x = x.astype(self.dtype)
    hidden = jax.nn.silu(x @ gate) * (x @ up)
    _sow_importance(self, hidden)
    return hidden @ down


class Block(nn.Module):
  """Pre-norm decoder block: ``x + attn(norm(x))``, then ``+ mlp(norm(.))``."""
  config: LlamaConfig
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, cos, sin, allowed, kv_cache, index, outputs):
    """``(x', (x', attention outputs, kv_cache'))``: the scan layout (carry,
    per-layer outputs); ``outputs`` as ``Attention``."""
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    eps = self.config.rms_norm_eps
    attn_out, extras, kv_cache = Attention(self.config, name='attn', **kw)(
        RMSNorm(eps, name='attn_norm', **kw)(x), cos, sin, allowed, kv_cache, index, outputs)
    x = x + attn_out
    x = x + SwiGLU(self.config, name='mlp', **kw)(RMSNorm(eps, name='mlp_norm', **kw)(x))
    x = constrain_activation(x)
    return x, (x, extras, kv_cache)


def _blocks(config: LlamaConfig, **kw) -> nn.Module | list[nn.Module]:
  """The decoder blocks: a list of ``layers_<i>``, or one scanned ``layers``."""
  block = Block
  policy = REMAT_POLICIES[config.remat]
  if policy is not None:
    block = nn.remat(Block, policy=policy, prevent_cse=not config.scan_layers,
                     static_argnums=(7,))
  if not config.scan_layers:
    return [block(config, name=f'layers_{i}', **kw) for i in range(config.num_layers)]
  broadcast = nn.broadcast
  return nn.scan(block, variable_axes={'params': 0, 'intermediates': 0},
                 split_rngs={'params': True},
                 in_axes=(broadcast, broadcast, broadcast, 0, broadcast, broadcast),
                 length=config.num_layers,
                 metadata_params={nn.PARTITION_NAME: 'layers'})(config, name='layers', **kw)


def init_cache(config: LlamaConfig, batch_size: int, length: int,
               dtype: Dtype = jnp.float32) -> Cache:
  """An empty KV cache of ``length`` slots for ``batch_size`` rows.

  Returns ``{'index': int32 [], 'mask': bool [B, S], 'layers': [{'k', 'v'}
  [B, S, H_kv, Dh]] * L}`` (with ``scan_layers`` one ``{'k', 'v'}`` of
  ``[L, B, S, H_kv, Dh]``); ``index`` is the next slot to write.
  """
  shape = (batch_size, length, config.num_kv_heads, config.head_dim)
  if config.scan_layers:
    layers = {'k': jnp.zeros((config.num_layers, *shape), dtype),
              'v': jnp.zeros((config.num_layers, *shape), dtype)}
  else:
    layers = [{'k': jnp.zeros(shape, dtype), 'v': jnp.zeros(shape, dtype)}
              for _ in range(config.num_layers)]
  return {'index': jnp.zeros((), jnp.int32),
          'mask': jnp.zeros((batch_size, length), jnp.bool_), 'layers': layers}


def _scaled_and_capped(logits: Array, config: LlamaConfig) -> Array:
  """``logit_scale`` then ``logit_softcap`` of float32 ``logits`` (``LlamaConfig``)."""
  if config.logit_scale != 1.0:
    logits = logits * config.logit_scale
  return softcap(logits, config.logit_softcap)


def linear_logits(model: 'Llama', params: Any, pre_logits: Array,
                  mesh: Any = None) -> LinearLogits:
  """The logits of ``model`` as ``LinearLogits`` (never formed): ``pre_logits``
  ``[B, T, D]`` times ``logit_scale`` and the output head ``[D, V]`` (the
  embedding's transpose when tied), both in the model's compute dtype, with
  its soft-cap. Equals the logits ``model.apply`` returns, through the fused
  losses (``losses.large_vocab``), run over ``mesh`` (``LinearLogits.mesh``)."""
  c = model.config
  head = params['embed']['embedding'].T if c.tie_embeddings else params['lm_head']
  hidden = pre_logits.astype(model.dtype)
  if c.logit_scale != 1.0:
    hidden = hidden * jnp.asarray(c.logit_scale, model.dtype)
  return LinearLogits(hidden, head.astype(model.dtype), c.logit_softcap, mesh)


def default_positions(token_mask: Array) -> Array:
  """Positions ``[B, T]`` that count real tokens only (left padding gets 0)."""
  return jnp.maximum(jnp.cumsum(token_mask.astype(jnp.int32), axis=-1) - 1, 0)


class Llama(nn.Module):
  """The decoder. ``apply(v, tokens)`` -> ``(logits [B, T, V], features)``.

  Attributes:
    config: the architecture.
    dtype: compute dtype (norms, softmax and logits stay float32).
    param_dtype: parameter dtype.
  """
  config: LlamaConfig
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def setup(self):
    c, kw = self.config, dict(dtype=self.dtype, param_dtype=self.param_dtype)
    self.embed = nn.Embed(
        c.vocab_size, c.hidden_size, dtype=self.dtype, param_dtype=self.param_dtype,
        embedding_init=nn.with_logical_partitioning(_init, ('vocab', 'embed')))
    self.layers = _blocks(c, **kw)
    self.final_norm = RMSNorm(c.rms_norm_eps, **kw)
    if not c.tie_embeddings:
      self.lm_head = self.param(
          'lm_head', nn.with_logical_partitioning(_init, ('embed', 'vocab')),
          (c.hidden_size, c.vocab_size), self.param_dtype)

  def _check_tokens(self, tokens: Array) -> None:
    if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
      raise ValueError(f'Llama expects int token ids [B, T]; got {tokens.dtype} '
                       f'{tuple(tokens.shape)}.')

  def _forward(self, tokens, positions, allowed, cache, attention_features=(),
               return_logits=True):
    c = self.config
    # The table whole in width before the lookup (gathered under FSDP), so the
    # looked-up rows can take the activation layout without a reshuffle.
    table = nn.with_logical_constraint(self.embed.embedding, ('vocab', None))
    x = constrain_activation(jnp.take(table.astype(self.dtype), tokens, axis=0))
    features = {'embed': x}
    cos, sin = rope_tables(positions, c.head_dim, c.rope_theta, c.rope_freq_factors)
    index = None if cache is None else cache['index']
    if c.scan_layers:
      kv_caches = None if cache is None else cache['layers']
      x, (hidden, extras, new_layers) = self.layers(x, cos, sin, allowed, kv_caches, index,
                                                    _block_outputs(attention_features, None))
      per_layer = [(hidden[i], {k: v[i] for k, v in extras.items()})
                   for i in range(c.num_layers)]
    else:
      per_layer, new_layers = [], []
      for i, layer in enumerate(self.layers):
        kv_cache = None if cache is None else cache['layers'][i]
        x, (_, extras, kv_cache) = layer(x, cos, sin, allowed, kv_cache, index,
                                         _block_outputs(attention_features, i))
        per_layer.append((x, extras))
        new_layers.append(kv_cache)
    for i, (hidden_i, extras_i) in enumerate(per_layer):
      features[f'hidden_{i}'] = hidden_i
      features.update({f'{k}_{i}': v for k, v in extras_i.items()})
    x = constrain_activation(self.final_norm(x))
    features['pre_logits'] = x
    if not return_logits:
      return None, features, new_layers
    if c.tie_embeddings:
      logits = self.embed.attend(x)
    else:
      logits = jnp.einsum('btd,dv->btv', x, self.lm_head.astype(self.dtype))
    return _scaled_and_capped(logits.astype(jnp.float32), c), features, new_layers

  def __call__(self, tokens: Array, *, token_mask: Array | None = None,
               positions: Array | None = None, attention_features: tuple[str, ...] = (),
               return_logits: bool = True, train: bool = False
               ) -> tuple[Array | None, dict[str, Array]]:
    """Full-sequence forward pass (training, scoring).

    Args:
      tokens: int ``[B, T]``.
      token_mask: bool ``[B, T]``, False at padding (default: all True);
        padded keys are never attended to.
      positions: int ``[B, T]``; default counts the real tokens.
      attention_features: names of ``ATTENTION_FEATURES`` (every block) or
        ``<name>_<block>`` (one block) to add to the features (module
        docstring); ``attn`` computes that block's attention explicitly.
      return_logits: False skips the output head (logits None): the fused
        losses take ``features['pre_logits']`` and ``linear_logits`` instead.
      train: unused (no dropout); accepted for the trainer's interface.

    Returns:
      ``(logits [B, T, V] float32, features)``.
    """
    del train
    self._check_tokens(tokens)
    _check_attention_features(attention_features, self.config.num_layers)
    t = tokens.shape[1]
    if t > self.config.max_seq_len:
      raise ValueError(f'Llama: sequence of {t} tokens is longer than the context '
                       f'max_seq_len={self.config.max_seq_len}.')
    if token_mask is None:
      token_mask = jnp.ones(tokens.shape, jnp.bool_)
    if positions is None:
      positions = default_positions(token_mask)
    causal = jnp.tril(jnp.ones((t, t), jnp.bool_))
    allowed = causal[None] & token_mask[:, None, :]
    logits, features, _ = self._forward(tokens, positions, allowed, None,
                                        tuple(attention_features), return_logits)
    return logits, features

  def decode(self, tokens: Array, cache: Cache, *, token_mask: Array | None = None,
             positions: Array) -> tuple[Array, Cache]:
    """Runs ``T`` new tokens against ``cache`` (prefill ``T = P`` or one step).

    Args:
      tokens: int ``[B, T]``, written at cache slots ``index .. index + T - 1``.
      cache: from ``init_cache`` or a previous ``decode``.
      token_mask: bool ``[B, T]``, False at (left) padding.
      positions: int ``[B, T]`` RoPE positions.

    Returns:
      ``(logits [B, T, V] float32, updated cache)``.
    """
    self._check_tokens(tokens)
    if token_mask is None:
      token_mask = jnp.ones(tokens.shape, jnp.bool_)
    index = cache['index']
    t, s = tokens.shape[1], cache['mask'].shape[1]
    mask = jax.lax.dynamic_update_slice(cache['mask'], token_mask, (0, index))
    q_slot = index + jnp.arange(t)
    causal = jnp.arange(s)[None, :] <= q_slot[:, None]
    allowed = causal[None] & mask[:, None, :]
    logits, _, layers = self._forward(tokens, positions, allowed, cache)
    return logits, {'index': index + t, 'mask': mask, 'layers': layers}
