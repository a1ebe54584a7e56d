"""Hinton, Vinyals & Dean (2015) on MNIST: teacher, student from scratch, distilled student.

  python -m experiments.hinton_mnist              # shortened (a few minutes on 2 CPU cores)
  python -m experiments.hinton_mnist --full       # the full-length run

Trains the three runs of ``configs/mnist/hinton.py`` in ``--workdir`` (a rerun
reuses finished runs of the same config and resumes interrupted ones), then writes ``results/hinton_mnist_<mode>.json``,
a markdown table with the paper's numbers beside ours (``.md``, also printed)
and a plot of the three test-error curves (``.png``).
"""

import json
import os

from absl import app
from absl import flags
from absl import logging

from distill_jax import config_args
from distill_jax import metrics
from distill_jax import train

_FULL = flags.DEFINE_bool('full', False, 'Train for --full_epochs instead of --quick_epochs.')
_QUICK_EPOCHS = flags.DEFINE_integer('quick_epochs', 10, 'Epochs per run in the shortened run.')
_FULL_EPOCHS = flags.DEFINE_integer('full_epochs', 60, 'Epochs per run in the full run.')
_WORKDIR = flags.DEFINE_string('workdir', 'workdirs/hinton_mnist', 'Root of the three runs.')
_RESULTS = flags.DEFINE_string('results_dir', 'results', 'Where the table, JSON and plot go.')

CONFIG = os.path.join(os.path.dirname(__file__), '..', 'configs', 'mnist', 'hinton.py')
PAPER_ERRORS = {'teacher': 67, 'scratch': 146, 'distill': 74}
LABELS = {
    'teacher': 'teacher 784-1200-1200-10, dropout + 2px jitter',
    'scratch': 'student 784-800-800-10 from scratch',
    'distill': 'student 784-800-800-10 distilled (T=20, alpha=0.5)',
}


def _run_all(root: str, epochs: int) -> dict[str, dict]:
  """Trains (or resumes) the three runs; returns each run's results."""
  os.makedirs(root, exist_ok=True)
  results = {}
  teacher_dir = os.path.join(root, 'teacher')
  for role in ('teacher', 'scratch', 'distill'):
    arg = f'role={role},epochs={epochs}'
    if role != 'teacher':
      arg += f',teacher_workdir={teacher_dir}'
    print(f'=== {role}: {LABELS[role]}', flush=True)
    results[role] = _finished_or_run(config_args.load_config_file(CONFIG, arg),
                                     os.path.join(root, role))
  return results


def _finished_or_run(config, workdir: str) -> dict:
  """The results of a finished run of exactly this config in ``workdir``, else ``train.run``."""
  results_path = os.path.join(workdir, train.RESULTS_FILE)
  if os.path.exists(results_path):
    with open(os.path.join(workdir, 'config.json')) as f:
      if json.load(f) == json.loads(config.to_json_best_effort()):
        print(f'Reusing the finished run in {workdir}.', flush=True)
        with open(results_path) as f:
          return json.load(f)
  return train.run(config, workdir)


def _table(results: dict[str, dict], epochs: int) -> str:
  rows = ['| run | paper: test errors | ours: test errors | ours: accuracy | '
          'top-1 agreement with teacher | wall time |',
          '|---|---:|---:|---:|---:|---:|']
  for role, result in results.items():
    test = result['eval']
    agreement = f'{test["agreement"]:.4f}' if 'agreement' in test else '-'
    rows.append(f'| {LABELS[role]} | {PAPER_ERRORS[role]} | {test["errors"]} | '
                f'{test["accuracy"]:.4f} | {agreement} | {result["wall_time_s"]:.0f} s |')
  return (f'MNIST test set (10,000 images), {epochs} epochs per run.\n\n' +
          '\n'.join(rows) + '\n')


def _plot(results: dict[str, dict], path: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for role, result in results.items():
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
  epochs = _FULL_EPOCHS.value if _FULL.value else _QUICK_EPOCHS.value
  results = _run_all(os.path.join(_WORKDIR.value, mode), epochs)
  os.makedirs(_RESULTS.value, exist_ok=True)
  stem = os.path.join(_RESULTS.value, f'hinton_mnist_{mode}')
  table = _table(results, epochs)
  with open(stem + '.json', 'w') as f:
    json.dump(results, f, indent=2)
  with open(stem + '.md', 'w') as f:
    f.write(table)
  _plot(results, stem + '.png')
  print('\n' + table + f'\nWritten: {stem}.json, {stem}.md, {stem}.png')


if __name__ == '__main__':
  app.run(main)
