"""A ``Llama`` out of the framework: a Hugging Face folder or a GGUF file.

* ``write_hf_folder``: ``config.json`` (``LlamaForCausalLM``, or
  ``Qwen2ForCausalLM`` when the q/k/v projections have biases),
  ``model.safetensors`` (float32), ``tokenizer.json`` +
  ``tokenizer_config.json`` (special tokens, chat template) and
  ``generation_config.json``: what ``transformers``'
  ``AutoModelForCausalLM.from_pretrained`` / ``AutoTokenizer`` read.
* ``write_gguf``: a llama.cpp GGUF (architecture ``llama`` or ``qwen2``, q/k
  rows permuted for ``llama`` as llama.cpp's converter does, RoPE frequency
  factors as ``rope_freqs``), tensors in F32, F16 or Q8_0 (norms stay F32),
  with the byte-level BPE tokenizer in ``tokenizer.ggml.*`` metadata.

Both are the inverse of ``llm.weights``' readers (``weights.hf_tensors``);
``tests/llm/test_export.py`` reads the files back with our loaders and with
``transformers`` and compares logits.
"""

import json
import os
from typing import Any

import numpy as np

from distill_jax.llm import weights
from distill_jax.llm.model import LlamaConfig
from distill_jax.llm.tokenizer import Tokenizer

GGUF_TYPES = ('f32', 'f16', 'q8_0')
# HF name -> GGUF name (the readers' maps, reversed).
_GGUF_NAMES = {hf: name for name, hf in weights.GGUF_NAMES.items()}
_GGUF_BLOCK = {hf: name for name, hf in weights.GGUF_BLOCK_NAMES.items()}


def _architecture(config: LlamaConfig) -> str:
  return 'qwen2' if config.attention_bias else 'llama'


def hf_config_json(config: LlamaConfig, tokenizer: Tokenizer) -> dict[str, Any]:
  """``config.json`` of ``config`` (the inverse of ``weights.hf_config``).

  Raises:
    ValueError: RoPE frequency factors that are not one linear factor (Llama
      3.1's ramp has no exact HF form once read as factors; export GGUF).
  """
  factors = set(config.rope_freq_factors)
  if len(factors) > 1:
    raise ValueError('The model has per-frequency RoPE factors (Llama 3.1-style scaling, '
                     'read as GGUF rope_freqs); config.json cannot state them exactly: '
                     'export --format=gguf.')
  arch = _architecture(config)
  out = {
      'architectures': ['Qwen2ForCausalLM' if arch == 'qwen2' else 'LlamaForCausalLM'],
      'model_type': arch, 'vocab_size': config.vocab_size,
      'hidden_size': config.hidden_size, 'intermediate_size': config.intermediate_size,
      'num_hidden_layers': config.num_layers, 'num_attention_heads': config.num_heads,
      'num_key_value_heads': config.num_kv_heads, 'head_dim': config.head_dim,
      'hidden_act': 'silu', 'rope_theta': config.rope_theta,
      'rms_norm_eps': config.rms_norm_eps, 'tie_word_embeddings': config.tie_embeddings,
      'max_position_embeddings': config.max_seq_len, 'attention_bias': config.attention_bias,
      'torch_dtype': 'float32', 'bos_token_id': tokenizer.bos_id,
      'eos_token_id': tokenizer.eos_id}
  if factors:
    out['rope_scaling'] = {'rope_type': 'linear', 'factor': factors.pop()}
  if config.logit_scale != 1.0:
    out['logit_scale'] = config.logit_scale
  if config.logit_softcap:
    out['final_logit_softcapping'] = config.logit_softcap
  return out


def _token(tokenizer: Tokenizer, token_id: int | None) -> str | None:
  return None if token_id is None else tokenizer.backend.id_to_token(token_id)


def write_hf_folder(out: str, config: LlamaConfig, params: dict[str, Any],
                    tokenizer: Tokenizer) -> list[str]:
  """Writes the Hugging Face folder ``out`` (float32); returns the files written."""
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  os.makedirs(out, exist_ok=True)
  files = {
      'config.json': hf_config_json(config, tokenizer),
      'generation_config.json': {'bos_token_id': tokenizer.bos_id,
                                 'eos_token_id': tokenizer.eos_id,
                                 'pad_token_id': tokenizer.pad_id},
      'tokenizer_config.json': {
          'tokenizer_class': 'PreTrainedTokenizerFast',
          'bos_token': _token(tokenizer, tokenizer.bos_id),
          'eos_token': _token(tokenizer, tokenizer.eos_id),
          'pad_token': _token(tokenizer, tokenizer.pad_id),
          'add_bos_token': tokenizer.add_bos, 'chat_template': tokenizer.chat_template,
          'model_max_length': config.max_seq_len}}
  for name, content in files.items():
    with open(os.path.join(out, name), 'w') as f:
      json.dump(content, f, indent=2, ensure_ascii=False)
  tokenizer.backend.save(os.path.join(out, 'tokenizer.json'))
  save_file(weights.hf_tensors(config, params), os.path.join(out, 'model.safetensors'),
            metadata={'format': 'pt'})
  return sorted([*files, 'tokenizer.json', 'model.safetensors'])


def _gguf_tokenizer(writer, tokenizer: Tokenizer) -> None:
  """``tokenizer.ggml.*`` of a byte-level BPE tokenizer (what ``from_gguf`` reads)."""
  model = json.loads(tokenizer.backend.to_str())
  if model['model']['type'] != 'BPE':
    raise ValueError(f'GGUF export writes byte-level BPE tokenizers; {tokenizer.source} has '
                     f'a {model["model"]["type"]} one.')
  vocab = tokenizer.backend.get_vocab(with_added_tokens=True)
  tokens = sorted(vocab, key=vocab.get)
  special = {t['content'] for t in model.get('added_tokens', []) if t.get('special')}
  merges = [m if isinstance(m, str) else ' '.join(m) for m in model['model']['merges']]
  digits = 'individual_digits' in json.dumps(model.get('pre_tokenizer'))
  writer.add_tokenizer_model('gpt2')
  writer.add_tokenizer_pre('smollm' if digits else 'gpt2')
  writer.add_token_list(tokens)
  writer.add_token_types([3 if t in special else 1 for t in tokens])
  writer.add_token_merges(merges)
  for key, token_id in (('bos', tokenizer.bos_id), ('eos', tokenizer.eos_id),
                        ('pad', tokenizer.pad_id)):
    if token_id is not None:
      getattr(writer, f'add_{key}_token_id')(token_id)
  writer.add_add_bos_token(tokenizer.add_bos)
  if tokenizer.chat_template:
    writer.add_chat_template(tokenizer.chat_template)


def hf_shapes(config: LlamaConfig) -> dict[str, tuple[int, ...]]:
  """The HF-layout shape of every tensor ``weights.hf_tensors`` gives for ``config``."""
  d, f, v = config.hidden_size, config.intermediate_size, config.vocab_size
  q, kv = config.num_heads * config.head_dim, config.num_kv_heads * config.head_dim
  shapes = {'model.embed_tokens.weight': (v, d), 'model.norm.weight': (d,)}
  if not config.tie_embeddings:
    shapes['lm_head.weight'] = (v, d)
  block = {'self_attn.q_proj.weight': (q, d), 'self_attn.k_proj.weight': (kv, d),
           'self_attn.v_proj.weight': (kv, d), 'self_attn.o_proj.weight': (d, q),
           'mlp.gate_proj.weight': (f, d), 'mlp.up_proj.weight': (f, d),
           'mlp.down_proj.weight': (d, f), 'input_layernorm.weight': (d,),
           'post_attention_layernorm.weight': (d,)}
  if config.attention_bias:
    block.update({'self_attn.q_proj.bias': (q,), 'self_attn.k_proj.bias': (kv,),
                  'self_attn.v_proj.bias': (kv,)})
  for i in range(config.num_layers):
    shapes.update({f'model.layers.{i}.{k}': s for k, s in block.items()})
  return shapes


def _stored_as(shape: tuple[int, ...], tensor_type: str) -> str:
  """The GGUF type ``write_gguf`` stores a tensor of HF ``shape`` in."""
  if len(shape) == 2 and tensor_type == 'f16':
    return 'F16'
  if len(shape) == 2 and tensor_type == 'q8_0' and shape[1] % 32 == 0:
    return 'Q8_0'
  return 'F32'


def gguf_tensor_bytes(config: LlamaConfig, tensor_type: str) -> int:
  """Bytes of the tensor data ``write_gguf(..., tensor_type)`` writes (metadata aside)."""
  import gguf  # pylint: disable=g-import-not-at-top
  total = 4 * len(config.rope_freq_factors)
  for shape in hf_shapes(config).values():
    block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[_stored_as(shape, tensor_type)]]
    total += int(np.prod(shape)) // block * size
  return total


def gguf_writer(out: str, config: LlamaConfig, tokenizer: Tokenizer | None,
                tensor_type: str = 'f32'):
  """A ``gguf.GGUFWriter`` for ``out`` holding ``config``'s metadata (and the
  tokenizer's, unless None); the caller adds the tensors and writes the file."""
  import gguf  # pylint: disable=g-import-not-at-top
  arch = _architecture(config)
  w = gguf.GGUFWriter(out, arch)
  c = config
  for key, value in (('block_count', c.num_layers), ('context_length', c.max_seq_len),
                     ('embedding_length', c.hidden_size),
                     ('feed_forward_length', c.intermediate_size), ('head_count', c.num_heads),
                     ('head_count_kv', c.num_kv_heads), ('key_length', c.head_dim),
                     ('value_length', c.head_dim), ('rope_dimension_count', c.head_dim),
                     ('rope_freq_base', c.rope_theta), ('layer_norm_rms_eps', c.rms_norm_eps),
                     ('vocab_size', c.vocab_size)):
    getattr(w, f'add_{key}')(value)
  w.add_file_type({'f32': gguf.LlamaFileType.ALL_F32, 'f16': gguf.LlamaFileType.MOSTLY_F16,
                   'q8_0': gguf.LlamaFileType.MOSTLY_Q8_0}[tensor_type])
  if config.logit_scale != 1.0:
    w.add_float32(f'{arch}.logit_scale', config.logit_scale)
  if config.logit_softcap:
    w.add_float32(f'{arch}.final_logit_softcapping', config.logit_softcap)
  if tokenizer is not None:
    _gguf_tokenizer(w, tokenizer)
  return w


def write_gguf(out: str, config: LlamaConfig, params: dict[str, Any],
               tokenizer: Tokenizer | None, tensor_type: str = 'f32') -> None:
  """Writes ``out`` (a ``.gguf`` file) in llama.cpp's layout, 2-D tensors as
  ``tensor_type`` (``GGUF_TYPES``); ``tokenizer`` None writes no tokenizer."""
  import gguf  # pylint: disable=g-import-not-at-top
  if tensor_type not in GGUF_TYPES:
    raise ValueError(f'tensor_type={tensor_type!r}; choose one of {", ".join(GGUF_TYPES)}.')
  permuted = _architecture(config) in weights.PERMUTED_ARCHITECTURES
  w = gguf_writer(out, config, tokenizer, tensor_type)
  if config.rope_freq_factors:
    w.add_tensor('rope_freqs.weight', np.asarray(config.rope_freq_factors, np.float32))
  for name, value in weights.hf_tensors(config, params).items():
    if name in _GGUF_NAMES:
      gname = _GGUF_NAMES[name]
    else:
      parts = name.split('.')  # model.layers.<i>.<module...>.<weight | bias>
      gname = f'blk.{parts[2]}.{_GGUF_BLOCK[".".join(parts[3:-1])]}.{parts[-1]}'
    if permuted and '.attn_q.' in gname:
      value = weights.permute_rope_rows(value, config.num_heads)
    elif permuted and '.attn_k.' in gname:
      value = weights.permute_rope_rows(value, config.num_kv_heads)
    stored = _stored_as(value.shape, tensor_type)
    if stored == 'F16':
      w.add_tensor(gname, value.astype(np.float16))
    elif stored == 'Q8_0':
      qtype = gguf.GGMLQuantizationType.Q8_0
      w.add_tensor(gname, gguf.quants.quantize(value, qtype), raw_dtype=qtype)
    else:
      w.add_tensor(gname, value.astype(np.float32))
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
