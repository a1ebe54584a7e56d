"""Greedy decoding speed of the SmolLM2 teacher and the students table's architectures.

  python -m benchmarks.decoding_speed [--rounds=5]      # ~5 min on 2 cores, quiet machine

Every LM run's report times decoding once, teacher then student, in the run's
process; on a shared 2-core machine those figures vary by +-20% from run to run
(``experiments/results/smollm2_students.json``). Here the architectures are
timed side by side: ``--rounds`` interleaved rounds, each timing every model at
batch 1 and 16 (``llm.report.decoding_tokens_per_s``: the report's prompts, 32
new tokens, the compiled second call), and the median per model. Speed does not
depend on the weights' values, so the models carry random float32 params of
the real shapes: the teacher (SmolLM2-135M: 30 blocks of 576) and the students
of ``experiments/smollm2_distill.py --table=students`` (7 of its blocks; 30
blocks pruned to 320 / SwiGLU 896 / 1 KV group). Writes
``benchmarks/results/decoding_speed.{json,md}`` with the 1-minute load before
the rounds.
"""

import dataclasses
import json
import os
import statistics

from absl import app
from absl import flags
import flax.linen as nn
import jax
import numpy as np

from distill_jax.llm import report as report_lib
from distill_jax.llm import weights
from distill_jax.llm.model import Llama
from distill_jax.llm.tokenizer import load_tokenizer

flags.DEFINE_integer('rounds', 5, 'Interleaved rounds.')
flags.DEFINE_integer('new_tokens', 32, 'New tokens per sequence.')
flags.DEFINE_string('out', os.path.join(os.path.dirname(__file__), 'results', 'decoding_speed'),
                    'Output path without extension.')
FLAGS = flags.FLAGS

BATCHES = (1, 16)


def architectures(teacher):
  """``{name: LlamaConfig}``: the teacher and the students table's shapes."""
  return {
      'teacher (SmolLM2-135M)': teacher,
      'teacher_layers: 7 of 30 blocks': dataclasses.replace(teacher, num_layers=7),
      'pruned: 30 blocks of 320, SwiGLU 896, 1 KV group': dataclasses.replace(
          teacher, hidden_size=320, intermediate_size=896, num_heads=3, num_kv_heads=1),
  }


def main(argv):
  del argv
  path = weights.resolve_pretrained('smollm2')
  tokenizer = load_tokenizer(path)
  models = {}
  for i, (name, config) in enumerate(architectures(weights.pretrained_config(path)).items()):
    model = Llama(config)
    variables = model.init(jax.random.PRNGKey(i), np.zeros((1, 4), np.int32))
    models[name] = (model, nn.unbox(variables))
  load = os.getloadavg()[0]
  times = {name: {b: [] for b in BATCHES} for name in models}
  for round_ in range(FLAGS.rounds):
    for name, (model, variables) in models.items():
      for batch in BATCHES:
        times[name][batch].append(report_lib.decoding_tokens_per_s(
            model, variables, tokenizer, batch, FLAGS.new_tokens))
    print(f'round {round_ + 1}/{FLAGS.rounds}', flush=True)
  teacher = next(iter(models))
  rows = {name: {'parameters': models[name][0].config.num_params(),
                 **{f'batch_{b}': statistics.median(times[name][b]) for b in BATCHES},
                 'all': {f'batch_{b}': times[name][b] for b in BATCHES}}
          for name in models}
  lines = [f'Greedy tokens/s, median of {FLAGS.rounds} interleaved rounds, '
           f'{FLAGS.new_tokens} new tokens; 1-min load {load:.2f} before the rounds.', '',
           '| model | parameters | batch 1 | batch 16 | vs teacher, batch 1 / 16 |',
           '|---|---|---|---|---|']
  for name, row in rows.items():
    ratio = ' / '.join(f'{row[f"batch_{b}"] / rows[teacher][f"batch_{b}"]:.2f}x'
                       for b in BATCHES)
    lines.append(f'| {name} | {row["parameters"] / 1e6:.1f}M | {row["batch_1"]:.1f} | '
                 f'{row["batch_16"]:.1f} | {ratio} |')
  os.makedirs(os.path.dirname(FLAGS.out), exist_ok=True)
  with open(FLAGS.out + '.json', 'w') as f:
    json.dump({'rows': rows, 'rounds': FLAGS.rounds, 'new_tokens': FLAGS.new_tokens,
               'loadavg_before': load, 'loadavg_after': os.getloadavg()[0]}, f, indent=1)
  with open(FLAGS.out + '.md', 'w') as f:
    f.write('\n'.join(lines) + '\n')
  print('\n'.join(lines))


if __name__ == '__main__':
  app.run(main)
