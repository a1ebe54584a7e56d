"""Tiny Llama fixtures: a random model and GGUF / safetensors files written from it."""

import functools
import json
import os
import tempfile

import flax.linen as nn
import jax
import numpy as np
import pytest

from distill_jax.llm import export
from distill_jax.llm import tokenizer
from distill_jax.llm import weights
from distill_jax.llm.model import Llama, LlamaConfig

SPECIALS = ['<|endoftext|>', '<|im_start|>', '<|im_end|>']
CHAT_TEMPLATE = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
                 "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
                 "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def byte_level_vocab():
  """Specials, the 256 byte-level symbols and a few merges (GPT-2 style)."""
  bs = list(range(ord('!'), ord('~') + 1)) + list(range(161, 173)) + list(range(174, 256))
  cs = bs[:]
  n = 0
  for b in range(256):
    if b not in bs:
      bs.append(b)
      cs.append(256 + n)
      n += 1
  symbols = [chr(c) for c in cs]
  merges = ['Ġ t', 'h e', 'Ġt he', 'Ġ a']
  tokens = SPECIALS + symbols + [m.replace(' ', '') for m in merges]
  return tokens, merges


TOKENS, MERGES = byte_level_vocab()


def tiny_config(**overrides) -> LlamaConfig:
  values = dict(vocab_size=len(TOKENS), hidden_size=32, intermediate_size=64, num_layers=2,
                num_heads=4, num_kv_heads=2, rope_theta=10000.0, rms_norm_eps=1e-5,
                tie_embeddings=False, max_seq_len=64)
  values.update(overrides)
  return LlamaConfig(**values)


def random_variables(config: LlamaConfig, seed: int = 0):
  """Random params with non-trivial norm scales (so the norms are tested too)."""
  variables = Llama(config).init(jax.random.PRNGKey(seed), np.zeros((1, 4), np.int32))
  variables = jax.tree.map(np.asarray, nn.unbox(variables))
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map_with_path(
      lambda path, x: (1 + 0.1 * rng.standard_normal(x.shape)).astype(np.float32)
      if path[-1].key == 'scale' else x, variables)


def to_hf(config: LlamaConfig, variables) -> dict[str, np.ndarray]:
  """Our params in Hugging Face names and layout (``weights.hf_tensors``)."""
  return weights.hf_tensors(config, variables['params'])


@functools.lru_cache(maxsize=4)
def tiny_tokenizer(tokens: tuple[str, ...] = tuple(TOKENS)):
  """The byte-level BPE of ``tokens`` (default TOKENS) and MERGES, read back from
  a tokenizer-only GGUF."""
  import gguf
  path = os.path.join(tempfile.mkdtemp(prefix='tiny_tokenizer_'), 'tokenizer.gguf')
  w = gguf.GGUFWriter(path, 'llama')
  w.add_tokenizer_model('gpt2')
  w.add_tokenizer_pre('smollm')
  w.add_token_list(list(tokens))
  w.add_token_types([3] * len(SPECIALS) + [1] * (len(tokens) - len(SPECIALS)))
  w.add_token_merges(MERGES)
  w.add_bos_token_id(1)
  w.add_eos_token_id(2)
  w.add_chat_template(CHAT_TEMPLATE)
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  return tokenizer.from_gguf(path)


def write_gguf(path: str, config: LlamaConfig, variables, *, quant: str = 'F32',
               with_tokenizer: bool = True) -> None:
  """A llama.cpp-style GGUF of the tiny model (``export.write_gguf``, 2-D
  tensors as ``quant``) with the tiny tokenizer."""
  export.write_gguf(path, config, variables['params'],
                    tiny_tokenizer() if with_tokenizer else None, quant.lower())


def write_safetensors(directory: str, config: LlamaConfig, variables) -> None:
  from safetensors.numpy import save_file
  os.makedirs(directory, exist_ok=True)
  save_file(to_hf(config, variables), os.path.join(directory, 'model.safetensors'))
  with open(os.path.join(directory, 'config.json'), 'w') as f:
    json.dump({'model_type': 'llama', 'vocab_size': config.vocab_size,
               'hidden_size': config.hidden_size,
               'intermediate_size': config.intermediate_size,
               'num_hidden_layers': config.num_layers,
               'num_attention_heads': config.num_heads,
               'num_key_value_heads': config.num_kv_heads, 'rope_theta': config.rope_theta,
               'rms_norm_eps': config.rms_norm_eps,
               'tie_word_embeddings': config.tie_embeddings,
               'max_position_embeddings': config.max_seq_len}, f)


@pytest.fixture(scope='module')
def tiny():
  config = tiny_config()
  return config, random_variables(config)


@pytest.fixture(scope='module')
def teacher_gguf(tiny, tmp_path_factory):
  """The tiny random model as a GGUF teacher file (with the tiny tokenizer)."""
  config, variables = tiny
  path = str(tmp_path_factory.mktemp('teacher') / 'tiny.gguf')
  write_gguf(path, config, variables)
  return path
