"""experiments/method_table.py and the published numbers of experiments/crd_cifar100.py."""

import json
import os
import subprocess
import sys

import pytest

from distill_jax.methods import recipes
from experiments import crd_cifar100
from experiments import method_table

ROOT = os.path.join(os.path.dirname(__file__), '..', '..')


def _pairs():
  path = os.path.join(ROOT, 'configs', 'cifar100', 'crd.py')
  namespace = {}
  exec(compile(open(path).read(), path, 'exec'), namespace)  # pylint: disable=exec-used
  return namespace['PAIRS']


def test_mean_and_sample_std():
  assert method_table.mean_std([70.0]) == (70.0, 0.0)
  mean, std = method_table.mean_std([70.0, 72.0, 74.0])
  assert mean == pytest.approx(72.0) and std == pytest.approx(2.0)


def test_markdown_has_both_columns_and_the_published_number():
  cells = {('a_b', 'kd'): {'last': (73.0, 0.5), 'best': (73.5, 0.4), 'seeds': 3,
                           'wall_time_s': 120.0}}
  table = method_table.markdown(cells, published=lambda p, m: 73.33, title='t', notes=['n'])
  assert '| a_b | kd | 3 | 73.00 ± 0.50 | 73.50 ± 0.40 | 73.33 | 2.0 min |' in table
  assert 'selected on the test set' in table


def test_published_numbers_name_real_pairs_and_methods():
  pairs = _pairs()
  for pair, method in crd_cifar100.PUBLISHED:
    assert pair in pairs
    assert method == 'teacher' or method in recipes.METHODS
  # Spot checks against the RepDistiller and mdistiller READMEs.
  assert crd_cifar100.PUBLISHED[('resnet32x4_resnet8x4', 'crd')] == 75.51
  assert crd_cifar100.PUBLISHED[('wrn_40_2_wrn_16_2', 'dkd')] == 76.23
  assert ('wrn_40_2_wrn_40_1', 'fsp') not in crd_cifar100.PUBLISHED


@pytest.mark.slow
def test_crd_cifar100_mock_end_to_end(tmp_path):
  """The whole harness on synthetic CIFAR-100 (2-step runs; minutes on CPU)."""
  subprocess.run(
      [sys.executable, '-m', 'experiments.crd_cifar100', '--mock', '--pairs=vgg13_vgg8',
       '--methods=ce,crd', f'--workdir={tmp_path / "runs"}', f'--results_dir={tmp_path}'],
      cwd=ROOT, check=True)
  table = open(tmp_path / 'crd_cifar100_mock.md').read()
  assert '| vgg13_vgg8 | crd | 1 |' in table and '73.94' in table
  cells = json.load(open(tmp_path / 'crd_cifar100_mock.json'))
  assert set(cells) == {'vgg13_vgg8/ce', 'vgg13_vgg8/crd'}
