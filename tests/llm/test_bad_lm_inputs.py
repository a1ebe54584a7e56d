"""Bad language-model inputs: config errors before the workdir exists, a missing
or damaged GGUF named with what is wrong."""

import os

import pytest

from distill_jax import train as train_lib
from distill_jax.llm import weights
from tests.llm.conftest import random_variables, tiny_config, write_gguf
from tests.llm.test_run import _config, _set


@pytest.mark.parametrize('extra, overrides, error, match', [
    ('', {'train.lerning_rate': 1.0}, ValueError, 'Unknown config keys:\n  train.lerning_rate'),
    ('', {'data.name': 'wiki'}, ValueError, 'data.name'),
    ('', {'data.response_len': 100}, ValueError, 'exceed the student context'),
    ('', {'data.held_out': ('hamlet', 'no-such-play')}, ValueError, 'no-such-play'),
    ('', {'train.batch_size': 6}, ValueError, 'not divisible'),
    (',method=kd', {}, ValueError, "'kd' is a classification method but config.task is "
     "'language_model'"),
    (',seqkd_name=x', {}, ValueError, 'data.data_dir and data.seqkd_name'),
    ('', {'data.augment.flip': True}, ValueError,
     "data.augment.flip set, but config.task 'language_model'"),
    ('', {'student.kwargs.num_layerz': 2}, ValueError, 'student.kwargs'),
    ('', {'data.source': 'shakespeare'}, ValueError,
     "data.source \\(renamed: now 'data.name'\\)"),
])
def test_bad_config(teacher_gguf, tmp_path, extra, overrides, error, match):
  config = _config(teacher_gguf, extra)
  with config.unlocked():
    for key, value in overrides.items():
      _set(config, key, value)
  workdir = str(tmp_path / 'run')
  with pytest.raises(error, match=match):
    train_lib.run(config, workdir)
  assert not os.path.exists(workdir)


def test_missing_teacher(tmp_path):
  with pytest.raises(FileNotFoundError, match='no such file'):
    train_lib.run(_config(str(tmp_path / 'none.gguf')), str(tmp_path / 'run'))


@pytest.mark.parametrize('damage', ['truncated', 'foreign', 'version'])
def test_a_damaged_gguf_is_one_error_naming_the_file(tmp_path, damage):
  path = str(tmp_path / 'model.gguf')
  write_gguf(path, tiny_config(), random_variables(tiny_config()))
  if damage == 'truncated':
    with open(path, 'r+b') as f:
      f.truncate(os.path.getsize(path) // 2)
    message = f'{path}: the GGUF file cannot be read, truncated or damaged'
  elif damage == 'version':
    with open(path, 'r+b') as f:
      f.seek(4)
      f.write((99).to_bytes(4, 'little'))
    message = f'{path}: GGUF version 99; the installed gguf package reads versions 2, 3'
  else:
    with open(path, 'r+b') as f:
      f.write(b'PK\x03\x04')
    message = f"{path}: not a GGUF file \\(it starts with b'PK\\\\x03\\\\x04'"
  for read in (weights.load_gguf, weights.pretrained_config):
    with pytest.raises(ValueError, match=message):
      read(path)
