"""Large-vocabulary KL from hidden states: naive vs optax vs chunked-fused.

  nice python -m benchmarks.large_vocab [--vocab=32768,131072,262144]
      [--dtypes=float32,bfloat16] [--rows=4096] [--hidden=256] [--rounds=3]
      [--max_run_gb=12]

For every (V, dtype) it compiles, for each method, the forward+backward of the
mean forward KL (T = 2) w.r.t. the student's hidden states and head, and
records XLA's ``compiled.memory_analysis()`` temp bytes (deterministic; every
configuration, since compiling needs no memory for the arrays). It then times
the configurations whose arguments + temp bytes fit in ``--max_run_gb``,
**interleaved**: ``--rounds`` rounds of (naive, optax, fused, streaming
reference, matmul reference), one call each, median per method, so that a load change on a
shared machine hits all methods alike. It reports:

* ``time_ratio``: median fwd+bwd time / the naive method's median, and
  ``round_ratios``: the same ratio within each round (its spread shows how
  much the load moved);
* ``logit_gbps``: ``2 * N * V * 4`` bytes (both models' fp32 logits, the data
  the divergence reduces over) per second of fwd+bwd;
* ``stream_gbps``: the streaming reference, a jitted reduction that reads
  the same ``2 * N * V * 4`` bytes (a buffer of at most ``--stream_gb``,
  read repeatedly), i.e. the machine's memory-bandwidth limit;
* ``stream_fraction``: ``logit_gbps / stream_gbps``;
* ``matmul GFLOP/s``: ``8 N D V`` flops (the 4 ``[N, D] x [D, V]`` matmuls
  every method does: two forward, two for the student's gradients) per
  second of fwd+bwd, and its fraction of ``peak_gflops``, a float32 ``2048^3``
  matmul timed in the same rounds. On a CPU the step is bound by these
  matmuls (``D`` multiply-adds per logit), not by memory bandwidth.

Methods: ``naive`` (``losses.kl_divergence(h_s @ W_s, h_t @ W_t)``),
``optax`` (``optax.kl_divergence_with_log_targets`` on ``log_softmax`` of the
tempered logits), ``fused`` (``losses.fused_linear_kl``, XLA chunk path).
The Pallas path runs in interpret mode on CPU (correctness only) and is not
timed here. Results go to ``benchmarks/results/large_vocab.json`` (rewritten
after every (V, dtype)); the table printed at the end is the one in
``benchmarks/README.md``.
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
flags.DEFINE_integer('rounds', 3, 'Interleaved timing rounds (median is kept).')
flags.DEFINE_float('max_run_gb', 12.0,
                   'Time only configurations whose args + temp bytes fit.')
flags.DEFINE_float('stream_gb', 1.0,
                   'Buffer size of the streaming reference (read repeatedly).')
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


def _seconds(fn, args):
  """Wall time of one call of an already compiled ``fn``."""
  start = time.perf_counter()
  jax.block_until_ready(fn(*args))
  return time.perf_counter() - start


def _stream(num_bytes, buffer_gb):
  """A compiled reduction reading ``num_bytes`` of float32, and its argument.

  The buffer (at most ``buffer_gb``, far beyond the caches) is read
  ``num_bytes / buffer`` times; ``maximum(x, i)`` keeps XLA from hoisting
  the loop-invariant sum out of the loop.
  """
  size = min(num_bytes, int(buffer_gb * 2**30)) // 4
  passes = max(1, round(num_bytes / (4 * size)))

  def reduce(x):
    body = lambda i, acc: acc + jnp.sum(jnp.maximum(x, i.astype(x.dtype)))
    return jax.lax.fori_loop(0, passes, body, jnp.zeros((), x.dtype))

  x = jnp.ones((size,), jnp.float32)
  return jax.jit(reduce).lower(x).compile(), x, passes * size * 4


def _matmul():
  """A compiled float32 ``2048^3`` matmul, its arguments and its flops."""
  x = jnp.ones((2048, 2048), jnp.float32)
  return jax.jit(jnp.dot).lower(x, x).compile(), (x, x), 2 * 2048**3


def _measure(vocab, dtype_name, rows, hidden):
  """Rows of the results table for one (V, dtype): temp bytes and timings."""
  dtype = jnp.dtype(dtype_name)
  abstract = _inputs(rows, hidden, vocab, dtype, abstract=True)
  arg_bytes = sum(int(np.prod(a.shape)) * dtype.itemsize for a in abstract)
  logit_bytes = 2 * rows * vocab * 4
  out, timed = {}, {}
  for name, fn in METHODS.items():
    step = jax.jit(jax.value_and_grad(fn, argnums=(0, 1)))
    compiled = step.lower(*abstract).compile()
    temp = compiled.memory_analysis().temp_size_in_bytes
    out[name] = dict(method=name, vocab=vocab, dtype=dtype_name, rows=rows,
                     hidden=hidden, temp_bytes=int(temp), seconds=None,
                     skipped=None, logit_bytes=logit_bytes)
    if (arg_bytes + temp) / 2**30 > FLAGS.max_run_gb:
      out[name]['skipped'] = (
          f'args + temp = {(arg_bytes + temp) / 2**30:.1f} GiB > '
          f'--max_run_gb={FLAGS.max_run_gb}')
    else:
      timed[name] = compiled
  naive_temp = out['naive']['temp_bytes']
  for r in out.values():
    r['temp_ratio'] = r['temp_bytes'] / naive_temp
  if not timed:
    return list(out.values())
  args = _inputs(rows, hidden, vocab, dtype, abstract=False)
  stream_fn, stream_x, stream_bytes = _stream(logit_bytes, FLAGS.stream_gb)
  matmul_fn, matmul_args, matmul_flops = _matmul()
  samples = {name: [] for name in (*timed, 'stream', 'matmul')}
  for _ in range(FLAGS.rounds):
    for name, fn in timed.items():
      samples[name].append(_seconds(fn, args))
    samples['stream'].append(_seconds(stream_fn, (stream_x,)))
    samples['matmul'].append(_seconds(matmul_fn, matmul_args))
  stream_gbps = stream_bytes / float(np.median(samples['stream'])) / 1e9
  peak_gflops = matmul_flops / float(np.median(samples['matmul'])) / 1e9
  for name in timed:
    r = out[name]
    r['samples'] = samples[name]
    r['seconds'] = float(np.median(samples[name]))
    r['logit_gbps'] = logit_bytes / r['seconds'] / 1e9
    r['stream_gbps'] = stream_gbps
    r['stream_fraction'] = r['logit_gbps'] / stream_gbps
    r['matmul_gflops'] = 8 * rows * hidden * vocab / r['seconds'] / 1e9
    r['peak_gflops'] = peak_gflops
    if 'naive' in timed:
      r['time_ratio'] = r['seconds'] / float(np.median(samples['naive']))
      r['round_ratios'] = [a / b for a, b in zip(samples[name],
                                                  samples['naive'])]
  return list(out.values())


def main(argv):
  del argv
  machine = dict(platform=platform.platform(), cpus=os.cpu_count(),
                 backend=jax.default_backend(), jax=jax.__version__,
                 devices=[str(d) for d in jax.devices()])
  results = []
  os.makedirs(os.path.dirname(FLAGS.out), exist_ok=True)
  for vocab in map(int, FLAGS.vocab):
    for dtype_name in FLAGS.dtypes:
      start = time.time()
      rows = _measure(vocab, dtype_name, FLAGS.rows, FLAGS.hidden)
      for row in rows:
        print(json.dumps(row), flush=True)
      results += rows
      load = os.getloadavg()
      print(f'V={vocab} {dtype_name}: {time.time() - start:.0f} s, load '
            f'average {load[0]:.2f}', flush=True)
      with open(FLAGS.out, 'w') as f:
        json.dump(dict(machine=machine, temperature=TEMPERATURE,
                       chunk_size=FLAGS.chunk_size, rounds=FLAGS.rounds,
                       results=results), f, indent=1)
  print(_table(results))


def _fmt(value, spec):
  return '-' if value is None else format(value, spec)


def _spread(ratios):
  return '-' if not ratios else f'{min(ratios):.2f}-{max(ratios):.2f}'


def _table(results):
  lines = ['| V | dtype | method | temp MiB | temp / naive | fwd+bwd s (median) '
           '| time / naive | per-round time / naive | logit GB/s | streaming '
           'GB/s | % of streaming | matmul GFLOP/s | % of matmul peak |',
           '|---|---|---|---|---|---|---|---|---|---|---|---|---|']
  for r in results:
    fraction = r.get('stream_fraction')
    lines.append(
        f'| {r["vocab"]} | {r["dtype"]} | {r["method"]} | '
        f'{r["temp_bytes"] / 2**20:.0f} | {r["temp_ratio"]:.3f} | '
        f'{_fmt(r["seconds"], ".2f")} | {_fmt(r.get("time_ratio"), ".2f")} | '
        f'{_spread(r.get("round_ratios"))} | '
        f'{_fmt(r.get("logit_gbps"), ".2f")} | '
        f'{_fmt(r.get("stream_gbps"), ".1f")} | '
        f'{_fmt(fraction and 100 * fraction, ".1f")} | '
        f'{_fmt(r.get("matmul_gflops"), ".0f")} | '
        f'{_fmt(r.get("peak_gflops") and 100 * r["matmul_gflops"] / r["peak_gflops"], ".0f")} |')
  return '\n'.join(lines)


if __name__ == '__main__':
  app.run(main)
