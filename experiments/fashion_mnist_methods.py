"""Fashion-MNIST method table: ResNet-8 teacher -> small CNN student, CPU-sized, real data.

  python -m experiments.fashion_mnist_methods                        # default slice
  python -m experiments.fashion_mnist_methods --methods=ce,kd,crd --seeds=0,1,2 --epochs=4

Trains the teacher once (``configs/fashion_mnist/methods.py:role=teacher``), then
the student with every ``--methods`` entry and ``--seeds`` seed, and writes
``<results_dir>/fashion_mnist_methods.{json,md}`` (last- and best-epoch test
accuracy, mean +- std over seeds; no published numbers exist for this setup).
"""

import os

from absl import app
from absl import flags
from absl import logging

from experiments import method_table

_METHODS = flags.DEFINE_list('methods', ['ce', 'kd', 'dkd', 'dist', 'fitnet', 'at', 'rkd', 'crd'],
                             'Student methods (distill_jax.methods.recipes.METHODS).')
_SEEDS = flags.DEFINE_list('seeds', ['0'], 'Student seeds.')
_EPOCHS = flags.DEFINE_integer('epochs', 1, 'Student epochs.')
_TEACHER_EPOCHS = flags.DEFINE_integer('teacher_epochs', 1, 'Teacher epochs.')
_WORKDIR = flags.DEFINE_string('workdir', 'workdirs/fashion_mnist_methods', 'Root of the runs.')
_RESULTS = flags.DEFINE_string('results_dir', 'experiments/results', 'Where the table goes.')
_FINISHED_ONLY = flags.DEFINE_bool(
    'finished_only', False, 'Train nothing: tabulate the runs in --workdir that have finished '
    '(a cell then has as many seeds as finished).')

CONFIG = os.path.join(os.path.dirname(__file__), '..', 'configs', 'fashion_mnist', 'methods.py')
PAIR = 'resnet8 -> cnn-8-16-32'


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  root = _WORKDIR.value
  teacher_dir = os.path.join(root, f'teacher_e{_TEACHER_EPOCHS.value}')
  os.makedirs(root, exist_ok=True)
  teacher = method_table.train_or_reuse(
      CONFIG, f'role=teacher,epochs={_TEACHER_EPOCHS.value}', teacher_dir)
  cells = {}
  for method in _METHODS.value:
    workdirs = {seed: os.path.join(root, f'{method}_e{_EPOCHS.value}_s{seed}')
                for seed in _SEEDS.value}
    if _FINISHED_ONLY.value:
      workdirs = {seed: w for seed, w in workdirs.items()
                  if os.path.exists(os.path.join(w, 'results.json'))}
      if not workdirs:
        continue
    runs = [method_table.train_or_reuse(
        CONFIG, f'method={method},epochs={_EPOCHS.value},seed={seed},teacher_workdir={teacher_dir}',
        workdir) for seed, workdir in workdirs.items()]
    cells[(PAIR, method)] = method_table.cell(runs)
  notes = [
      f'Fashion-MNIST test set (10,000 images). Teacher ResNet-8 ({_TEACHER_EPOCHS.value} '
      f'epochs): {100 * teacher["eval"]["accuracy"]:.2f}%. Students CNN 8-16-32 (6.5k params), '
      f'{_EPOCHS.value} epochs, batch 128, SGD 0.05 cosine, wd 5e-4, crop 2 px + flip; '
      'loss weights of the CRD paper (T=4), CRD with 4096 other-class negatives. '
      'Single-seed cells have no std; 1-epoch runs are far from converged. Train time = '
      'summed wall time of the cell\'s runs on a shared, loaded 2-core CPU machine.',
      'Reproduce: `python -m experiments.fashion_mnist_methods '
      f'--methods={",".join(_METHODS.value)} --seeds={",".join(_SEEDS.value)} '
      f'--epochs={_EPOCHS.value} --teacher_epochs={_TEACHER_EPOCHS.value}`']
  table = method_table.markdown(cells, published=lambda p, m: None,
                                title='Fashion-MNIST, ResNet-8 -> CNN 8-16-32', notes=notes)
  method_table.write(os.path.join(_RESULTS.value, 'fashion_mnist_methods'), cells, table)
  print('\n' + table)


if __name__ == '__main__':
  app.run(main)
