"""Checkpoints in the layouts other tools write, against an independent forward.

The reference is ``transformers``' own model (``LlamaForCausalLM`` /
``Qwen2ForCausalLM``, eager attention, float32) built from the same Hugging
Face state dict. GGUF files are written with the ``gguf`` package's writer the
way llama.cpp's ``convert_hf_to_gguf.py`` writes them: q/k rows permuted for
``llama`` only (not ``qwen2``), Llama 3.1's RoPE scaling as a ``rope_freqs``
tensor, K-quant tensors as raw blocks; ``transformers``' own GGUF reader loading
the same file confirms the layout. Needs the ``[hf]`` extra (torch, transformers).
"""

import dataclasses
import os

import gguf
import numpy as np
import pytest

from distill_jax.llm import export
from distill_jax.llm import weights
from distill_jax.llm.model import Llama
from tests.llm.conftest import random_variables, tiny_config, to_hf

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')

LLAMA3_SCALING = {'rope_type': 'llama3', 'factor': 8.0, 'low_freq_factor': 1.0,
                  'high_freq_factor': 4.0, 'original_max_position_embeddings': 16}
TOKENS = np.random.default_rng(0).integers(0, 200, (2, 40))


def _hf_config(config, arch, rope_scaling=None):
  cls = {'llama': transformers.LlamaConfig, 'qwen2': transformers.Qwen2Config}[arch]
  kwargs = dict(
      vocab_size=config.vocab_size, hidden_size=config.hidden_size,
      intermediate_size=config.intermediate_size, num_hidden_layers=config.num_layers,
      num_attention_heads=config.num_heads, num_key_value_heads=config.num_kv_heads,
      head_dim=config.head_dim, rms_norm_eps=config.rms_norm_eps,
      tie_word_embeddings=config.tie_embeddings, max_position_embeddings=config.max_seq_len,
      rope_theta=config.rope_theta)
  if rope_scaling:
    kwargs['rope_scaling'] = rope_scaling
  hf = cls(**kwargs)
  hf._attn_implementation = 'eager'
  return hf


def _reference_logits(hf_config, state_dict):
  """transformers' forward of ``state_dict`` (HF names and layout) on TOKENS."""
  cls = {'llama': transformers.LlamaForCausalLM,
         'qwen2': transformers.Qwen2ForCausalLM}[hf_config.model_type]
  model = cls(hf_config).eval()
  missing, unexpected = model.load_state_dict(
      {k: torch.from_numpy(np.array(v, np.float32)) for k, v in state_dict.items()},
      strict=False)
  assert not unexpected and all('lm_head' in k for k in missing), (missing, unexpected)
  with torch.no_grad():
    return model(torch.from_numpy(TOKENS)).logits.numpy()


def _our_logits(path):
  config, variables = weights.load_pretrained(path)
  return config, np.asarray(Llama(config).apply(variables, TOKENS)[0])


def _llama_cpp_permute(w, heads):
  """``convert_hf_to_gguf.LlamaModel.permute``: HF rows -> llama.cpp's order."""
  return (w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:])
          .swapaxes(1, 2).reshape(w.shape))


def _llama_cpp_rope_factors(scaling, head_dim, theta):
  """``convert_hf_to_gguf.LlamaModel.generate_extra_tensors``' rope_freqs."""
  factor, low, high = scaling['factor'], scaling['low_freq_factor'], scaling['high_freq_factor']
  old = scaling['original_max_position_embeddings']
  freqs = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim))
  out = []
  for freq in freqs:
    wavelen = 2 * np.pi / freq
    if wavelen < old / high:
      out.append(1)
    elif wavelen > old / low:
      out.append(factor)
    else:
      smooth = (old / wavelen - low) / (high - low)
      out.append(1 / ((1 - smooth) / factor + smooth))
  return np.asarray(out, np.float32)


GGUF_NAMES = {'model.embed_tokens.weight': 'token_embd.weight',
              'model.norm.weight': 'output_norm.weight', 'lm_head.weight': 'output.weight'}
GGUF_BLOCK = {'self_attn.q_proj': 'attn_q', 'self_attn.k_proj': 'attn_k',
              'self_attn.v_proj': 'attn_v', 'self_attn.o_proj': 'attn_output',
              'mlp.gate_proj': 'ffn_gate', 'mlp.up_proj': 'ffn_up',
              'mlp.down_proj': 'ffn_down', 'input_layernorm': 'attn_norm',
              'post_attention_layernorm': 'ffn_norm'}


def write_upstream_gguf(path, config, state_dict, arch, *, rope_scaling=None, quantize=None):
  """A GGUF as llama.cpp's converter writes it for ``arch`` (``llama``/``qwen2``).

  ``quantize(name, value) -> (raw uint8 blocks, qtype) | None`` replaces a
  tensor by raw quantized blocks.
  """
  # The metadata as our exporter writes it (the tensors below are laid out upstream's way).
  w = export.gguf_writer(path, dataclasses.replace(config, attention_bias=arch == 'qwen2'),
                         None)
  w.add_tokenizer_model('gpt2')
  w.add_token_list([f't{i}' for i in range(config.vocab_size)])
  if rope_scaling:
    w.add_tensor('rope_freqs.weight',
                 _llama_cpp_rope_factors(rope_scaling, config.head_dim, config.rope_theta))
  for name, value in state_dict.items():
    if name in GGUF_NAMES:
      gname = GGUF_NAMES[name]
    else:
      parts = name.split('.')
      gname = f'blk.{parts[2]}.{GGUF_BLOCK[".".join(parts[3:-1])]}.{parts[-1]}'
    if arch == 'llama' and '.attn_q.' in gname:
      value = _llama_cpp_permute(value, config.num_heads)
    elif arch == 'llama' and '.attn_k.' in gname:
      value = _llama_cpp_permute(value, config.num_kv_heads)
    raw = quantize(gname, value) if quantize else None
    if raw is None:
      w.add_tensor(gname, np.ascontiguousarray(value, np.float32))
    else:
      blocks, qtype = raw
      w.add_tensor(gname, blocks, raw_shape=blocks.shape, raw_dtype=qtype)
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()


def _transformers_gguf_logits(path):
  model = transformers.AutoModelForCausalLM.from_pretrained(
      os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32,
      attn_implementation='eager').eval()
  with torch.no_grad():
    return model(torch.from_numpy(TOKENS)).logits.numpy()


CASES = {
    'llama': dict(arch='llama', config=dict(tie_embeddings=False)),
    'qwen2': dict(arch='qwen2', config=dict(attention_bias=True, tie_embeddings=True)),
    'llama3.1': dict(arch='llama', config=dict(tie_embeddings=True), rope_scaling=LLAMA3_SCALING),
}


def _case(name, seed=0):
  case = CASES[name]
  config = tiny_config(vocab_size=200, max_seq_len=64, **case['config'])
  if 'rope_scaling' in case:
    config = dataclasses.replace(config, rope_freq_factors=weights.rope_freq_factors(
        case['rope_scaling'], config.head_dim, config.rope_theta))
  variables = random_variables(config, seed)
  if config.attention_bias:  # random_variables leaves biases at their zero init
    rng = np.random.default_rng(seed)
    variables = {'params': {k: v if not k.startswith('layers_') else {
        **v, 'attn': {n: x + 0.3 * rng.standard_normal(x.shape).astype(np.float32)
                      if n.endswith('_bias') else x for n, x in v['attn'].items()}}
        for k, v in variables['params'].items()}}
  return case, config, to_hf(config, variables)


@pytest.mark.parametrize('name', sorted(CASES))
def test_hf_folder_matches_transformers(name, tmp_path):
  case, config, state_dict = _case(name)
  hf_config = _hf_config(config, case['arch'], case.get('rope_scaling'))
  folder = str(tmp_path / name)
  hf_config.save_pretrained(folder)
  from safetensors.numpy import save_file
  save_file(state_dict, os.path.join(folder, 'model.safetensors'))
  loaded, ours = _our_logits(folder)
  assert loaded.attention_bias == config.attention_bias
  np.testing.assert_allclose(loaded.rope_freq_factors, config.rope_freq_factors, rtol=1e-6)
  np.testing.assert_allclose(ours, _reference_logits(hf_config, state_dict), atol=1e-4)


@pytest.mark.parametrize('name', sorted(CASES))
def test_upstream_gguf_matches_transformers(name, tmp_path):
  case, config, state_dict = _case(name)
  reference = _reference_logits(_hf_config(config, case['arch'], case.get('rope_scaling')),
                                state_dict)
  path = str(tmp_path / f'{name}.gguf')
  write_upstream_gguf(path, config, state_dict, case['arch'],
                      rope_scaling=case.get('rope_scaling'))
  loaded, ours = _our_logits(path)
  np.testing.assert_allclose(loaded.rope_freq_factors, config.rope_freq_factors, rtol=1e-6)
  np.testing.assert_allclose(ours, reference, atol=1e-4)
  if 'rope_scaling' not in case:  # transformers' GGUF reader ignores rope_freqs
    np.testing.assert_allclose(_transformers_gguf_logits(path), reference, atol=1e-4)


def _random_blocks(qtype, shape, rng):
  """Valid random blocks of ``qtype`` for a float tensor ``shape`` ``[out, in]``:
  bytes below 0x3C keep every float16 scale finite and below 1."""
  block, size = gguf.GGML_QUANT_SIZES[qtype]
  rows, cols = shape
  return rng.integers(0, 0x3C, (rows, cols // block * size), dtype=np.uint8)


@pytest.mark.parametrize('qtypes', [('Q4_K', 'Q6_K'), ('Q2_K', 'Q3_K', 'Q5_K')])
def test_k_quant_gguf(qtypes, tmp_path):
  """A Q4_K_M-style file (2-D weights in K-quants, norms F32) loads as
  ``gguf``'s dequantization of its blocks, equal to transformers' forward."""
  config = tiny_config(vocab_size=200, hidden_size=256, intermediate_size=256, num_heads=4,
                       num_kv_heads=2, num_layers=1, tie_embeddings=False)
  rng = np.random.default_rng(0)
  dequantized = {}

  def quantize(gname, value):
    if value.ndim != 2:
      return None
    qtype = gguf.GGMLQuantizationType[qtypes[len(dequantized) % len(qtypes)]]
    blocks = _random_blocks(qtype, value.shape, rng)
    dequantized[gname] = gguf.quants.dequantize(blocks, qtype).reshape(value.shape)
    return blocks, qtype

  state_dict = to_hf(config, random_variables(config))
  path = str(tmp_path / 'k.gguf')
  write_upstream_gguf(path, config, state_dict, 'llama', quantize=quantize)
  # The HF state dict the file holds: gguf's dequantization, q/k rows permuted back.
  inverse = {v: k for k, v in GGUF_NAMES.items()}
  held = dict(state_dict)
  for gname, value in dequantized.items():
    if gname in inverse:
      held[inverse[gname]] = value
      continue
    _, layer, kind, _ = gname.split('.')
    hf_kind = {v: k for k, v in GGUF_BLOCK.items()}[kind]
    heads = {'attn_q': config.num_heads, 'attn_k': config.num_kv_heads}.get(kind)
    if heads:  # invert _llama_cpp_permute
      value = (value.reshape(heads, value.shape[0] // heads // 2, 2, -1)
               .swapaxes(1, 2).reshape(value.shape))
    held[f'model.layers.{layer}.{hf_kind}.weight'] = value
  reference = _reference_logits(_hf_config(config, 'llama'), held)
  _, ours = _our_logits(path)
  assert np.isfinite(reference).all()
  np.testing.assert_allclose(ours, reference, atol=1e-4 * np.abs(reference).max())
  np.testing.assert_allclose(_transformers_gguf_logits(path), reference,
                             atol=1e-4 * np.abs(reference).max())


def test_unsupported_rope_scaling_is_one_clear_error():
  with pytest.raises(ValueError, match=r"RoPE scaling .*yarn.*\(supported: 'llama3', 'linear'\)"):
    weights.rope_freq_factors({'rope_type': 'yarn', 'factor': 4.0}, 8, 1e4, 'x/config.json')
  assert weights.rope_freq_factors({'rope_type': 'linear', 'factor': 2.0}, 8, 1e4) == (2.0,) * 4
  assert weights.rope_freq_factors({'rope_type': 'default'}, 8, 1e4) == ()
