"""Large-vocabulary KL from hidden states: naive vs optax vs chunked-fused.

  python -m benchmarks.large_vocab [--vocab=32768,131072,262144]
      [--dtypes=float32,bfloat16] [--rows=4096] [--hidden=256] [--repeats=1]
      [--max_run_gb=12]

For every (V, dtype) it compiles, for each method, the forward+backward of the
mean forward KL (T = 2) w.r.t. the student's hidden states and head, and
records XLA's ``compiled.memory_analysis()`` temp bytes (deterministic; every
configuration, since compiling needs no memory for the arrays). It then times
the configurations whose arguments + temp bytes fit in ``--max_run_gb``
(best of ``--repeats`` calls of the ahead-of-time compiled step) and reports:

* ``time_ratio``: fwd+bwd time / the naive method's in the same run;
* ``logit_gbps``: ``2 * N * V * 4`` bytes (both models' fp32 logits, the data
  the divergence reduces over) per second of fwd+bwd;
* ``stream_fraction``: that rate / the rate of a plain streaming reduction
  (``jnp.sum``) over the same number of fp32 bytes, measured in the same run
  (the machine's memory-bandwidth limit).

Methods: ``naive`` (``losses.kl_divergence(h_s @ W_s, h_t @ W_t)``),
``optax`` (``optax.kl_divergence_with_log_targets`` on ``log_softmax`` of the
tempered logits), ``fused`` (``losses.fused_linear_kl``, XLA chunk path).
The Pallas path runs in interpret mode on CPU (correctness only) and is not
timed here. Results go to ``benchmarks/results/large_vocab.json``; the table
printed at the end is the one in ``benchmarks/README.md``.
"""

import json
import os
import platform
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
import optax

from distill_jax import losses

FLAGS = flags.FLAGS
flags.DEFINE_list('vocab', ['32768', '131072', '262144'], 'Vocabulary sizes V.')
flags.DEFINE_list('dtypes', ['float32', 'bfloat16'], 'Input dtypes.')
flags.DEFINE_integer('rows', 4096, 'Rows N (tokens).')
flags.DEFINE_integer('hidden', 256, 'Hidden size D of both models.')
flags.DEFINE_integer('chunk_size', 256, 'Rows per chunk of the fused method.')
flags.DEFINE_integer('repeats', 1, 'Timed calls per configuration (best is kept).')
flags.DEFINE_float('max_run_gb', 12.0,
                   'Time only configurations whose args + temp bytes fit.')
flags.DEFINE_string('out', 'benchmarks/results/large_vocab.json', 'Output JSON.')

TEMPERATURE = 2.0


def _naive(h_s, w_s, h_t, w_t):
  return losses.kl_divergence(h_s @ w_s, h_t @ w_t,
                              temperature=TEMPERATURE).mean()


def _optax(h_s, w_s, h_t, w_t):
  log_p_s = jax.nn.log_softmax((h_s @ w_s).astype(jnp.float32) / TEMPERATURE)
  log_p_t = jax.nn.log_softmax(
      jax.lax.stop_gradient(h_t @ w_t).astype(jnp.float32) / TEMPERATURE)
  kl = optax.losses.kl_divergence_with_log_targets(log_p_s, log_p_t)
  return TEMPERATURE**2 * kl.mean()


def _fused(h_s, w_s, h_t, w_t):
  return losses.fused_linear_kl(h_s, w_s, h_t, w_t, temperature=TEMPERATURE,
                                chunk_size=FLAGS.chunk_size,
                                implementation='xla').mean()


METHODS = {'naive': _naive, 'optax': _optax, 'fused': _fused}


def _inputs(rows, hidden, vocab, dtype, abstract):
  shapes = [(rows, hidden), (hidden, vocab), (rows, hidden), (hidden, vocab)]
  if abstract:
    return [jax.ShapeDtypeStruct(s, dtype) for s in shapes]
  keys = jax.random.split(jax.random.key(0), 4)
  scale = [1.0, hidden**-0.5, 1.0, hidden**-0.5]
  return [(jax.random.normal(k, s) * c).astype(dtype)
          for k, s, c in zip(keys, shapes, scale)]


def _best_time(fn, args, repeats):
  """Best of ``repeats`` calls of an already compiled ``fn``."""
  best = np.inf
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    best = min(best, time.perf_counter() - start)
  return best


def _stream_seconds(num_bytes, repeats):
  """Best time of ``jnp.sum`` over ``num_bytes`` of float32."""
  x = jnp.ones((num_bytes // 4,), jnp.float32)
  seconds = _best_time(jax.jit(jnp.sum), (x,), repeats)
  del x
  return seconds


def main(argv):
  del argv
  rows, hidden = FLAGS.rows, FLAGS.hidden
  results = []
  for vocab in map(int, FLAGS.vocab):
    logit_bytes = 2 * rows * vocab * 4
    stream = None
    for dtype_name in FLAGS.dtypes:
      dtype = jnp.dtype(dtype_name)
      abstract = _inputs(rows, hidden, vocab, dtype, abstract=True)
      arg_bytes = sum(int(np.prod(a.shape)) * dtype.itemsize for a in abstract)
      compiled = {}
      for name, fn in METHODS.items():
        step = jax.jit(jax.value_and_grad(fn, argnums=(0, 1)))
        compiled[name] = step.lower(*abstract).compile()
      concrete = None
      for name in METHODS:
        temp = compiled[name].memory_analysis().temp_size_in_bytes
        row = dict(method=name, vocab=vocab, dtype=dtype_name, rows=rows,
                   hidden=hidden, temp_bytes=int(temp), seconds=None,
                   skipped=None)
        if (arg_bytes + temp) / 2**30 > FLAGS.max_run_gb:
          row['skipped'] = (f'args + temp = {(arg_bytes + temp) / 2**30:.1f} '
                            f'GiB > --max_run_gb={FLAGS.max_run_gb}')
        else:
          if concrete is None:
            concrete = _inputs(rows, hidden, vocab, dtype, abstract=False)
          row['seconds'] = _best_time(compiled[name], concrete, FLAGS.repeats)
          if stream is None and logit_bytes / 2**30 <= FLAGS.max_run_gb:
            stream = _stream_seconds(logit_bytes, FLAGS.repeats)
        results.append(row)
        print(json.dumps(row), flush=True)
      del concrete
      naive = next(r for r in results if r['method'] == 'naive'
                   and r['vocab'] == vocab and r['dtype'] == dtype_name)
      for r in results:
        if r['vocab'] != vocab or r['dtype'] != dtype_name:
          continue
        r['temp_ratio'] = r['temp_bytes'] / naive['temp_bytes']
        if r['seconds'] is not None:
          r['time_ratio'] = (r['seconds'] / naive['seconds']
                             if naive['seconds'] else None)
          r['logit_gbps'] = logit_bytes / r['seconds'] / 1e9
          if stream is not None:
            r['stream_gbps'] = logit_bytes / stream / 1e9
            r['stream_fraction'] = r['logit_gbps'] / r['stream_gbps']
  os.makedirs(os.path.dirname(FLAGS.out), exist_ok=True)
  machine = dict(platform=platform.platform(), cpus=os.cpu_count(),
                 backend=jax.default_backend(), jax=jax.__version__,
                 devices=[str(d) for d in jax.devices()])
  with open(FLAGS.out, 'w') as f:
    json.dump(dict(machine=machine, temperature=TEMPERATURE,
                   chunk_size=FLAGS.chunk_size, results=results), f, indent=1)
  print(_table(results))


def _fmt(value, spec):
  return '-' if value is None else format(value, spec)


def _table(results):
  lines = ['| V | dtype | method | temp MiB | temp / naive | fwd+bwd s | '
           'time / naive | logit GB/s | % of streaming |',
           '|---|---|---|---|---|---|---|---|---|']
  for r in results:
    lines.append(
        f'| {r["vocab"]} | {r["dtype"]} | {r["method"]} | '
        f'{r["temp_bytes"] / 2**20:.0f} | {r["temp_ratio"]:.3f} | '
        f'{_fmt(r["seconds"], ".2f")} | {_fmt(r.get("time_ratio"), ".2f")} | '
        f'{_fmt(r.get("logit_gbps"), ".2f")} | '
        f'{_fmt(r.get("stream_fraction") and 100 * r["stream_fraction"], ".0f")} |')
  return '\n'.join(lines)


if __name__ == '__main__':
  app.run(main)
