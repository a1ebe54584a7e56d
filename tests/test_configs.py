"""Every config in configs/ runs for 2 steps (``runlocal``) on 8 simulated devices.

Language-model configs (``configs/llm/``) run through the same loop with a
tiny random GGUF teacher (``{teacher}`` in their SMOKE_TEST_ARGS).
"""

import glob
import json
import os

import pytest

from distill_jax import config_args
from distill_jax.data import testing
from distill_jax import train

CONFIG_DIR = os.path.join(os.path.dirname(__file__), '..', 'configs')
CONFIG_FILES = sorted(glob.glob(os.path.join(CONFIG_DIR, '**', '*.py'), recursive=True))


def _module_attribute(path, name):
  return getattr(config_args.load_config_module(path), name, None)


def test_there_are_configs():
  assert CONFIG_FILES


@pytest.mark.parametrize('path', CONFIG_FILES, ids=lambda p: os.path.relpath(p, CONFIG_DIR))
def test_config_runs_locally(path, data_dir, tmp_path):
  smoke_args = _module_attribute(path, 'SMOKE_TEST_ARGS')
  assert smoke_args, f'{path} must define SMOKE_TEST_ARGS (the runlocal runs to smoke-test).'
  if os.path.relpath(path, CONFIG_DIR).startswith('llm' + os.sep):
    _run_lm_config(path, smoke_args, tmp_path)
    return
  # Data sets with no offline source (CIFAR) are written as synthetic tfds data.
  for tfds_name, splits in (_module_attribute(path, 'FAKE_DATA') or {}).items():
    testing.write_fake_tfds_data(tfds_name, str(tmp_path / 'fake_data'), splits)
    data_dir = str(tmp_path / 'fake_data')
  workdirs = {}
  for i, arg in enumerate(smoke_args):
    config = config_args.load_config_file(path, arg.format(**workdirs) + ',runlocal')
    config.data.data_dir = data_dir
    workdir = str(tmp_path / f'run{i}')
    train.run(config, workdir)
    workdirs[f'run{i}'] = workdir
    results = json.load(open(os.path.join(workdir, 'results.json')))
    assert results['steps'] == 2
    assert results['eval']['examples'] > 0


@pytest.mark.slow
@pytest.mark.parametrize('path', [p for p in CONFIG_FILES
                                  if _module_attribute(p, 'SLOW_SMOKE_TEST_ARGS')],
                         ids=lambda p: os.path.relpath(p, CONFIG_DIR))
def test_config_runs_locally_slow_args(path, tmp_path):
  """The language-model smoke args CI covers in other tests."""
  _run_lm_config(path, _module_attribute(path, 'SLOW_SMOKE_TEST_ARGS'), tmp_path)


def _run_lm_config(path, smoke_args, tmp_path):
  from tests.llm.conftest import random_variables, tiny_config, write_gguf  # pylint: disable=g-import-not-at-top
  teacher = str(tmp_path / 'teacher.gguf')
  write_gguf(teacher, tiny_config(), random_variables(tiny_config()))
  for i, arg in enumerate(smoke_args):
    config = config_args.load_config_file(path, arg.format(teacher=teacher) + ',runlocal')
    results = train.run(config, str(tmp_path / f'run{i}'))
    assert results['steps'] == 2
    assert results['eval']['tokens'] > 0
