"""Teacher-logit cache: sparsify, quantize, write ArrayRecord shards, read back, CLI."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax import losses
from distill_jax.data import logit_cache
from distill_jax.data import pipeline
from distill_jax.tools import cache_teacher_logits

from tests.data.cache_helpers import SEQ, VOCAB, random_tokens, tokenizer_file, write


def _teacher_logits(tokens):
  fn = cache_teacher_logits.teacher_logits_fn('test_tiny_lm', {},
                                              sample_tokens=tokens, init_seed=0)
  return fn(jnp.asarray(tokens))


@pytest.mark.parametrize('value_dtype', ['uint16', 'float16', 'uint8'])
def test_quantize_round_trip(value_dtype):
  spec = logit_cache.CacheSpec(value_dtype=value_dtype)
  x = np.array([0.0, -1e-4, -3.3, -23.9, -30.0, -np.inf], np.float32)
  back = logit_cache.dequantize(logit_cache.quantize(x, spec), spec)
  step = {'uint16': 24 / 65534, 'uint8': 24 / 254, 'float16': 0.02}[value_dtype]
  np.testing.assert_allclose(back[:4], x[:4], atol=step)
  assert np.isneginf(back[5]) and (value_dtype == 'float16' or np.isneginf(back[4]))


def test_top_k_cache_round_trip_and_kl_error(tmp_path):
  spec = logit_cache.CacheSpec(mode='top_k', k=48)
  metadata = write(tmp_path, spec)
  assert metadata['num_sequences'] == 10 and metadata['num_tokens'] == 80
  assert len(metadata['shards']) == 3
  # uint16 ids + uint16 values: 4 B per entry, plus tokens and tail.
  assert metadata['bytes_per_token'] > 48 * 4
  tokenizer = logit_cache.TokenizerInfo(
      VOCAB, logit_cache.tokenizer_hash(tokenizer_file(tmp_path)))
  cache = logit_cache.LogitCache(str(tmp_path / 'cache'), tokenizer=tokenizer)
  assert len(cache) == 10
  batch = cache.get(np.array([7, 2]))
  np.testing.assert_array_equal(batch['tokens'], random_tokens()[[7, 2]])
  teacher = _teacher_logits(batch['tokens'])
  log_p = jax.nn.log_softmax(teacher)
  np.testing.assert_array_equal(batch['target_ids'], jax.lax.top_k(log_p, 48)[1])
  np.testing.assert_allclose(batch['target_logprobs'], jax.lax.top_k(log_p, 48)[0],
                             atol=24 / 65534)
  student = jax.random.normal(jax.random.key(0), teacher.shape)
  full = losses.kl_divergence(student, teacher)
  tail = losses.sparse_kl_divergence(student, batch['target_ids'],
                                     batch['target_logprobs'],
                                     tail_logprob=batch['tail_logprob'])
  renorm = losses.sparse_kl_divergence(student, batch['target_ids'],
                                       batch['target_logprobs'])
  # Half the vocabulary of a flat tiny teacher: a coarse approximation. The
  # tail-bucket KL is a coarsening of the full one, so never above it.
  tail_error = float(jnp.abs(tail - full).mean() / full.mean())
  renorm_error = float(jnp.abs(renorm - full).mean() / full.mean())
  assert np.all(np.asarray(tail) <= np.asarray(full) + 1e-3)
  assert tail_error < 0.25 and renorm_error < 1.0
  with open(tmp_path / 'cache' / 'metadata.json') as f:
    provenance = json.load(f)['provenance']
  assert provenance['model'] == 'test_tiny_lm' and provenance['init_seed'] == 0


def test_sampled_cache_weights_estimate_teacher(tmp_path):
  spec = logit_cache.CacheSpec(mode='sampled', k=64, seed=1)
  write(tmp_path, spec)
  cache = logit_cache.LogitCache(str(tmp_path / 'cache'))
  item = cache[3]
  weights = np.exp(item['target_logprobs'])
  np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-3)
  valid = np.isfinite(item['target_logprobs'])
  for row in range(SEQ):
    ids = item['target_ids'][row][valid[row]]
    assert len(set(ids.tolist())) == len(ids)  # distinct
  assert np.all(np.isneginf(item['tail_logprob']))


def test_sampled_weights_are_an_unbiased_estimate():
  logits = 2 * jax.random.normal(jax.random.key(0), (2, VOCAB))
  spec = logit_cache.CacheSpec(mode='sampled', k=4096)
  out = logit_cache.sparsify(logits, spec, jax.random.key(1))
  est = np.zeros((2, VOCAB), np.float32)
  np.put_along_axis(est, np.asarray(out['ids']), np.exp(np.asarray(out['logprobs'])),
                    axis=-1)
  p = np.asarray(jax.nn.softmax(logits))
  assert np.abs(est - p).sum(-1).max() < 0.15  # ~sqrt(V / k) / 2


def test_train_batches_deterministic_and_split_over_processes(tmp_path):
  write(tmp_path, logit_cache.CacheSpec(k=4))
  cache = logit_cache.LogitCache(str(tmp_path / 'cache'))
  take = lambda it, n: [next(it) for _ in range(n)]
  whole = take(pipeline.train_batches_of(cache, global_batch_size=4, seed=3), 3)
  resumed = take(pipeline.train_batches_of(cache, global_batch_size=4, seed=3,
                                          start_step=2), 1)
  np.testing.assert_array_equal(whole[2]['tokens'], resumed[0]['tokens'])
  halves = [take(pipeline.train_batches_of(cache, global_batch_size=4, seed=3,
                                          process_index=p, process_count=2), 1)[0]
            for p in range(2)]
  np.testing.assert_array_equal(
      np.concatenate([h['target_ids'] for h in halves]), whole[0]['target_ids'])


def test_command_line(tmp_path):
  np.save(tmp_path / 'tokens.npy', random_tokens(4))
  out = tmp_path / 'cli_cache'
  code = ('import sys; from tests.data import cache_helpers; '
          'from distill_jax.tools import cache_teacher_logits as c; '
          'from absl import app; c._define_flags(); app.run(c.main)')
  result = subprocess.run(
      [sys.executable, '-c', code, '--model=test_tiny_lm', '--init_seed=0',
       f'--tokens={tmp_path / "tokens.npy"}', f'--tokenizer={tokenizer_file(tmp_path)}',
       f'--vocab_size={VOCAB}', f'--out={out}', '--k=16', '--batch_size=2'],
      capture_output=True, text=True, timeout=120,
      cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
      env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  assert result.returncode == 0, result.stderr[-2000:]
  assert json.loads(result.stdout.strip().splitlines()[-1])['num_tokens'] == 4 * SEQ
  assert len(logit_cache.LogitCache(str(out))) == 4
