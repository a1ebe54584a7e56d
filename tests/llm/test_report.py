"""The distillation report of an LM run (``train.report``): ``report.md`` and results.json."""

import json
import os

import numpy as np
import pytest

from distill_jax import train as train_lib
from distill_jax.llm import export
from distill_jax.llm import report as report_lib
from distill_jax.llm.model import Llama
from distill_jax.llm.tokenizer import load_tokenizer
from tests.llm.conftest import random_variables, tiny_config, write_gguf
from tests.llm.test_run import _config


@pytest.mark.parametrize('tensor_type', export.GGUF_TYPES)
@pytest.mark.parametrize('overrides', [{}, {'attention_bias': True, 'tie_embeddings': True,
                                            'rope_freq_factors': (1.0, 2.0, 4.0, 8.0)}])
def test_gguf_tensor_bytes_are_the_files(tmp_path, tensor_type, overrides):
  import gguf
  config = tiny_config(**overrides)
  path = str(tmp_path / 'm.gguf')
  write_gguf(path, tiny_config(), random_variables(tiny_config()))
  tokenizer = load_tokenizer(path)
  out = str(tmp_path / f'{tensor_type}.gguf')
  export.write_gguf(out, config, random_variables(config)['params'], tokenizer, tensor_type)
  stored = sum(int(t.n_bytes) for t in gguf.GGUFReader(out).tensors)
  assert export.gguf_tensor_bytes(config, tensor_type) == stored


def test_run_writes_the_report(tmp_path):
  teacher_config = tiny_config(num_layers=4, hidden_size=64, intermediate_size=128,
                               max_seq_len=160)
  teacher = str(tmp_path / 'teacher.gguf')
  write_gguf(teacher, teacher_config, random_variables(teacher_config, seed=3))
  workdir = str(tmp_path / 'run')
  results = train_lib.run(_config(teacher, **{'train.report': True,
                                              'student.kwargs.max_seq_len': 160}), workdir)
  report = results['report']
  with open(os.path.join(workdir, 'results.json')) as f:
    assert json.load(f)['report'] == report
  t, s = report['models']['teacher'], report['models']['student']
  assert t['parameters'] == teacher_config.num_params() > s['parameters']
  assert t['gguf_bytes']['f32'] > t['gguf_bytes']['f16'] > t['gguf_bytes']['q8_0']
  for row in (t, s):
    assert all(v > 0 for v in row['greedy_tokens_per_s'].values())
    assert set(row['greedy_tokens_per_s']) == {'batch_1', 'batch_16'}
  assert s['perplexity'] == results['eval']['perplexity']
  assert s['agreement'] == results['eval']['agreement']
  assert len(report['answers']['student']) == len(report_lib.PROMPTS)
  text = open(os.path.join(workdir, 'report.md')).read()
  assert '| parameters |' in text and 'greedy tokens/s, batch 16' in text
  assert all(f'**{p}**' in text for p in report_lib.PROMPTS)


def test_decoding_speed_within_the_context(tmp_path):
  config = tiny_config(max_seq_len=160)
  path = str(tmp_path / 'm.gguf')
  variables = random_variables(config)
  write_gguf(path, config, variables)
  tokenizer = load_tokenizer(path)
  rate = report_lib.decoding_tokens_per_s(Llama(config), variables, tokenizer,
                                          batch_size=2, new_tokens=4)
  assert np.isfinite(rate) and rate > 0
  short = tiny_config(max_seq_len=32)  # the chat prompts alone fill it
  assert report_lib.decoding_tokens_per_s(Llama(short), variables, tokenizer,
                                          batch_size=2, new_tokens=4) is None
