"""The LLM Quickstart: SmolLM2-135M-Instruct distilled into a student a third its size, on a CPU.

  python -m experiments.smollm2_quickstart        # make demo

Two runs of ``configs/llm/smollm2.py`` (forward KL on Shakespeare windows,
``--steps`` AdamW steps of 8 sequences each), with one student architecture:

* ``distilled``: ``student.init=pruned``, the teacher cut to width
  ``--hidden``, SwiGLU ``--ffn`` and ``--kv_heads`` KV heads (their query
  heads kept) by activation importance on 8 calibration batches, then
  distilled with token-level forward KL;
* ``scratch``: the same architecture from a random init, trained with
  next-token cross-entropy on the same windows for the same steps.

Then the table, teacher | student from scratch | distilled student: parameters,
q8_0 GGUF size, greedy decoding tokens/s on this machine (batch 1 and 16),
held-out perplexity, top-1 agreement with the teacher and KL(teacher ||
student) (each run's ``report.md`` has the rest), the distilled student's
answers beside the teacher's, and the distilled student exported as a Hugging
Face folder and a q8_0 GGUF file (``python -m distill_jax.tools.export``).
Writes ``<results_dir>/smollm2_quickstart.{json,md}``; a rerun reuses
finished runs.
"""

import json
import os
import time

from absl import app
from absl import flags

from distill_jax import config_args
from distill_jax import train
from distill_jax.llm import weights
from distill_jax.tasks import language_model
from distill_jax.tools import export as export_tool

_WORKDIR = flags.DEFINE_string('workdir', 'workdirs/smollm2_quickstart', 'Root of the runs.')
_RESULTS = flags.DEFINE_string('results_dir', 'results', 'Where the table and JSON go.')
_STEPS = flags.DEFINE_integer('steps', 40, 'Training steps per student.')
_HIDDEN = flags.DEFINE_integer('hidden', 320, 'Student width (the teacher: 576).')
_FFN = flags.DEFINE_integer('ffn', 896, 'Student SwiGLU width (the teacher: 1536).')
_KV_HEADS = flags.DEFINE_integer('kv_heads', 1, 'Student KV heads (the teacher: 3).')
_TEACHER = flags.DEFINE_string('teacher', 'smollm2', 'The teacher (a .gguf file, HF folder or '
                               'smollm2).')
_RUNLOCAL = flags.DEFINE_bool('runlocal', False, "The config's runlocal (2 steps, tiny "
                              'windows: for tests, with a tiny --teacher).')

CONFIG = os.path.join(os.path.dirname(__file__), '..', 'configs', 'llm', 'smollm2.py')
COLUMNS = (('teacher', 'teacher SmolLM2-135M-Instruct'), ('scratch', 'student from scratch (CE)'),
           ('distilled', 'student pruned from the teacher, forward KL'))


def _configs():
  """``{'distilled': config, 'scratch': config}``: one architecture, two starts."""
  common = f'steps={_STEPS.value},teacher={_TEACHER.value}' + (
      ',runlocal' if _RUNLOCAL.value else '')
  distilled = config_args.load_config_file(CONFIG, f'method=token_kl,{common}')
  distilled.student.init = 'pruned'
  distilled.student.kwargs.update(hidden_size=_HIDDEN.value, intermediate_size=_FFN.value,
                                  num_kv_heads=_KV_HEADS.value)
  teacher = weights.pretrained_config(weights.resolve_pretrained(distilled.teacher.pretrained))
  architecture, _ = language_model.student_architecture(distilled, teacher)
  scratch = config_args.load_config_file(CONFIG, f'method=token_ce,{common}')
  scratch.student.kwargs.update({
      k: getattr(architecture, k) for k in scratch.student.kwargs.keys()
      if hasattr(architecture, k)})
  for config in (scratch, distilled):
    config.train.report = True
  return {'scratch': scratch, 'distilled': distilled}


def _run(name: str, config) -> dict:
  """The run's results, training it (or reading them when it already finished)."""
  workdir = os.path.join(_WORKDIR.value, name)
  path = os.path.join(workdir, train.RESULTS_FILE)
  if os.path.exists(path):
    with open(path) as f:
      results = json.load(f)
    if results.get('steps') == config.train.num_steps and 'report' in results:
      print(f'{name}: reusing the finished run in {workdir}')
      return results
  return train.run(config, workdir)


def table(results: dict[str, dict]) -> str:
  """The Quickstart's markdown table."""
  reports = {name: results[name]['report']['models'] for name in ('scratch', 'distilled')}
  rows = {'teacher': reports['distilled']['teacher'], 'scratch': reports['scratch']['student'],
          'distilled': reports['distilled']['student']}
  fmt = lambda v, spec: '-' if v is None else format(v, spec)
  lines = ['| | ' + ' | '.join(label for _, label in COLUMNS) + ' |',
           '|---|' + '---|' * len(COLUMNS)]
  figures = (
      ('parameters', lambda r: f'{r["parameters"] / 1e6:.1f}M'),
      ('q8_0 GGUF MiB', lambda r: f'{r["gguf_bytes"]["q8_0"] / 2**20:.0f}'),
      ('greedy tokens/s, batch 1', lambda r: fmt(r['greedy_tokens_per_s']['batch_1'], '.1f')),
      ('greedy tokens/s, batch 16', lambda r: fmt(r['greedy_tokens_per_s']['batch_16'], '.1f')),
      ('held-out perplexity', lambda r: fmt(r['perplexity'], '.1f')),
      ('top-1 agreement with the teacher', lambda r: fmt(r['agreement'], '.3f')),
      ('KL(teacher ‖ student) per token', lambda r: fmt(r['kl'], '.3f')))
  for label, cell in figures:
    lines.append(f'| {label} | ' + ' | '.join(cell(rows[name]) for name, _ in COLUMNS) + ' |')
  report = results['distilled']['report']
  lines.append('')
  for i, prompt in enumerate(report['prompts']):
    lines += [f'**{prompt}**', f'- teacher: {report["answers"]["teacher"][i].strip()!r}',
              f'- distilled student: {report["answers"]["student"][i].strip()!r}', '']
  return '\n'.join(lines)


def main(argv):
  del argv
  start = time.time()
  os.makedirs(_WORKDIR.value, exist_ok=True)
  results = {name: _run(name, config) for name, config in _configs().items()}
  exports = {}
  for fmt, out, kind in (('hf', 'student_hf', 'f32'), ('gguf', 'student_q8_0.gguf', 'q8_0')):
    path = os.path.join(_WORKDIR.value, out)
    if not os.path.exists(path):
      print(export_tool.run(os.path.join(_WORKDIR.value, 'distilled'), fmt, path, kind))
    exports[fmt] = path
  minutes = (time.time() - start) / 60
  markdown = (f'{table(results)}\nCommand: `python -m experiments.smollm2_quickstart '
              f'--steps={_STEPS.value} --hidden={_HIDDEN.value} --ffn={_FFN.value} '
              f'--kv_heads={_KV_HEADS.value}`; {minutes:.1f} minutes; 1-min load '
              f'{os.getloadavg()[0]:.1f} at the end. The distilled student: '
              f'{exports["hf"]} (transformers), {exports["gguf"]} (llama.cpp).')
  os.makedirs(_RESULTS.value, exist_ok=True)
  with open(os.path.join(_RESULTS.value, 'smollm2_quickstart.json'), 'w') as f:
    json.dump({'runs': results, 'exports': exports, 'minutes': minutes,
               'loadavg': os.getloadavg()}, f, indent=2)
  with open(os.path.join(_RESULTS.value, 'smollm2_quickstart.md'), 'w') as f:
    f.write(markdown + '\n')
  print(markdown)


if __name__ == '__main__':
  app.run(main)
