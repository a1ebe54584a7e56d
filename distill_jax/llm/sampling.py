"""Jitted autoregressive generation with a KV cache: greedy, temperature, top-k, top-p.

``generate`` takes a batch of left-padded prompts ``[B, P]``, fills the cache
with one prefill call and then decodes one token per iteration of a
``lax.while_loop`` that stops when every row has emitted EOS or
``max_new_tokens`` are done. It is compiled once per (model, sampling
parameters, prompt length, batch size). ``generate_text`` wraps it for
strings and chat messages and reports tokens/s.
"""

import dataclasses
import functools
import time
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from distill_jax.llm.model import Llama, init_cache
from distill_jax.llm.tokenizer import Tokenizer

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class SamplingParams:
  """How to pick each next token.

  Attributes:
    max_new_tokens: ``N``, the most tokens generated per row.
    temperature: 0 for greedy (argmax) decoding, else the softmax temperature.
    top_k: keep the ``k`` most likely tokens (0 = all).
    top_p: keep the smallest set of tokens whose probability reaches ``p``
      (nucleus sampling; 1.0 = all).
  """
  max_new_tokens: int = 64
  temperature: float = 0.0
  top_k: int = 0
  top_p: float = 1.0

  def __post_init__(self):
    if self.max_new_tokens < 1:
      raise ValueError(f'max_new_tokens must be >= 1, got {self.max_new_tokens}.')
    if self.temperature < 0:
      raise ValueError(f'temperature must be >= 0 (0 = greedy), got {self.temperature}.')
    if self.top_k < 0:
      raise ValueError(f'top_k must be >= 0 (0 = off), got {self.top_k}.')
    if not 0.0 < self.top_p <= 1.0:
      raise ValueError(f'top_p must be in (0, 1], got {self.top_p}.')


class Generation(NamedTuple):
  """Output of ``generate``.

  Attributes:
    tokens: int32 ``[B, N]``; ``pad_id`` after a row's EOS.
    mask: bool ``[B, N]``, True at generated tokens (EOS included).
  """
  tokens: Array
  mask: Array


# Top-p looks for the nucleus among this many most likely tokens first
# (``lax.top_k``); when their mass is below ``top_p`` in some row it finds the
# nucleus' probability threshold by bisection over the whole vocabulary
# instead. (XLA:CPU sorts a [64, 49152] array ~20x slower than either.)
NUCLEUS_CANDIDATES = 1024
# Full-vocabulary sampling draws a block of this many tokens, then a token
# within it (two small inverse-CDF look-ups instead of V Gumbel draws per row).
SAMPLING_BLOCK = 256


def _nucleus_mask(sorted_logits: Array, log_z: Array, top_p: float) -> Array:
  """Bool ``[B, K]``: keep a token of logits sorted descending if the mass
  before it is below ``top_p`` (the first always is); probabilities are
  ``exp(logit - log_z)``, ``log_z`` ``[B, 1]``."""
  probs = jnp.exp(sorted_logits - log_z)
  return jnp.cumsum(probs, axis=-1) - probs < top_p


def _nucleus_threshold(probs: Array, top_p: float) -> Array:
  """The nucleus' smallest kept probability ``[B, 1]`` of ``probs`` ``[B, V]``.

  The largest ``t`` with ``sum(probs[probs >= t]) >= top_p``, found exactly
  by bisection over the float32 bit patterns (ordered like the values for
  non-negative floats): 31 masked sums instead of a sort.
  """
  bits = jax.lax.bitcast_convert_type(probs, jnp.int32)

  def halve(_, bounds):
    lo, hi = bounds  # mass(probs >= lo) >= top_p > mass(probs >= hi)
    mid = lo + (hi - lo) // 2
    enough = jnp.sum(jnp.where(bits >= mid, probs, 0.0), -1, keepdims=True) >= top_p
    return jnp.where(enough, mid, lo), jnp.where(enough, hi, mid)

  b = probs.shape[0]
  lo = jnp.zeros((b, 1), jnp.int32)
  hi = jnp.max(bits, axis=-1, keepdims=True) + 1
  lo, _ = jax.lax.fori_loop(0, 31, halve, (lo, hi))
  return jax.lax.bitcast_convert_type(lo, jnp.float32)


def _sample_sorted(rng: Array, sorted_logits: Array, sorted_ids: Array) -> Array:
  """A draw ``[B]`` from logits ``[B, K]`` over the token ids ``sorted_ids``."""
  pick = jax.random.categorical(rng, sorted_logits, axis=-1)
  return jnp.take_along_axis(sorted_ids, pick[:, None], axis=-1)[:, 0]


def _sample_full_vocab(rng: Array, logits: Array) -> Array:
  """A draw ``[B]`` from ``softmax(logits [B, V])``, by inverse CDF in two levels.

  The vocabulary is cut into blocks of ``SAMPLING_BLOCK``; one uniform per row
  picks a block by its cumulative mass, then a token within the block, so
  only ``B`` random numbers are drawn (``jax.random.categorical`` draws
  ``B * V`` Gumbel variates, the dominant cost of sampling a 50k vocabulary).
  """
  b, v = logits.shape
  blocks = -(-v // SAMPLING_BLOCK)
  probs = jax.nn.softmax(logits, axis=-1)
  probs = jnp.pad(probs, ((0, 0), (0, blocks * SAMPLING_BLOCK - v)))
  probs = probs.reshape(b, blocks, SAMPLING_BLOCK)
  block_mass = probs.sum(-1)                                     # [B, blocks]
  block_cdf = jnp.cumsum(block_mass, axis=-1)
  u = jax.random.uniform(rng, (b, 1)) * block_cdf[:, -1:]
  block = jnp.minimum(jnp.sum(block_cdf <= u, axis=-1), blocks - 1)
  # Rounding may put u past a row's last positive-mass block: step back to it.
  last = blocks - 1 - jnp.argmax(block_mass[:, ::-1] > 0, axis=-1)
  block = jnp.minimum(block, last)
  within = jnp.take_along_axis(probs, block[:, None, None], axis=1)[:, 0]   # [B, S]
  before = jnp.take_along_axis(block_cdf - block_mass, block[:, None], axis=-1)
  token = jnp.sum(jnp.cumsum(within, axis=-1) <= u - before, axis=-1)
  last_token = SAMPLING_BLOCK - 1 - jnp.argmax(within[:, ::-1] > 0, axis=-1)
  return (block * SAMPLING_BLOCK + jnp.minimum(token, last_token)).astype(jnp.int32)


def sample_logits(rng: Array, logits: Array, sampling: SamplingParams) -> Array:
  """Next tokens ``[B]`` int32 from logits ``[B, V]``.

  ``top_k`` keeps the ``k`` largest logits, then ``top_p`` the nucleus of
  what is left (renormalised). Top-p is exact: it is searched among the
  ``NUCLEUS_CANDIDATES`` largest logits when they hold at least ``top_p`` of
  the mass in every row, else by a threshold over the whole vocabulary.
  """
  if sampling.temperature == 0.0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  logits = logits.astype(jnp.float32) / sampling.temperature
  v = logits.shape[-1]
  if not sampling.top_k and sampling.top_p == 1.0:
    return _sample_full_vocab(rng, logits)
  neg_inf = jnp.finfo(jnp.float32).min
  k = sampling.top_k or min(NUCLEUS_CANDIDATES, v)
  sorted_logits, sorted_ids = jax.lax.top_k(logits, min(k, v))
  if sampling.top_p == 1.0:
    return _sample_sorted(rng, sorted_logits, sorted_ids)

  def nucleus(sorted_logits, sorted_ids, log_z):
    keep = _nucleus_mask(sorted_logits, log_z, sampling.top_p)
    return _sample_sorted(rng, jnp.where(keep, sorted_logits, neg_inf), sorted_ids)

  # After top_k the nucleus is of the renormalised top k; else of the vocabulary.
  log_z = jax.nn.logsumexp(sorted_logits if sampling.top_k else logits, axis=-1,
                           keepdims=True)
  if sampling.top_k or k == v:
    return nucleus(sorted_logits, sorted_ids, log_z)

  def whole_vocabulary(*_):
    probs = jax.nn.softmax(logits, axis=-1)
    keep = probs >= _nucleus_threshold(probs, sampling.top_p)
    return _sample_full_vocab(rng, jnp.where(keep, logits, neg_inf))

  # Mass of the candidates over the whole vocabulary.
  covered = jnp.exp(jax.nn.logsumexp(sorted_logits, axis=-1, keepdims=True) - log_z
                    ) >= sampling.top_p
  return jax.lax.cond(jnp.all(covered), nucleus, whole_vocabulary, sorted_logits,
                      sorted_ids, log_z)


@functools.partial(jax.jit, static_argnames=('model', 'sampling', 'eos_id', 'pad_id'))
def _generate(variables: Any, prompt: Array, prompt_mask: Array, rng: Array, *,
              model: Llama, sampling: SamplingParams, eos_id: int | None,
              pad_id: int) -> Generation:
  b, p = prompt.shape
  n = sampling.max_new_tokens
  cache = init_cache(model.config, b, p + n, model.dtype)
  lengths = prompt_mask.sum(-1).astype(jnp.int32)
  positions = jnp.maximum(jnp.cumsum(prompt_mask, -1) - 1, 0).astype(jnp.int32)
  logits, cache = model.apply(variables, prompt, cache, token_mask=prompt_mask,
                              positions=positions, method=Llama.decode)
  rng, first_rng = jax.random.split(rng)
  first = sample_logits(first_rng, logits[:, -1], sampling)
  tokens = jnp.full((b, n), pad_id, jnp.int32).at[:, 0].set(first)
  done = first == eos_id if eos_id is not None else jnp.zeros((b,), jnp.bool_)

  def cond(carry):
    i, _, done, _, _ = carry
    return (i < n) & ~jnp.all(done)

  def body(carry):
    i, tokens, done, cache, rng = carry
    last = jax.lax.dynamic_slice_in_dim(tokens, i - 1, 1, axis=1)
    logits, cache = model.apply(variables, last, cache, positions=(lengths + i - 1)[:, None],
                                method=Llama.decode)
    rng, step_rng = jax.random.split(rng)
    new = jnp.where(done, pad_id, sample_logits(step_rng, logits[:, 0], sampling))
    tokens = jax.lax.dynamic_update_slice_in_dim(tokens, new[:, None], i, axis=1)
    if eos_id is not None:
      done = done | (new == eos_id)
    return i + 1, tokens, done, cache, rng

  _, tokens, _, _, _ = jax.lax.while_loop(
      cond, body, (jnp.ones((), jnp.int32), tokens, done, cache, rng))
  if eos_id is None:
    mask = jnp.ones((b, n), jnp.bool_)
  else:
    # A token is generated if no EOS came strictly before it.
    eos_before = jnp.cumsum(tokens == eos_id, axis=1) - (tokens == eos_id)
    mask = eos_before == 0
  return Generation(tokens=jnp.where(mask, tokens, pad_id), mask=mask)


def generate(model: Llama, variables: Any, prompt: Array, prompt_mask: Array,
             rng: Array, sampling: SamplingParams, *, eos_id: int | None,
             pad_id: int = 0) -> Generation:
  """Samples up to ``N`` tokens after each left-padded prompt.

  Args:
    model: the ``Llama`` module.
    variables: its ``{'params': ...}``.
    prompt: int32 ``[B, P]``, left-padded.
    prompt_mask: bool ``[B, P]``, False at padding.
    rng: PRNG key (unused for greedy decoding).
    sampling: the sampling parameters (static: one compile per value).
    eos_id: the token that ends a row (None: always generate ``N``).
    pad_id: written after EOS.

  Returns:
    ``Generation(tokens [B, N], mask [B, N])``.

  Raises:
    ValueError: the prompt plus ``N`` new tokens exceed the model's context.
  """
  p = prompt.shape[1]
  context = model.config.max_seq_len
  if p + sampling.max_new_tokens > context:
    raise ValueError(
        f'Prompt of {p} tokens + max_new_tokens={sampling.max_new_tokens} is longer '
        f'than the model context ({context} tokens); shorten the prompt or '
        'generate fewer tokens.')
  return _generate(variables, jnp.asarray(prompt, jnp.int32),
                   jnp.asarray(prompt_mask, jnp.bool_), rng, model=model,
                   sampling=sampling, eos_id=eos_id, pad_id=pad_id)


def left_pad(sequences: Sequence[Sequence[int]], pad_id: int,
             multiple: int = 1) -> tuple[np.ndarray, np.ndarray]:
  """``(tokens [B, P], mask [B, P])``, left-padded to a multiple of ``multiple``."""
  longest = max(len(s) for s in sequences)
  p = -(-longest // multiple) * multiple
  tokens = np.full((len(sequences), p), pad_id, np.int32)
  mask = np.zeros((len(sequences), p), bool)
  for row, s in enumerate(sequences):
    if len(s):
      tokens[row, p - len(s):] = s
      mask[row, p - len(s):] = True
  return tokens, mask


def generate_text(model: Llama, variables: Any, tokenizer: Tokenizer,
                  prompts: Sequence[str | Sequence[dict[str, str]]],
                  sampling: SamplingParams, *, seed: int = 0
                  ) -> tuple[list[str], dict[str, float]]:
  """Generates a completion per prompt (a string, or chat messages).

  Chat messages go through the tokenizer's chat template with the generation
  prompt. Returns the decoded completions (EOS and padding removed) and
  ``{'tokens': generated tokens, 'seconds': wall time, 'tokens_per_s': ...}``
  (including compilation on the first call for a shape).
  """
  ids = [tokenizer.encode(p) if isinstance(p, str) else tokenizer.encode_chat(p)
         for p in prompts]
  tokens, mask = left_pad(ids, tokenizer.pad_id, multiple=16)
  start = time.perf_counter()
  out = generate(model, variables, tokens, mask, jax.random.PRNGKey(seed), sampling,
                 eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id)
  out_tokens, out_mask = jax.device_get((out.tokens, out.mask))
  seconds = time.perf_counter() - start
  texts = [tokenizer.decode(row[m]) for row, m in zip(out_tokens, out_mask)]
  count = int(out_mask.sum())
  return texts, {'tokens': count, 'seconds': seconds, 'tokens_per_s': count / seconds}
