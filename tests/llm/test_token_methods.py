"""Token-level methods: registration, invariants, masking, vocabulary errors; seqkd + on-policy runs."""

import json
import os
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from distill_jax import config_args
from distill_jax import losses
from distill_jax import methods
from distill_jax import train
from distill_jax.data import text
from distill_jax.llm import seqkd
from distill_jax.llm.model import Llama
from distill_jax.llm.sampling import SamplingParams
from distill_jax.methods.token_skew_kl import skew_kl
from tests.llm.conftest import random_variables, tiny_config, write_gguf

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, 'configs', 'llm', 'smollm2.py')

NAMES = ['token_kl', 'token_reverse_kl', 'token_jsd', 'token_tv', 'token_skew_kl',
         'token_hidden']


def _outputs(seed, vocab=11, width=6):
  k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
  logits = jax.random.normal(k1, (2, 5, vocab)) * 2
  return logits, {'hidden_0': jax.random.normal(k2, (2, 5, width))}


def _batch():
  mask = jnp.asarray([[0, 0, 1, 1, 1], [0, 1, 1, 0, 0]], jnp.float32)
  return {'targets': jnp.zeros((2, 5), jnp.int32), 'loss_mask': mask}


@pytest.mark.parametrize('name', NAMES)
def test_zero_when_student_equals_teacher(name):
  method = methods.from_config(ml_collections.ConfigDict({'name': name}))
  out = _outputs(0)
  aux = method.init_aux(jax.random.PRNGKey(0), out[1], out[1])
  loss, metrics = method.loss(out, out, _batch(), aux, 0)
  assert abs(float(metrics['divergence'])) < 1e-5
  if name != 'token_hidden':
    assert abs(float(loss)) < 1e-5


def test_masked_mean_ignores_masked_tokens():
  method = methods.from_config(ml_collections.ConfigDict({'name': 'token_kl', 'temperature': 2.0}))
  s, t = _outputs(0), _outputs(1)
  batch = _batch()
  loss = method.loss(s, t, batch, {}, 0)[0]
  per_token = losses.kl_divergence(s[0], t[0], temperature=2.0)
  mask = batch['loss_mask']
  np.testing.assert_allclose(loss, jnp.sum(per_token * mask) / mask.sum(), rtol=1e-6)
  garbage = t[0].at[0, 0].set(100.0)  # a masked position
  np.testing.assert_allclose(method.loss(s, (garbage, t[1]), batch, {}, 0)[0], loss, rtol=1e-6)


def test_skew_kl_limits():
  s, t = _outputs(0)[0], _outputs(1)[0]
  np.testing.assert_allclose(skew_kl(s, t, lam=0.0, temperature=1.0, reverse=False),
                             losses.kl_divergence(s, t), rtol=1e-5)
  np.testing.assert_allclose(skew_kl(s, t, lam=0.0, temperature=1.0, reverse=True),
                             losses.reverse_kl(s, t), rtol=1e-5)
  assert (skew_kl(s, t, lam=0.1, temperature=1.0, reverse=False)
          < losses.kl_divergence(s, t)).all()
  grad = jax.grad(lambda t: skew_kl(s, t, lam=0.1, temperature=1.0, reverse=True).sum())(t)
  assert float(jnp.abs(grad).max()) == 0.0  # the teacher is never differentiated


def test_hidden_projection_when_widths_differ():
  method = methods.from_config(ml_collections.ConfigDict(
      {'name': 'token_hidden', 'layer_map': '0:0'}))
  s, t = _outputs(0, width=4), _outputs(1, width=6)
  aux = method.init_aux(jax.random.PRNGKey(0), s[1], t[1])
  assert aux['proj_0'].shape == (4, 6)
  grads = jax.grad(lambda a: method.loss(s, t, _batch(), a, 0)[0])(aux)
  assert float(jnp.abs(grads['proj_0']).sum()) > 0


def test_different_vocabularies_are_an_error():
  method = methods.from_config(ml_collections.ConfigDict({'name': 'token_jsd'}))
  with pytest.raises(ValueError, match='student has 11 tokens and the teacher 13'):
    method.loss(_outputs(0, vocab=11), _outputs(0, vocab=13), _batch(), {}, 0)


def test_make_lm_batch_alignment():
  batch = text.make_lm_batch(np.asarray([[0, 5, 6]]), np.asarray([[False, True, True]]),
                             np.asarray([[7, 8, 0]]), np.asarray([[True, True, False]]))
  assert batch['inputs'].tolist() == [[0, 5, 6, 7, 8]]
  assert batch['targets'].tolist() == [[5, 6, 7, 8, 0]]
  assert batch['loss_mask'].tolist() == [[0, 0, 1, 1, 0]]
  assert batch['token_mask'].tolist() == [[False, True, True, True, True]]


def test_on_policy_run_on_a_seqkd_dataset(tmp_path):
  """Sequence-level KD data written from the teacher, then on-policy GKD (lam=0.5)
  over it through the one trainer: both kinds of batch happen, nothing recompiles."""
  teacher_config = tiny_config()
  teacher_vars = random_variables(teacher_config, seed=1)
  gguf_path = str(tmp_path / 'teacher.gguf')
  write_gguf(gguf_path, teacher_config, teacher_vars)
  rng = np.random.default_rng(0)
  prompts = rng.integers(3, 200, (8, 4)).tolist()
  sampling = SamplingParams(max_new_tokens=4, temperature=1.0)
  responses = seqkd.generate_responses(Llama(teacher_config), teacher_vars, prompts, sampling,
                                       eos_id=None, pad_id=0, seed=0, batch_size=8,
                                       prompt_multiple=1)
  seqkd.write_dataset(prompts, responses, {'teacher': 'tiny', 'seed': 0},
                      data_dir=str(tmp_path), name='resp')
  source, provenance = seqkd.load_dataset(str(tmp_path), 'resp')
  assert len(source) == 8 and provenance['teacher'] == 'tiny'
  stored = {tuple(source[i]['prompt']): source[i]['response'].tolist() for i in range(8)}
  assert stored == {tuple(p): r for p, r in zip(prompts, responses)}  # tfds shuffles
  config = config_args.load_config_file(
      CONFIG, f'runlocal,teacher={gguf_path},method=token_jsd,lam=0.5,'
      f'seqkd_data_dir={tmp_path},seqkd_name=resp')
  assert config.data.name == 'seqkd'
  config.train.num_steps = 4
  results = train.run(config, str(tmp_path / 'run'))
  rows = [json.loads(line) for line in open(tmp_path / 'run' / 'metrics.jsonl')]
  on_policy = [r['train/on_policy'] for r in rows if 'train/loss' in r]
  assert len(on_policy) == 4 and 0 < sum(on_policy) < 4  # both kinds of batch happened
  assert results['steps'] == 4 and np.isfinite(results['eval']['perplexity'])
  assert 0 <= results['eval']['agreement'] <= 1


def _seqkd_command(teacher, prompts, data_dir, name, process_id=None, port=None):
  command = [sys.executable, '-m', 'distill_jax.llm.seqkd', f'--teacher={teacher}',
             f'--prompts={prompts}', f'--data_dir={data_dir}', f'--name={name}',
             '--max_new_tokens=4', '--temperature=1.0', '--batch_size=2', '--seed=3']
  if process_id is not None:
    command += [f'--coordinator=127.0.0.1:{port}', '--num_processes=2',
                f'--process_id={process_id}']
  return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)


def test_seqkd_generation_on_two_processes_equals_one(tmp_path):
  """``python -m distill_jax.llm.seqkd`` on 2 processes: each samples its block of
  the prompts; process 0 writes the data set, equal to the 1-process one."""
  config = tiny_config()
  teacher = str(tmp_path / 'teacher.gguf')
  write_gguf(teacher, config, random_variables(config, seed=2))
  prompts = tmp_path / 'prompts.txt'
  prompts.write_text('\n'.join(['the heath', 'a theater', 'the tea', 'at the', 'heathen',
                                'thaw']) + '\n')
  one = _seqkd_command(teacher, prompts, tmp_path / 'data', 'one')
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  two = [_seqkd_command(teacher, prompts, tmp_path / 'data', 'two', i, port) for i in range(2)]
  outputs = [p.communicate(timeout=120)[0] for p in [one, *two]]
  assert all(p.returncode == 0 for p in [one, *two]), outputs
  pairs = {}
  for name in ('one', 'two'):
    source, provenance = seqkd.load_dataset(str(tmp_path / 'data'), name)
    assert len(source) == 6 and provenance['num_examples'] == 6
    pairs[name] = {tuple(source[i]['prompt']): source[i]['response'].tolist()
                   for i in range(6)}
  assert pairs['one'] == pairs['two']


def test_the_config_sets_the_temperature_and_runlocal_keeps_the_batch_size():
  config = config_args.load_config_file(CONFIG, 'method=token_kl,temperature=2.0,batch_size=16,'
                                                'runlocal')
  assert config.method.temperature == 2.0 and config.train.batch_size == 16
  with pytest.raises(ValueError, match='TokenForwardKL.temperature=1e-30 is below 0.01'):
    methods.from_config(ml_collections.ConfigDict({'name': 'token_kl', 'temperature': 1e-30}))
