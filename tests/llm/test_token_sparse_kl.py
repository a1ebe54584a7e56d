"""token_sparse_kl: offline distillation from a Llama teacher's logit cache.

A tiny random Llama (GGUF with its tokenizer) is cached by the tool over a
text file, the cache is read back as LM examples, and a tiny student trains
on them with no teacher forward (through the one trainer).
"""

import os
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from distill_jax import losses
from distill_jax import methods
from distill_jax.data import logit_cache
from distill_jax import config_args
from distill_jax import train
from distill_jax.data import text
from distill_jax.llm.tokenizer import load_tokenizer
from distill_jax.tools import cache_teacher_logits
from tests.llm.conftest import random_variables, tiny_config, write_gguf

WINDOW, K = 12, 16
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, 'configs', 'llm', 'smollm2.py')


@pytest.fixture(scope='module')
def teacher_gguf(tmp_path_factory):
  directory = tmp_path_factory.mktemp('teacher')
  config = tiny_config()
  path = str(directory / 'teacher.gguf')
  write_gguf(path, config, random_variables(config, seed=1))
  text = directory / 'text.txt'
  text.write_text('the theater at the heath; the heathen thaw the tea. ' * 6)
  return path, str(text)


@pytest.fixture(scope='module')
def cache_dir(teacher_gguf, tmp_path_factory):
  path, text = teacher_gguf
  out = str(tmp_path_factory.mktemp('cache') / 'top_k')
  metadata = cache_teacher_logits.run(
      llama=path, out=out, spec=logit_cache.CacheSpec(k=K), batch_size=4,
      text=text, window=WINDOW, num_windows=8, seed=0)
  assert metadata['num_sequences'] == 8 and metadata['seq_len'] == WINDOW
  assert metadata['provenance']['llama'].endswith('teacher.gguf')
  assert metadata['tokenizer']['hash'].startswith('vocab-sha256:')
  return out


def _student_tokenizer(teacher_gguf):
  return logit_cache.tokenizer_info(load_tokenizer(teacher_gguf[0]))


def test_cached_examples_layout(cache_dir):
  cache = logit_cache.LogitCache(cache_dir)
  examples = logit_cache.CachedExamples(cache, prompt_len=4)
  got = examples.get(np.arange(8))
  batch = text.make_lm_batch(got['prompt'], got['prompt_mask'], got['response'],
                             got['response_mask'])
  item = cache.get(np.arange(8))
  np.testing.assert_array_equal(batch['targets'], item['tokens'][:, 1:])
  np.testing.assert_array_equal(got['target_ids'], item['target_ids'][:, :-1])
  assert got['target_ids'].shape == (8, WINDOW - 1, K)
  assert got['tail_logprob'].shape == (8, WINDOW - 1)
  # Targets 0..2 are prompt tokens (positions 1..3), the rest are distilled.
  assert batch['loss_mask'][0].tolist() == [0.0] * 3 + [1.0] * (WINDOW - 4)
  assert batch['token_mask'].all()
  with pytest.raises(ValueError, match='prompt_len must be in'):
    logit_cache.CachedExamples(cache, prompt_len=WINDOW)


def test_cache_to_two_training_steps(cache_dir, teacher_gguf):
  config = config_args.load_config_file(
      CONFIG, f'runlocal,teacher={teacher_gguf[0]},method=token_sparse_kl,'
      f'logit_cache_dir={cache_dir},learning_rate=3e-2')
  config.optim.name = 'adam'
  config.optim.grad_clip_norm = 0.0
  exp = train.build(config)
  state = exp.compiled.init_fn(jax.random.PRNGKey(0))
  losses_seen = []
  for step in range(2):  # The whole cache (8 sequences) is each step's batch.
    batch = train.global_batch(next(exp.train_batches(step)), exp.compiled.batch_sharding)
    state, metrics = exp.compiled.train_fn(state, exp.compiled.teacher_variables, batch)
    assert not metrics['nonfinite'] and np.isfinite(metrics['loss'])
    losses_seen.append(float(metrics['loss']))
  assert int(state.step) == 2
  assert losses_seen[1] < losses_seen[0]


def test_two_process_cache_equals_one_process(cache_dir, teacher_gguf, tmp_path):
  """The real command on 2 processes: each runs the teacher over its block of the
  windows and writes its own shards; process 0 writes the metadata; the cache
  holds the very sequences and targets of the 1-process cache, in its order."""
  path, text_file = teacher_gguf
  out = str(tmp_path / 'two')
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  procs = [subprocess.Popen(
      [sys.executable, '-m', 'distill_jax.tools.cache_teacher_logits', f'--llama={path}',
       f'--text={text_file}', f'--window={WINDOW}', '--num_windows=8', f'--k={K}',
       '--batch_size=4', '--seed=0', f'--out={out}', f'--coordinator=127.0.0.1:{port}',
       '--num_processes=2', f'--process_id={i}'],
      cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
      for i in range(2)]
  outputs = [p.communicate(timeout=120)[0] for p in procs]
  assert all(p.returncode == 0 for p in procs), outputs
  assert '"num_sequences": 8' in outputs[0] and 'num_sequences' not in outputs[1]
  one, two = logit_cache.LogitCache(cache_dir), logit_cache.LogitCache(out)
  assert two.metadata['shards'] == ['logits-p000-00000.array_record',
                                    'logits-p001-00000.array_record']
  assert two.metadata['provenance']['processes'] == 2
  assert sorted(os.listdir(out)) == sorted(two.metadata['shards'] + ['metadata.json'])
  for key in ('num_sequences', 'num_tokens', 'seq_len'):
    assert one.metadata[key] == two.metadata[key]
  a, b = one.get(np.arange(8)), two.get(np.arange(8))
  for key in a:
    np.testing.assert_array_equal(a[key], b[key])


def test_cache_of_another_tokenizer_is_refused(cache_dir, teacher_gguf):
  mine = _student_tokenizer(teacher_gguf)
  for other in (logit_cache.TokenizerInfo(mine.vocab_size, 'vocab-sha256:0'),
                logit_cache.TokenizerInfo(mine.vocab_size + 1, mine.hash)):
    with pytest.raises(logit_cache.TokenizerMismatchError,
                       match=r'made with tokenizer vocab_size=.*the student uses'):
      logit_cache.LogitCache(cache_dir, tokenizer=other)


@pytest.mark.parametrize('tail_bucket', [True, False])
def test_k_equal_to_vocab_is_the_full_forward_kl(tail_bucket):
  k1, k2 = jax.random.split(jax.random.PRNGKey(0))
  student, teacher = (jax.random.normal(k, (2, 5, 11)) * 2 for k in (k1, k2))
  mask = jnp.asarray([[0, 1, 1, 1, 0], [1, 1, 0, 0, 1]], jnp.float32)
  spec = logit_cache.CacheSpec(k=11)
  targets = logit_cache.sparsify(teacher, spec, jax.random.PRNGKey(0))
  batch = {'targets': jnp.zeros((2, 5), jnp.int32), 'loss_mask': mask,
           'target_ids': targets['ids'], 'target_logprobs': targets['logprobs'],
           'tail_logprob': targets['tail']}
  sparse = methods.from_config(ml_collections.ConfigDict(
      {'name': 'token_sparse_kl', 'temperature': 2.0,
       'tail_bucket': tail_bucket}))
  full = methods.from_config(ml_collections.ConfigDict(
      {'name': 'token_kl', 'temperature': 2.0}))
  value, metrics = sparse.loss((student, {}), None, batch, {}, 0)
  expected = jnp.sum(mask * losses.kl_divergence(student, teacher,
                                                 temperature=2.0)) / mask.sum()
  np.testing.assert_allclose(value, expected, rtol=1e-5)
  np.testing.assert_allclose(metrics['divergence'],
                             full.loss((student, {}), (teacher, {}), batch, {}, 0)[1]['divergence'],
                             rtol=1e-5)
  grad_sparse = jax.grad(lambda s: sparse.loss((s, {}), None, batch, {}, 0)[0])(student)
  grad_full = jax.grad(lambda s: full.loss((s, {}), (teacher, {}), batch, {}, 0)[0])(student)
  np.testing.assert_allclose(grad_sparse, grad_full, rtol=1e-4, atol=1e-6)


def test_batch_without_targets_is_a_clear_error():
  method = methods.from_config(ml_collections.ConfigDict(
      {'name': 'token_sparse_kl'}))
  batch = {'targets': jnp.zeros((1, 3), jnp.int32),
           'loss_mask': jnp.ones((1, 3))}
  with pytest.raises(ValueError, match=r'no target_ids, target_logprobs, '
                     r'tail_logprob.*data.name=logit_cache'):
    method.loss((jnp.zeros((1, 3, 5)), {}), None, batch, {}, 0)


def test_tool_needs_exactly_one_data_source(teacher_gguf, tmp_path):
  with pytest.raises(ValueError, match='exactly one of --text'):
    cache_teacher_logits.run(llama=teacher_gguf[0], out=str(tmp_path),
                             spec=logit_cache.CacheSpec(k=K), batch_size=4)
