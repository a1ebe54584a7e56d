"""GGUF and safetensors import (q/k un-permuting, quantized types) and the tokenizers."""

import dataclasses

import jax
import numpy as np
import pytest

from distill_jax.llm import export
from distill_jax.llm import weights
from distill_jax.llm.model import Llama
from distill_jax.llm.tokenizer import load_tokenizer
from tests.llm.conftest import write_gguf, write_safetensors


def _max_diff(a, b):
  return max(jax.tree.leaves(jax.tree.map(lambda x, y: float(np.abs(x - y).max()), a, b)))


def test_gguf_f32_round_trip(tiny, tmp_path):
  config, variables = tiny
  path = str(tmp_path / 'tiny.gguf')
  write_gguf(path, config, variables)
  loaded_config, loaded = weights.load_gguf(path)
  assert loaded_config.rms_norm_eps == pytest.approx(config.rms_norm_eps)  # stored as f32
  assert dataclasses.replace(loaded_config, rms_norm_eps=config.rms_norm_eps) == config
  assert _max_diff(loaded, variables) == 0.0


def test_gguf_q8_0_close(tiny, tmp_path):
  config, variables = tiny
  path = str(tmp_path / 'q8.gguf')
  write_gguf(path, config, variables, quant='Q8_0')
  _, loaded = weights.load_gguf(path)
  assert 0 < _max_diff(loaded, variables) < 1e-3
  tokens = np.arange(8)[None]
  a = Llama(config).apply(loaded, tokens)[0]
  b = Llama(config).apply(variables, tokens)[0]
  np.testing.assert_allclose(a, b, atol=0.05)


def test_unsupported_quant_type_is_named(tiny, tmp_path):
  config, variables = tiny
  import gguf
  path = str(tmp_path / 'mxfp4.gguf')
  w = export.gguf_writer(path, config, None)
  qtype = gguf.GGMLQuantizationType.MXFP4
  embedding = np.asarray(variables['params']['embed']['embedding'], np.float32)
  w.add_tensor('token_embd.weight', gguf.quants.quantize(embedding, qtype), raw_dtype=qtype)
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  with pytest.raises(ValueError, match="'token_embd.weight' uses GGUF quantization type MXFP4"):
    weights.load_gguf(path)


def test_safetensors_round_trip_bf16(tiny, tmp_path):
  config, variables = tiny
  write_safetensors(str(tmp_path / 'hf'), config, variables)
  loaded_config, loaded = weights.load_safetensors(str(tmp_path / 'hf'), dtype='bfloat16')
  assert loaded_config == config
  assert loaded['params']['lm_head'].dtype == np.dtype('bfloat16')
  assert _max_diff(jax.tree.map(lambda x: np.asarray(x, np.float32), loaded), variables) < 1e-2


def test_missing_files(tmp_path):
  with pytest.raises(FileNotFoundError, match='config.json'):
    weights.load_safetensors(str(tmp_path))
  with pytest.raises(FileNotFoundError, match='tokenizer.json'):
    load_tokenizer(str(tmp_path))


def test_gguf_tokenizer_and_chat_template(tiny, tmp_path):
  config, variables = tiny
  path = str(tmp_path / 'tok.gguf')
  write_gguf(path, config, variables)
  tok = load_tokenizer(path)
  assert tok.vocab_size == config.vocab_size and tok.eos_id == 2 and tok.bos_id == 1
  text = 'the cat sat 1984'
  ids = tok.encode(text)
  assert tok.decode(ids) == text
  messages = [{'role': 'user', 'content': 'hi'}]
  prompt = tok.apply_chat_template(messages)
  assert prompt == '<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n'
  chat_ids = tok.encode_chat(messages)
  assert chat_ids[0] == 1 and chat_ids.count(2) == 1  # specials stay whole
  assert '1984' not in tok.backend.get_vocab()
  assert len(tok.encode('1984')) == 4  # single digits (smollm pre-tokenizer)


def test_gguf_without_tokenizer(tiny, tmp_path):
  config, variables = tiny
  path = str(tmp_path / 'notok.gguf')
  write_gguf(path, config, variables, with_tokenizer=False)
  with pytest.raises(ValueError, match='no tokenizer'):
    load_tokenizer(path)
