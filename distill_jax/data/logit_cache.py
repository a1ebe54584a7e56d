"""Offline teacher-logit cache: sparse per-token targets in ArrayRecord shards.

Run the teacher over a token data set once, keep ``k`` classes per token, and
distill from the cache instead of the teacher (Gemma-style offline
distillation; the targets feed ``losses.sparse_kl_divergence``).

Two sparsifications (``CacheSpec.mode``), of ``log_softmax(logits / T)``:

* ``'top_k'``: the ``k`` most probable classes and their log-probabilities,
  plus the log of the remaining mass (the tail bucket);
* ``'sampled'``: ``k`` classes drawn from the teacher with replacement, stored
  once each with importance weight ``count / k`` (an unbiased estimate of the
  teacher distribution, Gemma 3 report); the tail is ``-inf``.

Layout of a cache directory::

  logits-00000.array_record ...   one record per sequence
  metadata.json                   provenance, written last (a cache without
                                  it is incomplete)

A record is msgpack (``flax.serialization``) of ``tokens [T]``, ``ids [T,
k]`` (uint16 when ``V <= 65536``, else uint32), ``values [T, k]`` (quantized
log-probabilities, see ``quantize``) and ``tail [T]`` float32. Padding entries
(fewer than ``k`` distinct samples) have log-probability ``-inf``.
``metadata.json`` records the teacher, the tokenizer (vocabulary size and a
hash of its files), the spec, the data source, counts, bytes per token and
versions; ``LogitCache`` refuses a cache made with another tokenizer.
"""

import dataclasses
import datetime
import hashlib
import json
import os
from typing import Any, Callable, Sequence

from array_record.python import array_record_data_source
from array_record.python import array_record_module
from flax import serialization
import jax
import jax.numpy as jnp
import numpy as np

from distill_jax import distributed
from distill_jax.data import array_records
from distill_jax.data import errors
from distill_jax.losses import sparse_targets

FORMAT_VERSION = 1
METADATA = 'metadata.json'
MODES = ('top_k', 'sampled')
# The cached targets of every LM batch read from a cache (CachedExamples).
TARGET_KEYS = ('target_ids', 'target_logprobs', 'tail_logprob')
VALUE_DTYPES = ('uint8', 'uint16', 'float16')
# The end of the errors of a cache that cannot be read.
_REBUILD = ('Rebuild the cache into a new directory with python -m '
            'distill_jax.tools.cache_teacher_logits.')


class TokenizerMismatchError(ValueError):
  """A cache was made with a different tokenizer than the one in use."""


@dataclasses.dataclass(frozen=True)
class TokenizerInfo:
  """What identifies a tokenizer: vocabulary size and a content hash."""
  vocab_size: int
  hash: str


def tokenizer_hash(*paths: str) -> str:
  """``sha256:<hex>`` of the tokenizer files' bytes (e.g. ``tokenizer.json``)."""
  digest = hashlib.sha256()
  for path in paths:
    with open(path, 'rb') as f:
      digest.update(f.read())
  return 'sha256:' + digest.hexdigest()


def tokenizer_info(tokenizer: Any) -> TokenizerInfo:
  """``TokenizerInfo`` of a ``distill_jax.llm.tokenizer.Tokenizer``.

  The hash is ``vocab-sha256:<hex>`` of its token strings in id order
  (added tokens included): what a cached id means. The same vocabulary
  read from a GGUF file or a ``tokenizer.json`` hashes alike.
  """
  vocab = tokenizer.backend.get_vocab(with_added_tokens=True)
  tokens = sorted(vocab, key=vocab.get)
  digest = hashlib.sha256(json.dumps(tokens, ensure_ascii=False).encode())
  return TokenizerInfo(vocab_size=len(tokens),
                       hash='vocab-sha256:' + digest.hexdigest())


@dataclasses.dataclass(frozen=True)
class CacheSpec:
  """How teacher logits are sparsified and stored.

  Attributes:
    mode: ``'top_k'`` or ``'sampled'``.
    k: classes kept per token (64-256 typical).
    temperature: teacher softmax temperature at caching (1 = the model's).
    value_dtype: ``'uint16'`` (default, ~4e-4 nats steps), ``'uint8'`` or
      ``'float16'`` storage of the log-probabilities.
    min_logprob: lower end of the uint quantization range; smaller
      log-probabilities are stored as ``-inf`` (code 0).
    seed: sampling seed (``'sampled'``).
  """
  mode: str = 'top_k'
  k: int = 128
  temperature: float = 1.0
  value_dtype: str = 'uint16'
  min_logprob: float = -24.0
  seed: int = 0

  def __post_init__(self):
    if self.mode not in MODES:
      raise ValueError(f'CacheSpec.mode must be one of {MODES}; got {self.mode!r}.')
    if self.value_dtype not in VALUE_DTYPES:
      raise ValueError(f'CacheSpec.value_dtype must be one of {VALUE_DTYPES}; '
                       f'got {self.value_dtype!r}.')
    if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k <= 0:
      raise ValueError(f'CacheSpec.k must be a positive int; got {self.k!r}.')
    if not self.temperature > 0 or not self.min_logprob < 0:
      raise ValueError('CacheSpec needs temperature > 0 and min_logprob < 0; '
                       f'got {self.temperature}, {self.min_logprob}.')


def sparsify(logits: jax.Array, spec: CacheSpec,
             rng: jax.Array) -> dict[str, jax.Array]:
  """Sparse targets of teacher ``logits [..., V]`` (jittable).

  Returns:
    ``ids`` int32 ``[..., k]``, ``logprobs`` float32 ``[..., k]`` (``-inf``
    for padding) and ``tail`` float32 ``[...]`` (log of the mass outside the
    ids; ``-inf`` in sampled mode).
  """
  log_p = jax.nn.log_softmax(logits.astype(jnp.float32) / spec.temperature)
  if spec.mode == 'top_k':
    if spec.k > log_p.shape[-1]:
      raise ValueError(f'CacheSpec.k={spec.k} exceeds the vocabulary size '
                       f'{log_p.shape[-1]} (top_k mode).')
    logprobs, ids = jax.lax.top_k(log_p, spec.k)
    tail = sparse_targets.log_mass_outside(log_p, ids,
                                           jnp.ones(ids.shape, bool))
    return dict(ids=ids, logprobs=logprobs, tail=tail)
  # Inverse-CDF sampling: O(V + k log V) memory per token (categorical's
  # Gumbel noise would be [k, ..., V]).
  cdf = jnp.cumsum(jnp.exp(log_p), axis=-1)
  u = jax.random.uniform(rng, (*log_p.shape[:-1], spec.k)) * cdf[..., -1:]
  find = jax.vmap(lambda c, x: jnp.searchsorted(c, x, side='right'))
  draws = find(cdf.reshape(-1, cdf.shape[-1]), u.reshape(-1, spec.k))
  draws = jnp.sort(jnp.minimum(draws, cdf.shape[-1] - 1), axis=-1)
  draws = draws.reshape(u.shape)  # [..., k]
  first = jnp.concatenate(
      [jnp.ones_like(draws[..., :1], bool), draws[..., 1:] != draws[..., :-1]],
      axis=-1)
  flat = draws.reshape(-1, spec.k)
  ends = jax.vmap(lambda row: jnp.searchsorted(row, row, side='right'))(flat)
  counts = ends.reshape(draws.shape) - jnp.arange(spec.k)
  # Distinct ids first (stable), padding after.
  order = jnp.argsort(~first, axis=-1, stable=True)
  first = jnp.take_along_axis(first, order, axis=-1)
  ids = jnp.where(first, jnp.take_along_axis(draws, order, axis=-1), 0)
  weights = jnp.take_along_axis(counts, order, axis=-1) / spec.k
  logprobs = jnp.where(first, jnp.log(jnp.where(first, weights, 1.0)), -jnp.inf)
  return dict(ids=ids, logprobs=logprobs,
              tail=jnp.full(log_p.shape[:-1], -jnp.inf))


def _levels(spec: CacheSpec) -> int:
  return int(np.iinfo(np.dtype(spec.value_dtype)).max)


def quantize(logprobs: np.ndarray, spec: CacheSpec) -> np.ndarray:
  """Log-probabilities ``<= 0`` to ``spec.value_dtype``.

  uint formats: code 0 is ``-inf`` (padding, or below ``min_logprob``);
  codes ``1..max`` map linearly onto ``[min_logprob, 0]``. float16: as is.
  """
  logprobs = np.asarray(logprobs, np.float32)
  if spec.value_dtype == 'float16':
    return logprobs.astype(np.float16)
  levels = _levels(spec)
  clipped = np.clip(logprobs, spec.min_logprob, 0.0)
  codes = 1 + np.rint((clipped - spec.min_logprob) / -spec.min_logprob
                      * (levels - 1))
  return np.where(logprobs >= spec.min_logprob, codes, 0).astype(spec.value_dtype)


def dequantize(values: np.ndarray, spec: CacheSpec) -> np.ndarray:
  """Inverse of ``quantize``, float32."""
  if spec.value_dtype == 'float16':
    return values.astype(np.float32)
  levels = _levels(spec)
  scaled = spec.min_logprob + (values.astype(np.float32) - 1) / (levels - 1) * (
      -spec.min_logprob)
  return np.where(values > 0, scaled, -np.inf).astype(np.float32)


def _id_dtype(vocab_size: int) -> np.dtype:
  return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


def write_cache(out_dir: str,
                logits_fn: Callable[[jax.Array], jax.Array],
                batches: Sequence[np.ndarray], *, spec: CacheSpec,
                tokenizer: TokenizerInfo, provenance: dict[str, Any],
                records_per_shard: int = 4096) -> dict[str, Any]:
  """Runs the teacher over ``batches`` and writes the cache to ``out_dir``.

  On several processes (``jax.process_count() > 1``, every one calling this
  with the same arguments) each runs the teacher over its contiguous block of
  the batches (``distributed.share``) and writes its own shards
  (``logits-p<process>-<n>.array_record``); process 0 writes
  ``metadata.json`` once all of them are done. The cache holds the same
  sequences in the same order whatever the process count (batch ``i`` samples
  with ``fold_in(key(spec.seed), i)``).

  Args:
    out_dir: new or empty directory (shared by the processes).
    logits_fn: teacher, ``tokens int32 [B, T] -> logits [B, T, V]``; it is
      jitted together with the sparsification.
    batches: token batches ``[B, T]`` (same ``T`` throughout).
    spec: sparsification and storage.
    tokenizer: the teacher's tokenizer; ``V`` must equal its vocab_size.
    provenance: JSON-able description of the teacher and the data (model
      name, checkpoint, data set, split ...), stored in ``metadata.json``.
    records_per_shard: sequences per ArrayRecord file.

  Returns:
    The metadata written.

  Raises:
    ValueError: the batches hold no sequence (nothing is written), ``out_dir``
      holds a cache already, or the teacher's vocabulary differs from the
      tokenizer's.
  """
  batches = [np.asarray(tokens) for tokens in batches]
  for index, tokens in enumerate(batches):  # On every process, before any waits for the others.
    if tokens.ndim != 2 or not np.issubdtype(tokens.dtype, np.integer):
      raise ValueError(f'write_cache: batches must be integer tokens [B, T]; '
                       f'batch {index} is {tokens.dtype} {tokens.shape}.')
  if not sum(len(tokens) for tokens in batches):
    raise ValueError(f'write_cache: no sequence to cache ({len(batches)} token batches, '
                     '0 sequences): the data, or a limit on it, selected none; nothing '
                     f'was written to {out_dir}.')
  os.makedirs(out_dir, exist_ok=True)
  if os.listdir(out_dir):
    raise ValueError(f'write_cache: {out_dir} is not empty; write a cache into '
                     'a new directory.')
  vocab = jax.eval_shape(logits_fn, jax.ShapeDtypeStruct(batches[0].shape, jnp.int32)).shape[-1]
  if vocab != tokenizer.vocab_size:
    raise ValueError(
        f'write_cache: the teacher outputs {vocab} classes but the tokenizer '
        f'has vocab_size {tokenizer.vocab_size}: they must be the same model family.')
  distributed.barrier('logit cache: out_dir checked')  # Before any process writes.
  process, processes = jax.process_index(), jax.process_count()
  prefix = 'logits-' if processes == 1 else f'logits-p{process:03d}-'
  step = jax.jit(lambda tokens, rng: sparsify(logits_fn(tokens), spec, rng))
  id_dtype = _id_dtype(tokenizer.vocab_size)
  part = dict(shards=[], num_sequences=0, num_tokens=0, payload=0, seq_len=None)
  writer, in_shard = None, 0
  rng = jax.random.key(spec.seed)
  for index in distributed.share(len(batches)):
    tokens = batches[index]
    part['seq_len'] = tokens.shape[1]
    out = jax.device_get(step(jnp.asarray(tokens, jnp.int32), jax.random.fold_in(rng, index)))
    values = quantize(out['logprobs'], spec)
    for row in range(tokens.shape[0]):
      if writer is None or in_shard == records_per_shard:
        if writer is not None:
          writer.close()
        part['shards'].append(f'{prefix}{len(part["shards"]):05d}.array_record')
        writer = array_record_module.ArrayRecordWriter(
            os.path.join(out_dir, part['shards'][-1]), 'group_size:1')
        in_shard = 0
      record = serialization.msgpack_serialize(dict(
          tokens=tokens[row].astype(id_dtype), ids=out['ids'][row].astype(id_dtype),
          values=values[row], tail=out['tail'][row].astype(np.float32)))
      writer.write(record)
      part['payload'] += len(record)
      part['num_sequences'] += 1
      part['num_tokens'] += tokens.shape[1]
      in_shard += 1
  if writer is not None:
    writer.close()
  with open(os.path.join(out_dir, f'part-{process:05d}.json'), 'w') as f:
    json.dump(part, f)
  distributed.barrier('logit cache: parts written')
  metadata = _merge_parts(out_dir, processes, spec=spec, tokenizer=tokenizer,
                          provenance=provenance)
  distributed.barrier('logit cache: metadata written')
  if process == 0:
    for other in range(processes):
      os.remove(os.path.join(out_dir, f'part-{other:05d}.json'))
  return metadata


def _merge_parts(out_dir: str, processes: int, *, spec: CacheSpec, tokenizer: TokenizerInfo,
                 provenance: dict[str, Any]) -> dict[str, Any]:
  """The metadata of the processes' parts, in process order; process 0 writes it."""
  parts = []
  for process in range(processes):
    with open(os.path.join(out_dir, f'part-{process:05d}.json')) as f:
      parts.append(json.load(f))
  shards = [shard for part in parts for shard in part['shards']]
  total = lambda key: sum(part[key] for part in parts)
  num_tokens = total('num_tokens')
  num_bytes = sum(os.path.getsize(os.path.join(out_dir, s)) for s in shards)
  metadata = dict(
      format_version=FORMAT_VERSION,
      tokenizer=dataclasses.asdict(tokenizer),
      spec=dataclasses.asdict(spec),
      provenance={**provenance, 'processes': processes},
      seq_len=next((p['seq_len'] for p in parts if p['seq_len']), None),
      num_sequences=total('num_sequences'), num_tokens=num_tokens,
      shards=shards, num_bytes=num_bytes,
      bytes_per_token=num_bytes / max(num_tokens, 1),
      # Records only, without ArrayRecord's ~0.1 MB per file.
      record_bytes_per_token=total('payload') / max(num_tokens, 1),
      created=datetime.datetime.now(datetime.timezone.utc).isoformat(),
      versions=dict(jax=jax.__version__))
  if jax.process_index() == 0:
    tmp = os.path.join(out_dir, METADATA + '.tmp')
    with open(tmp, 'w') as f:
      json.dump(metadata, f, indent=1)
    os.replace(tmp, os.path.join(out_dir, METADATA))
  return metadata


class LogitCache:
  """Random access to a cache's sequences (a grain ``RandomAccessDataSource``).

  ``cache[i]`` is ``{'tokens': int32 [T], 'target_ids': int32 [T, k],
  'target_logprobs': float32 [T, k], 'tail_logprob': float32 [T]}``;
  ``cache.get(indices)`` stacks them to ``[B, ...]``.
  """

  def __init__(self, path: str, *, tokenizer: TokenizerInfo | None = None):
    """Opens the cache at ``path``.

    Args:
      path: a directory written by ``write_cache``.
      tokenizer: the tokenizer the student trains with; when given, the
        cache's vocabulary size and tokenizer hash must match it.

    Raises:
      FileNotFoundError: no (complete) cache at ``path``, or a shard is missing.
      ValueError: the cache holds no sequence.
      errors.DamagedFileError: ``metadata.json`` or a shard is truncated or
        damaged, or the shards hold another number of sequences than it says.
      TokenizerMismatchError: the cache was made with another tokenizer.
    """
    meta_path = os.path.join(path, METADATA)
    if not os.path.exists(meta_path):
      raise FileNotFoundError(
          f'No teacher-logit cache at {path}: {METADATA} is missing (the '
          'cache was never written or its writer did not finish).')
    with open(meta_path) as f:
      try:
        self.metadata = json.load(f)
      except json.JSONDecodeError as e:
        raise errors.DamagedFileError(
            f'{meta_path} is truncated or damaged (not JSON: {e}). {_REBUILD}') from None
    if self.metadata.get('format_version') != FORMAT_VERSION:
      raise ValueError(
          f'{meta_path}: cache format version {self.metadata.get("format_version")}; this '
          f'distill_jax reads version {FORMAT_VERSION}. {_REBUILD}')
    self.spec = CacheSpec(**self.metadata['spec'])
    self.tokenizer = TokenizerInfo(**self.metadata['tokenizer'])
    if tokenizer is not None and tokenizer != self.tokenizer:
      raise TokenizerMismatchError(
          f'Teacher-logit cache {path} was made with tokenizer vocab_size='
          f'{self.tokenizer.vocab_size}, hash {self.tokenizer.hash}; the '
          f'student uses vocab_size={tokenizer.vocab_size}, hash '
          f'{tokenizer.hash}. Rebuild the cache with the student\'s tokenizer '
          '(python -m distill_jax.tools.cache_teacher_logits).')
    shards = [os.path.join(path, s) for s in self.metadata['shards']]
    if not shards:
      raise ValueError(f'{meta_path}: the teacher-logit cache holds no sequence (its data '
                       f'selected none). {_REBUILD}')
    count = sum(array_records.num_records(shard, _REBUILD) for shard in shards)
    if count != self.metadata['num_sequences']:
      raise errors.DamagedFileError(
          f'Teacher-logit cache {path}: its {len(shards)} shards hold {count} sequences, '
          f'{METADATA} says {self.metadata["num_sequences"]}. {_REBUILD}')
    self._source = array_record_data_source.ArrayRecordDataSource(shards)

  def __len__(self) -> int:
    return len(self._source)

  def _decode(self, record: bytes) -> dict[str, np.ndarray]:
    item = serialization.msgpack_restore(record)
    return {'tokens': item['tokens'].astype(np.int32),
            'target_ids': item['ids'].astype(np.int32),
            'target_logprobs': dequantize(item['values'], self.spec),
            'tail_logprob': item['tail']}

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    return self._decode(self._source[int(index)])

  def get(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    records = self._source.__getitems__([int(i) for i in indices])
    items = [self._decode(r) for r in records]
    return {key: np.stack([item[key] for item in items]) for key in items[0]}


class CachedExamples:
  """A cache's sequences as language-model examples (a ``data.pipeline`` source).

  ``get(indices)`` gives the ``data.text`` example layout (the first
  ``prompt_len`` tokens as the prompt, the rest as the response, no padding)
  plus the cached targets aligned with the student's logits: the teacher's
  targets at position ``i`` of ``tokens [B, T]`` predict token ``i + 1``,
  which is ``text.make_lm_batch``'s ``targets[:, i]``.

  ``get`` returns ``prompt`` int32 ``[B, P]``, ``response`` int32 ``[B, T - P]``
  with all-True masks, ``target_ids`` int32 / ``target_logprobs`` float32
  ``[B, T - 1, k]`` and ``tail_logprob`` float32 ``[B, T - 1]``.
  """

  def __init__(self, cache: LogitCache, *, prompt_len: int = 0):
    self.cache, self.prompt_len = cache, prompt_len
    length = self.sequence_length
    if not 0 <= prompt_len < length:
      raise ValueError(f'prompt_len must be in [0, {length}) for cached sequences of '
                       f'{length} tokens; got {prompt_len}.')

  @property
  def sequence_length(self) -> int:
    """``T``, the tokens of every cached sequence."""
    return self.cache.metadata['seq_len']

  def __len__(self) -> int:
    return len(self.cache)

  def get(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    item = self.cache.get(indices)
    tokens, p = item['tokens'], self.prompt_len
    ones = np.ones(tokens.shape, bool)
    return {'prompt': tokens[:, :p], 'prompt_mask': ones[:, :p],
            'response': tokens[:, p:], 'response_mask': ones[:, p:],
            **{key: item[key][:, :-1] for key in TARGET_KEYS}}
