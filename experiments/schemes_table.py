"""Training schemes side by side on MNIST (real data, CPU-sized), mean +- std over seeds.

Rows: the student (784-800-800-10 MLP) trained alone, offline KD, deep mutual
learning, born-again (3 generations), deep-to-shallow, multi-teacher (3
teachers) and consistent vs. clean-teacher function matching (mixup). Every
student trains ``--epochs``; the teachers (configs/mnist/hinton.py's dropout
MLP, seeds 0 and 1, and a 3-layer version) train ``--teacher_epochs`` once.
Runs are reused from ``--workdir`` when finished (a rerun only trains what
is missing). Writes ``experiments/results/schemes_table.{json,md}``.

    python -m experiments.schemes_table --seeds=0,1,2 --epochs=5 --teacher_epochs=20
"""

import json
import os

from absl import app
from absl import flags
from absl import logging

from experiments import method_table

_SEEDS = flags.DEFINE_list('seeds', ['0', '1', '2'], 'Student seeds.')
_EPOCHS = flags.DEFINE_integer('epochs', 5, 'Epochs of every student run (and generation).')
_TEACHER_EPOCHS = flags.DEFINE_integer('teacher_epochs', 20, 'Epochs of each teacher.')
_WORKDIR = flags.DEFINE_string('workdir', 'workdirs/schemes_table', 'Root of the runs.')
_RESULTS = flags.DEFINE_string('results_dir', 'experiments/results', 'Where the table goes.')

CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'configs')
HINTON = os.path.join(CONFIGS, 'mnist', 'hinton.py')


def _config(name: str) -> str:
  return os.path.join(CONFIGS, 'schemes', f'{name}.py')


def _teachers(root: str, epochs: int) -> dict[str, dict]:
  """The three teachers' results, trained once (the 2-layer MLP, seeds 0 and 1; a 3-layer MLP)."""
  made = {}
  for name, arg in (('mlp_s0', 'role=teacher,model=mlp,seed=0'),
                    ('mlp_s1', 'role=teacher,model=mlp,seed=1'),
                    ('mlp3_s0', 'role=teacher,model=mlp3,seed=0')):
    made[name] = method_table.train_or_reuse(
        _config('multi_teacher'), f'{arg},epochs={epochs}',
        os.path.join(root, f'teacher_{name}_e{epochs}'))
  return made


def _rows(teachers: dict[str, dict], epochs: int) -> list[tuple[str, str, str, str]]:
  """``(row label, config file, config arg, result key)`` per scheme; ``{seed}`` filled later."""
  t0 = teachers['mlp_s0']['workdir']
  all_teachers = '+'.join(t['workdir'] for t in teachers.values())
  common = f'epochs={epochs},seed={{seed}}'
  return [
      ('student alone (ce)', HINTON, f'role=scratch,{common}', 'accuracy'),
      ('offline KD (T=20)', HINTON, f'role=distill,teacher_workdir={t0},{common}', 'accuracy'),
      ('DML, 2 MLP peers: peer 0', _config('dml'), common, 'accuracy'),
      ('DML, 2 MLP peers: ensemble', _config('dml'), common, 'ensemble_accuracy'),
      ('born-again: generation 3', _config('born_again'),
       f'generations=3,first_generation={{scratch}},{common}', 'gen3_accuracy'),
      ('born-again: ensemble of generations 1-3', _config('born_again'),
       f'generations=3,first_generation={{scratch}},{common}', 'ensemble_accuracy'),
      ('deep-to-shallow: deepest exit', _config('deep_to_shallow'), common, 'accuracy'),
      ('deep-to-shallow: hidden-1 exit', _config('deep_to_shallow'), common,
       'exit_hidden1_accuracy'),
      ('multi-teacher (3 teachers, weighted)', _config('multi_teacher'),
       f'teachers={all_teachers},{common}', 'accuracy'),
      ('multi-teacher: the teachers\' ensemble', _config('multi_teacher'),
       f'teachers={all_teachers},{common}', 'teacher_accuracy'),
      ('function matching, mixup: consistent teacher', _config('function_matching'),
       f'teacher_workdir={t0},view=consistent,{common}', 'accuracy'),
      ('function matching, mixup: clean-view teacher', _config('function_matching'),
       f'teacher_workdir={t0},view=clean,{common}', 'accuracy'),
  ]


def _workdir(root: str, config_path: str, arg: str) -> str:
  name = os.path.splitext(os.path.basename(config_path))[0]
  slug = arg.replace(root, '').replace('/', '').replace('=', '-').replace(',', '_')
  return os.path.join(root, f'{name}_{slug}'[:200])


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  root = os.path.abspath(_WORKDIR.value)
  os.makedirs(root, exist_ok=True)
  epochs = _EPOCHS.value
  teachers = _teachers(root, _TEACHER_EPOCHS.value)
  rows = {}
  for label, config_path, arg, key in _rows(teachers, epochs):
    values, wall = [], 0.0
    for seed in _SEEDS.value:
      scratch_arg = f'role=scratch,epochs={epochs},seed={seed}'
      scratch = _workdir(root, HINTON, scratch_arg)
      seed_arg = arg.format(seed=seed, scratch=scratch)
      result = method_table.train_or_reuse(config_path, seed_arg,
                                           _workdir(root, config_path, seed_arg))
      values.append(100 * result['eval'][key])
      wall += result['wall_time_s']
    rows[label] = {'runs': values, 'mean_std': method_table.mean_std(values),
                   'wall_time_s': wall}
    print(f'{label}: {rows[label]["mean_std"]}', flush=True)
  teacher_rows = {name: 100 * t['eval']['accuracy'] for name, t in teachers.items()}
  lines = ['### Training schemes on MNIST (test accuracy, %)', '',
           f'| scheme | test accuracy (%), mean ± std over {len(_SEEDS.value)} seeds | runs |',
           '|---|---:|---|']
  for label, row in rows.items():
    mean, std = row['mean_std']
    lines.append(f'| {label} | {mean:.2f} ± {std:.2f} | '
                 f'{", ".join(f"{v:.2f}" for v in row["runs"])} |')
  lines += ['', f'Teachers ({_TEACHER_EPOCHS.value} epochs): ' + ', '.join(
      f'{name} {acc:.2f}%' for name, acc in teacher_rows.items()) + '. '
      f'Students: 784-800-800-10 MLP, {epochs} epochs, batch 128, SGD 0.05 cosine '
      '(configs/mnist/hinton.py); MNIST test set, 10,000 images, last-epoch accuracy. '
      'Born-again generation 0 is the "student alone" run of the same seed. '
      'Function matching adds 2 px jitter and mixup (alpha 1) to both rows.',
      f'Reproduce: `python -m experiments.schemes_table --seeds={",".join(_SEEDS.value)} '
      f'--epochs={epochs} --teacher_epochs={_TEACHER_EPOCHS.value}`']
  table = '\n'.join(lines) + '\n'
  os.makedirs(_RESULTS.value, exist_ok=True)
  with open(os.path.join(_RESULTS.value, 'schemes_table.json'), 'w') as f:
    json.dump({'rows': rows, 'teachers': teacher_rows, 'epochs': epochs,
               'teacher_epochs': _TEACHER_EPOCHS.value}, f, indent=2)
  with open(os.path.join(_RESULTS.value, 'schemes_table.md'), 'w') as f:
    f.write(table)
  print('\n' + table)


if __name__ == '__main__':
  app.run(main)
