"""Jitted KV-cache generation: greedy == argmax of the full forward, padding, EOS, filters."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax.llm.model import Llama
from distill_jax.llm.sampling import SamplingParams, generate, left_pad, sample_logits


def _greedy_reference(model, variables, prompt, n):
  tokens = list(prompt)
  for _ in range(n):
    logits = model.apply(variables, jnp.asarray([tokens]))[0]
    tokens.append(int(jnp.argmax(logits[0, -1])))
  return tokens[len(prompt):]


def test_greedy_batched_left_padded_matches_reference(tiny):
  config, variables = tiny
  model = Llama(config)
  prompts = [[5, 9, 30, 7], [12, 40]]
  tokens, mask = left_pad(prompts, pad_id=0)
  out = generate(model, variables, tokens, mask, jax.random.PRNGKey(0),
                 SamplingParams(max_new_tokens=5), eos_id=None)
  assert out.tokens.shape == (2, 5) and bool(out.mask.all())
  for row, prompt in enumerate(prompts):
    assert out.tokens[row].tolist() == _greedy_reference(model, variables, prompt, 5)


def test_eos_stops_a_row_and_pads(tiny):
  config, variables = tiny
  model = Llama(config)
  tokens, mask = left_pad([[5, 9, 30, 7]], pad_id=0)
  sampling = SamplingParams(max_new_tokens=6)
  free = generate(model, variables, tokens, mask, jax.random.PRNGKey(0), sampling, eos_id=None)
  eos = int(free.tokens[0, 2])
  out = generate(model, variables, tokens, mask, jax.random.PRNGKey(0), sampling,
                 eos_id=eos, pad_id=0)
  first = free.tokens[0].tolist().index(eos)
  assert out.tokens[0, :first + 1].tolist() == free.tokens[0, :first + 1].tolist()
  assert out.mask[0].tolist() == [i <= first for i in range(6)]
  assert (out.tokens[0, first + 1:] == 0).all()


def test_filters():
  logits = jnp.log(jnp.asarray([[0.5, 0.3, 0.15, 0.05]] * 2000))
  draw = lambda **kw: np.asarray(sample_logits(jax.random.PRNGKey(1), logits,
                                               SamplingParams(**kw)))
  assert set(draw(temperature=1.0, top_k=1)) == {0}
  assert set(draw(temperature=1.0, top_k=2)) == {0, 1}
  assert set(draw(temperature=1.0, top_p=0.7)) == {0, 1}  # 0.5 < 0.7 <= 0.8
  assert set(draw(temperature=1.0, top_p=0.1)) == {0}
  counts = np.bincount(draw(temperature=1.0), minlength=4) / 2000
  np.testing.assert_allclose(counts, [0.5, 0.3, 0.15, 0.05], atol=0.04)
  assert set(draw(temperature=0.0)) == {0}


def test_prompt_longer_than_context(tiny):
  config, variables = tiny
  tokens, mask = left_pad([[1] * (config.max_seq_len - 2)], pad_id=0)
  with pytest.raises(ValueError, match='longer than the model context'):
    generate(Llama(config), variables, tokens, mask, jax.random.PRNGKey(0),
             SamplingParams(max_new_tokens=4), eos_id=None)
  with pytest.raises(ValueError, match='top_p'):
    SamplingParams(top_p=0.0)


def test_full_vocab_draws_follow_the_distribution():
  """Two-level inverse-CDF sampling (V not a multiple of the block) matches softmax."""
  probs = np.full(600, 0.1 / 597)
  probs[[3, 257, 599]] = [0.5, 0.25, 0.15]  # in three different blocks of 256
  logits = jnp.log(jnp.asarray(np.tile(probs, (4000, 1)), jnp.float32))
  draws = np.asarray(sample_logits(jax.random.PRNGKey(0), logits, SamplingParams(temperature=1.0)))
  assert draws.min() >= 0 and draws.max() < 600
  counts = np.bincount(draws, minlength=600) / len(draws)
  np.testing.assert_allclose(counts[[3, 257, 599]], [0.5, 0.25, 0.15], atol=0.03)
  np.testing.assert_allclose(counts.sum() - counts[[3, 257, 599]].sum(), 0.1, atol=0.02)


def test_top_p_is_exact_beyond_the_candidates():
  """Rows whose nucleus is wider than NUCLEUS_CANDIDATES (the full-sort path) and
  peaked rows (the top-k path) keep exactly the nucleus a full sort gives."""
  v, p = 3000, 0.8
  flat = -np.linspace(0.0, 0.5, v)              # decreasing: sorted order = index order
  peaked = np.full(v, -20.0)
  peaked[[10, 20, 30]] = [2.0, 1.0, 0.0]
  for row, expect_flat in ((flat, True), (peaked, False)):
    logits = jnp.asarray(np.tile(row, (3000, 1)), jnp.float32)
    draws = np.asarray(sample_logits(jax.random.PRNGKey(2), logits,
                                     SamplingParams(temperature=1.0, top_p=p)))
    probs = np.exp(row - row.max()) / np.exp(row - row.max()).sum()
    order = np.argsort(-probs)
    nucleus = set(order[np.cumsum(probs[order]) - probs[order] < p].tolist())
    assert set(draws.tolist()) <= nucleus
    if expect_flat:
      assert len(nucleus) > 1024 and max(draws) > 0.9 * max(nucleus)
    else:
      assert set(draws.tolist()) == nucleus == {10, 20}
