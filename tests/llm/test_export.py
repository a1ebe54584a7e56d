"""Exported students (``python -m distill_jax.tools.export``) read back by other tools.

A 2-step runlocal run's student is written as a Hugging Face folder and as
GGUF (f32, f16, q8_0); ``transformers`` loads each (``from_pretrained``, its
GGUF reader) and its logits equal ours (q8_0 / f16 within their rounding), the
tokenizer encodes alike, and our own loaders read the files back. A Qwen2-style
model (q/k/v biases) exports through the same writers. Needs the ``[hf]`` extra.
"""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from distill_jax import train as train_lib
from distill_jax.llm import export
from distill_jax.llm import weights
from distill_jax.llm.model import Llama
from distill_jax.llm.tokenizer import load_tokenizer
from distill_jax.tools import export as export_tool
from tests.llm.conftest import random_variables, tiny_config, write_gguf
from tests.llm.test_run import ROOT, _config

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')

TOKENS = np.random.default_rng(1).integers(3, 260, (2, 20))
TEXT = 'the theatre, the hat; 1234 apples'


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  """``(workdir, teacher path)`` of a finished 2-step runlocal run."""
  root = tmp_path_factory.mktemp('export')
  teacher = str(root / 'teacher.gguf')
  config = tiny_config()
  write_gguf(teacher, config, random_variables(config, seed=2))
  workdir = str(root / 'run')
  train_lib.run(_config(teacher), workdir)
  return workdir, teacher


def _ours(workdir):
  config, params, _, _ = export_tool.load_student(workdir)
  return config, params, np.asarray(Llama(config).apply({'params': params}, TOKENS)[0])


def _transformers_logits(folder, gguf_file=None):
  model = transformers.AutoModelForCausalLM.from_pretrained(
      folder, gguf_file=gguf_file, dtype=torch.float32, attn_implementation='eager').eval()
  with torch.no_grad():
    return model(torch.from_numpy(TOKENS)).logits.numpy()


def test_hf_folder_loads_in_transformers(run, tmp_path):
  workdir, teacher = run
  out = str(tmp_path / 'student_hf')
  line = export_tool.run(workdir, 'hf', out)
  assert 'at step 2' in line and 'as hf' in line
  assert sorted(os.listdir(out)) == ['config.json', 'generation_config.json',
                                     'model.safetensors', 'tokenizer.json',
                                     'tokenizer_config.json']
  _, params, ours = _ours(workdir)
  np.testing.assert_allclose(_transformers_logits(out), ours, atol=1e-4)
  reference = transformers.AutoTokenizer.from_pretrained(out)
  assert reference.encode(TEXT, add_special_tokens=False) == load_tokenizer(teacher).encode(TEXT)
  _, loaded = weights.load_pretrained(out)
  jax.tree.map(np.testing.assert_array_equal, loaded['params'], params)


@pytest.mark.parametrize('gguf_type,atol', [('f32', 1e-5), ('f16', 2e-3), ('q8_0', 2e-2)])
def test_gguf_reads_back_in_transformers_and_here(run, tmp_path, gguf_type, atol):
  workdir, teacher = run
  out = str(tmp_path / f'student_{gguf_type}.gguf')
  if gguf_type == 'f32':  # the command line
    done = subprocess.run(
        [sys.executable, '-m', 'distill_jax.tools.export', f'--workdir={workdir}',
         '--format=gguf', f'--out={out}'], capture_output=True, text=True, check=False,
        cwd=ROOT, env={**os.environ, 'PYTHONPATH': ROOT})
    assert done.returncode == 0, done.stderr[-2000:]
    assert f'{out}: the student of {workdir} at step 2' in done.stdout
  else:
    export_tool.run(workdir, 'gguf', out, gguf_type)
  _, _, ours = _ours(workdir)
  config, variables = weights.load_gguf(out)
  here = np.asarray(Llama(config).apply(variables, TOKENS)[0])
  np.testing.assert_allclose(here, ours, atol=atol * np.abs(ours).max())
  np.testing.assert_allclose(_transformers_logits(str(tmp_path), os.path.basename(out)), here,
                             atol=1e-4)
  assert load_tokenizer(out).encode(TEXT) == load_tokenizer(teacher).encode(TEXT)


def test_qwen2_style_model_exports(tmp_path, run):
  """q/k/v biases: config.json says Qwen2ForCausalLM, GGUF says qwen2 (no q/k permutation)."""
  _, teacher = run
  config = tiny_config(attention_bias=True, tie_embeddings=True)
  params = random_variables(config)['params']
  rng = np.random.default_rng(0)
  for i in range(config.num_layers):
    for x in 'qkv':
      leaf = params[f'layers_{i}']['attn'][f'{x}_bias']
      params[f'layers_{i}']['attn'][f'{x}_bias'] = rng.standard_normal(leaf.shape).astype(np.float32)
  ours = np.asarray(Llama(config).apply({'params': params}, TOKENS)[0])
  tokenizer = load_tokenizer(teacher)
  folder = str(tmp_path / 'qwen_hf')
  export.write_hf_folder(folder, config, params, tokenizer)
  np.testing.assert_allclose(_transformers_logits(folder), ours, atol=1e-4)
  path = str(tmp_path / 'qwen.gguf')
  export.write_gguf(path, config, params, tokenizer)
  np.testing.assert_allclose(_transformers_logits(str(tmp_path), 'qwen.gguf'), ours, atol=1e-4)
  loaded_config, loaded = weights.load_gguf(path)
  assert loaded_config.attention_bias
  np.testing.assert_allclose(np.asarray(Llama(loaded_config).apply(loaded, TOKENS)[0]), ours,
                             atol=1e-5)


def test_export_errors(run, tmp_path):
  workdir, _ = run
  with pytest.raises(FileExistsError, match='exists'):
    export_tool.run(workdir, 'hf', str(tmp_path))
  with pytest.raises(ValueError, match="--format='onnx'"):
    export_tool.run(workdir, 'onnx', str(tmp_path / 'x'))
  with pytest.raises(ValueError, match='per-frequency RoPE factors'):
    export.hf_config_json(
        tiny_config(rope_freq_factors=(1.0, 2.0, 4.0, 8.0)), load_tokenizer(run[1]))
