r"""Builds an offline teacher-logit cache (``distill_jax.data.logit_cache``).

  python -m distill_jax.tools.cache_teacher_logits \
      --model=<registered models name> --model_kwargs='{"...": ...}' \
      --teacher_workdir=<teacher run workdir> \
      --tokens=<tokens.npy, int [num_sequences, T]> \
      --tokenizer=<tokenizer.json>[,<more files>] --vocab_size=<V> \
      --out=<new directory> [--mode=top_k|sampled] [--k=128] \
      [--temperature=1.0] [--value_dtype=uint16] [--batch_size=8]

The teacher is any model registered in the ``models`` namespace whose
``apply(variables, tokens [B, T])`` returns logits ``[B, T, V]`` (or
``(logits, features)``, DESIGN.md rule 5), built as ``cls(**model_kwargs)``
and loaded from ``--teacher_workdir``'s latest checkpoint
(``checkpoint.load_teacher``); ``--init_seed`` instead initializes it at
random (smoke tests only, recorded as such in the provenance). The tokenizer
files are hashed into the provenance; students training from the cache must
present the same hash and vocabulary size.
"""

import json
from typing import Any, Callable

from absl import app
from absl import flags
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from distill_jax import checkpoint
from distill_jax import registry
from distill_jax.data import logit_cache

FLAGS = flags.FLAGS


def _define_flags():
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
  flags.DEFINE_integer('seed', 0, 'Sampling seed (mode=sampled).')
  flags.mark_flags_as_required(['model', 'tokens', 'tokenizer', 'vocab_size',
                                'out'])


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
    replicated = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
        nn.unbox(boxed))
    variables = checkpoint.load_teacher(teacher_workdir, abstract,
                                        f'{model_name!r} {model_kwargs}')

  def logits_fn(tokens):
    out = model.apply(variables, tokens)
    return out[0] if isinstance(out, tuple) else out

  return logits_fn


def run(*, model: str, model_kwargs: dict[str, Any], tokens: np.ndarray,
        tokenizer_files: list[str], vocab_size: int, out: str,
        spec: logit_cache.CacheSpec, batch_size: int,
        teacher_workdir: str | None = None, init_seed: int | None = None,
        records_per_shard: int = 4096,
        source: str = '') -> dict[str, Any]:
  """Caches ``model``'s sparse targets for ``tokens [num_sequences, T]``; returns the metadata."""
  tokens = np.asarray(tokens)
  if tokens.ndim != 2 or not np.issubdtype(tokens.dtype, np.integer):
    raise ValueError(f'--tokens must hold integer tokens [num_sequences, T]; '
                     f'got {tokens.dtype} {tokens.shape}.')
  logits_fn = teacher_logits_fn(model, model_kwargs,
                                sample_tokens=tokens[:batch_size],
                                teacher_workdir=teacher_workdir,
                                init_seed=init_seed)
  tokenizer = logit_cache.TokenizerInfo(
      vocab_size=vocab_size,
      hash=logit_cache.tokenizer_hash(*tokenizer_files))
  # A smaller last batch compiles the teacher once more.
  batches = (tokens[start:start + batch_size]
             for start in range(0, len(tokens), batch_size))

  provenance = dict(model=model, model_kwargs=model_kwargs,
                    teacher_workdir=teacher_workdir, init_seed=init_seed,
                    tokens=source, tokenizer_files=tokenizer_files)
  return logit_cache.write_cache(out, logits_fn, batches, spec=spec,
                                 tokenizer=tokenizer, provenance=provenance,
                                 records_per_shard=records_per_shard)


def main(argv):
  del argv
  spec = logit_cache.CacheSpec(mode=FLAGS.mode, k=FLAGS.k,
                               temperature=FLAGS.temperature,
                               value_dtype=FLAGS.value_dtype, seed=FLAGS.seed)
  metadata = run(model=FLAGS.model, model_kwargs=json.loads(FLAGS.model_kwargs),
                 tokens=np.load(FLAGS.tokens), tokenizer_files=FLAGS.tokenizer,
                 vocab_size=FLAGS.vocab_size, out=FLAGS.out, spec=spec,
                 batch_size=FLAGS.batch_size,
                 teacher_workdir=FLAGS.teacher_workdir,
                 init_seed=FLAGS.init_seed,
                 records_per_shard=FLAGS.records_per_shard,
                 source=FLAGS.tokens)
  print(json.dumps({k: metadata[k] for k in
                    ('num_sequences', 'num_tokens', 'num_bytes',
                     'bytes_per_token')}))


if __name__ == '__main__':
  _define_flags()
  app.run(main)
