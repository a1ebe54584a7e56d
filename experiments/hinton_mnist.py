"""Hinton, Vinyals & Dean (2015) on MNIST: teacher, student from scratch, distilled student.

  python -m experiments.hinton_mnist              # shortened (minutes on 2 CPU cores, seed 0)
  python -m experiments.hinton_mnist --full       # the paper's recipe, 3 seeds (hours)

Trains the three runs of ``configs/mnist/hinton.py`` per seed in ``--workdir``
(each distilled student learns from its own seed's teacher), then writes
``results/hinton_mnist_<mode>.json``, a markdown table of mean +- std test
errors over the seeds beside the paper's numbers and this project's targets
(``.md``, also printed) and a plot of the test-error curves (``.png``). A
rerun reuses finished runs of the same config and resumes interrupted ones, so
a long schedule can be completed over several invocations.
"""

import json
import os
import sys
import time

from absl import app
from absl import flags
from absl import logging

from distill_jax import config_args
from distill_jax import metrics
from distill_jax import train
from experiments import method_table

_FULL = flags.DEFINE_bool('full', False, 'The full-length recipe instead of the shortened one.')
_QUICK_EPOCHS = flags.DEFINE_integer('quick_epochs', 10, 'Epochs per run in the shortened run.')
_FULL_EPOCHS = flags.DEFINE_integer('full_epochs', 60, 'Student epochs in the full run.')
_FULL_TEACHER_EPOCHS = flags.DEFINE_integer('full_teacher_epochs', 200,
                                            'Teacher epochs in the full run.')
_SEEDS = flags.DEFINE_list('seeds', None, 'Seeds (default: 0 shortened, 0,1,2 full).')
_MAX_NORM = flags.DEFINE_float('teacher_max_norm', 3.5, "The teacher's max-norm (0 = off).")
_WORKDIR = flags.DEFINE_string('workdir', 'workdirs/hinton_mnist', 'Root of the runs.')
_RESULTS = flags.DEFINE_string('results_dir', 'results', 'Where the table, JSON and plot go.')

CONFIG = os.path.join(os.path.dirname(__file__), '..', 'configs', 'mnist', 'hinton.py')
ROLES = ('teacher', 'scratch', 'distill')
PAPER_ERRORS = {'teacher': 67, 'scratch': 146, 'distill': 74}
# What a faithful reproduction should reach on 2 CPU cores (mean over 3 seeds).
TARGETS = {'teacher': '<= 75', 'scratch': '~146', 'distill': '<= 85'}
LABELS = {
    'teacher': 'teacher 784-1200-1200-10, dropout + max-norm + 2px jitter',
    'scratch': 'student 784-800-800-10 from scratch',
    'distill': 'student 784-800-800-10 distilled (T=20, alpha=0.5)',
}


def _run_all(root: str, seeds: list[int], epochs: dict[str, int]) -> dict[str, list[dict]]:
  """Trains (or resumes) the three runs of every seed; ``{role: [results per seed]}``."""
  os.makedirs(root, exist_ok=True)
  results = {role: [] for role in ROLES}
  for seed in seeds:
    teacher_dir = os.path.join(root, f'teacher_s{seed}')
    for role in ROLES:
      arg = f'role={role},epochs={epochs[role]},seed={seed}'
      if role == 'teacher':
        arg += f',max_norm={_MAX_NORM.value}'
      else:
        arg += f',teacher_workdir={teacher_dir}'
      print(f'=== {role}, seed {seed}: {LABELS[role]}, {epochs[role]} epochs', flush=True)
      results[role].append(_finished_or_run(config_args.load_config_file(CONFIG, arg),
                                            os.path.join(root, f'{role}_s{seed}')))
  return results


def _finished_or_run(config, workdir: str) -> dict:
  """The results of a finished run of exactly this config in ``workdir``, else ``train.run``."""
  results_path = os.path.join(workdir, train.RESULTS_FILE)
  if os.path.exists(results_path):
    with open(os.path.join(workdir, 'config.json')) as f:
      saved = json.load(f)
    saved.pop('teacher_checkpoints', None)  # Recorded by the run, not part of its config.
    with open(results_path) as f:
      results = json.load(f)
    if 'eval' in results and saved == json.loads(config.to_json_best_effort()):
      print(f'Reusing the finished run in {workdir}.', flush=True)
      return results
  return train.run(config, workdir)


def _table(results: dict[str, list[dict]], epochs: dict[str, int], seeds: list[int],
           load: float) -> str:
  rows = ['| run | epochs | paper: test errors | target | ours: test errors '
          f'({"mean ± std, " * (len(seeds) > 1)}{len(seeds)} seed{"s" * (len(seeds) > 1)}) | '
          'per seed | '
          'top-1 agreement with teacher | wall time |',
          '|---|---:|---:|---:|---:|---:|---:|---:|']
  for role, runs in results.items():
    errors = [r['eval']['errors'] for r in runs]
    mean, std = method_table.mean_std(errors)
    agreements = [r['eval']['agreement'] for r in runs if 'agreement' in r['eval']]
    agreement = f'{method_table.mean_std(agreements)[0]:.4f}' if agreements else '-'
    wall = sum(r['wall_time_s'] for r in runs)
    rows.append(f'| {LABELS[role]} | {epochs[role]} | {PAPER_ERRORS[role]} | {TARGETS[role]} | '
                f'{f"{mean:.1f} ± {std:.1f}" if len(errors) > 1 else errors[0]} | '
                f'{", ".join(map(str, errors))} | {agreement} | '
                f'{wall / 60:.1f} min |')
  recipe = ('Recipe (configs/mnist/hinton.py): batch 128, SGD 0.05 momentum 0.9, cosine '
            'decay; teacher dropout 0.2 (input) / 0.5 (hidden), max-norm '
            f'{_MAX_NORM.value:g} per unit, '
            'inputs jittered by up to 2 px; students without regularisation; distillation '
            '0.5 CE + 0.5 T^2 KL at T=20 from the same seed\'s teacher.')
  command = ' '.join(['python -m experiments.hinton_mnist', *sys.argv[1:]])
  return (f'MNIST test set (10,000 images); seeds {", ".join(map(str, seeds))}.\n\n' +
          '\n'.join(rows) + f'\n\n{recipe}\nCommand: `{command}`; measured on '
          f'{time.strftime("%Y-%m-%d")}, 1-min load before the runs {load:.1f} (2 CPU cores).\n')


def _plot(results: dict[str, list[dict]], path: str) -> None:
  """The test-error curves of each role's first seed."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for role, runs in results.items():
    result = runs[0]
    rows = [r for r in metrics.read_metrics(result['workdir']) if 'eval/errors' in r]
    epochs_per_step = _epochs(result) / result['steps']
    ax.plot([r['step'] * epochs_per_step for r in rows],
            [r['eval/errors'] for r in rows], marker='o', label=LABELS[role])
    ax.axhline(PAPER_ERRORS[role], linestyle=':', color=ax.lines[-1].get_color())
  ax.set_xlabel('epoch')
  ax.set_ylabel('MNIST test errors (of 10,000)')
  ax.set_yscale('log')
  ax.set_title('Hinton et al. 2015, MNIST (dotted: paper)')
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def _epochs(result: dict) -> float:
  with open(os.path.join(result['workdir'], 'config.json')) as f:
    return json.load(f)['train']['num_epochs']


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # Progress is printed; keep library INFO logs quiet.
  mode = 'full' if _FULL.value else 'quick'
  seeds = [int(s) for s in (_SEEDS.value or (['0', '1', '2'] if _FULL.value else ['0']))]
  if _FULL.value:
    epochs = {'teacher': _FULL_TEACHER_EPOCHS.value, 'scratch': _FULL_EPOCHS.value,
              'distill': _FULL_EPOCHS.value}
  else:
    epochs = dict.fromkeys(ROLES, _QUICK_EPOCHS.value)
  load = os.getloadavg()[0]
  results = _run_all(os.path.join(_WORKDIR.value, mode), seeds, epochs)
  os.makedirs(_RESULTS.value, exist_ok=True)
  stem = os.path.join(_RESULTS.value, f'hinton_mnist_{mode}')
  table = _table(results, epochs, seeds, load)
  with open(stem + '.json', 'w') as f:
    json.dump(results, f, indent=2)
  with open(stem + '.md', 'w') as f:
    f.write(table)
  _plot(results, stem + '.png')
  print('\n' + table + f'\nWritten: {stem}.json, {stem}.md, {stem}.png')


if __name__ == '__main__':
  app.run(main)
