"""The CRD paper's CIFAR-100 table (Tian et al. 2020, Tables 1-2; DKD from Zhao et al. 2022).

  python -m experiments.crd_cifar100 --pairs=resnet32x4_resnet8x4 --methods=ce,kd,crd --seeds=0,1,2
  python -m experiments.crd_cifar100 --mock      # the whole harness on synthetic CIFAR-100, 2 steps a run

The real table needs CIFAR-100 prepared by tfds in ``--data_dir`` (no offline
copy exists here) and an accelerator: 240 epochs per run. The mock's table is
written into its workdir, never beside the results: its numbers are not results.

Trains each pair's teacher once (``configs/cifar100/crd.py:role=teacher``), then
every pair x method x seed student, and writes ``<results_dir>/crd_cifar100.{json,md}``:
mean +- std over seeds of the last- and best-epoch test accuracy (best epoch is
selected on the test data, flagged) beside the published numbers.
"""

import os
import tempfile

from absl import app
from absl import flags
from absl import logging

from distill_jax.data import testing
from experiments import method_table

_PAIRS = flags.DEFINE_list('pairs', ['resnet32x4_resnet8x4'], 'Pairs (configs/cifar100/crd.py PAIRS).')
_METHODS = flags.DEFINE_list('methods', ['ce', 'kd', 'crd'], 'Methods (recipes.METHODS).')
_SEEDS = flags.DEFINE_list('seeds', ['0'], 'Student seeds.')
_EPOCHS = flags.DEFINE_integer('epochs', 240, 'Epochs of the main schedule.')
_DATA_DIR = flags.DEFINE_string('data_dir', '', 'tfds data_dir holding cifar100.')
_MOCK = flags.DEFINE_bool('mock', False, 'Synthetic CIFAR-100 and runlocal (2-step) runs.')
_WORKDIR = flags.DEFINE_string('workdir', 'workdirs/crd_cifar100', 'Root of the runs.')
_RESULTS = flags.DEFINE_string('results_dir', '', 'Where the table goes (default: '
                               'experiments/results; with --mock: <workdir>/mock).')

CONFIG = os.path.join(os.path.dirname(__file__), '..', 'configs', 'cifar100', 'crd.py')
# Published top-1 (%), checked against the sources on 2026-11-29:
#  - teacher, ce (student alone), kd, fitnet ... nst, crd: RepDistiller README
#    (github.com/HobbitLong/RepDistiller, "Benchmark Results on CIFAR-100"; the
#    CRD paper's Tables 1-2, mean of runs). FSP is n/a where channel counts differ
#    (README: 0.00 for wrn_40_2 -> wrn_40_1, no FSP row for the cross-architecture pairs).
#  - dkd: mdistiller README (github.com/megvii-research/mdistiller, the DKD paper's
#    table); its last column is labelled "ResNet32x4 / MobileNet-V2" but its KD entry
#    (74.45) is the resnet32x4 -> ShuffleNetV2 number, so it is filed under that pair.
#  - crd_kd (CRD+KD) is in the CRD paper but not in either README: left out (unverified).
_COLUMNS = ('wrn_40_2_wrn_16_2', 'wrn_40_2_wrn_40_1', 'resnet56_resnet20', 'resnet110_resnet20',
            'resnet110_resnet32', 'resnet32x4_resnet8x4', 'vgg13_vgg8', 'vgg13_mobilenetv2',
            'resnet50_mobilenetv2', 'resnet50_vgg8', 'resnet32x4_shufflenetv1',
            'resnet32x4_shufflenetv2', 'wrn_40_2_shufflenetv1')
_ROWS = {
    'teacher': (75.61, 75.61, 72.34, 74.31, 74.31, 79.42, 74.64, 74.64, 79.34, 79.34, 79.42, 79.42, 75.61),
    'ce': (73.26, 71.98, 69.06, 69.06, 71.14, 72.50, 70.36, 64.60, 64.60, 70.36, 70.50, 71.82, 70.50),
    'kd': (74.92, 73.54, 70.66, 70.67, 73.08, 73.33, 72.98, 67.37, 67.35, 73.81, 74.07, 74.45, 74.83),
    'fitnet': (73.58, 72.24, 69.21, 68.99, 71.06, 73.50, 71.02, 64.14, 63.16, 70.69, 73.59, 73.54, 73.73),
    'at': (74.08, 72.77, 70.55, 70.22, 72.31, 73.44, 71.43, 59.40, 58.58, 71.84, 71.73, 72.73, 73.32),
    'sp': (73.83, 72.43, 69.67, 70.04, 72.69, 72.94, 72.68, 66.30, 68.08, 73.34, 73.48, 74.56, 74.52),
    'cc': (73.56, 72.21, 69.63, 69.48, 71.48, 72.97, 70.71, 64.86, 65.43, 70.25, 71.14, 71.29, 71.38),
    'vid': (74.11, 73.30, 70.38, 70.16, 72.61, 73.09, 71.23, 65.56, 67.57, 70.30, 73.38, 73.40, 73.61),
    'rkd': (73.35, 72.22, 69.61, 69.25, 71.82, 71.90, 71.48, 64.52, 64.43, 71.50, 72.28, 73.21, 72.21),
    'pkt': (74.54, 73.45, 70.34, 70.25, 72.61, 73.64, 72.88, 67.13, 66.52, 73.01, 74.10, 74.69, 73.89),
    'ab': (72.50, 72.38, 69.47, 69.53, 70.98, 73.17, 70.94, 66.06, 67.20, 70.65, 73.55, 74.31, 73.34),
    'ft': (73.25, 71.59, 69.84, 70.22, 72.37, 72.86, 70.58, 61.78, 60.99, 70.29, 71.75, 72.50, 72.03),
    'fsp': (72.91, None, 69.95, 70.11, 71.89, 72.62, 70.23, None, None, None, None, None, None),
    'nst': (73.68, 72.24, 69.60, 69.53, 71.96, 73.30, 71.53, 58.16, 64.96, 71.28, 74.12, 74.68, 74.89),
    'crd': (75.48, 74.14, 71.16, 71.46, 73.48, 75.51, 73.94, 69.73, 69.11, 74.30, 75.11, 75.65, 76.05),
    'dkd': (76.23, 74.81, 71.97, None, 74.11, 76.32, 74.68, 69.71, 70.35, None, 76.45, 77.07, 76.70),
}
PUBLISHED = {(pair, method): row[i] for method, row in _ROWS.items()
             for i, pair in enumerate(_COLUMNS) if row[i] is not None}


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  data_dir, extra, root = _DATA_DIR.value, f',epochs={_EPOCHS.value}', _WORKDIR.value
  if _MOCK.value:
    data_dir = tempfile.mkdtemp(prefix='mock_cifar100_')
    testing.write_fake_tfds_data('cifar100', data_dir, {'train': 64, 'test': 32})
    extra, root = ',runlocal', os.path.join(root, 'mock')
  os.makedirs(root, exist_ok=True)
  cells = {}
  for pair in _PAIRS.value:
    teacher_dir = os.path.join(root, pair.split('_')[0] + f'_teacher_{pair}')
    method_table.train_or_reuse(CONFIG, f'pair={pair},role=teacher{extra}', teacher_dir, data_dir)
    for method in _METHODS.value:
      runs = [method_table.train_or_reuse(
          CONFIG, f'pair={pair},method={method},seed={seed},teacher_workdir={teacher_dir}{extra}',
          os.path.join(root, f'{pair}_{method}_s{seed}'), data_dir) for seed in _SEEDS.value]
      cells[(pair, method)] = method_table.cell(runs)
  notes = ['Mock data (synthetic CIFAR-100, 2 steps a run): the numbers only show the harness '
           'works.' if _MOCK.value else f'CIFAR-100 test set, {_EPOCHS.value} epochs.',
           'Published: RepDistiller README = CRD paper Tables 1-2 (ce = student trained alone), '
           'mdistiller README = DKD paper for dkd; - = not published there (crd_kd, DIST).']
  table = method_table.markdown(cells, published=lambda p, m: PUBLISHED.get((p, m)),
                                title='CIFAR-100 (CRD paper pairs)', notes=notes)
  name = 'crd_cifar100_mock' if _MOCK.value else 'crd_cifar100'
  results_dir = _RESULTS.value or (root if _MOCK.value else 'experiments/results')
  method_table.write(os.path.join(results_dir, name), cells, table)
  print('\n' + table)


if __name__ == '__main__':
  app.run(main)
