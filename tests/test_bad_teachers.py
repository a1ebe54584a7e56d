"""Bad teachers: unfinished runs, other data, broken outputs, each one clear error;
the student's config.json records the teacher's checkpoint step and SHA-256."""

import json
import math
import os
import shutil

import jax
import numpy as np
import pytest

from distill_jax import checkpoint
from distill_jax import checksums
from distill_jax import train
from distill_jax.teacher_check import TeacherCheckError, TeacherSource, check


@pytest.fixture(scope='module')
def finished_teacher(data_dir, small_config, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('runs') / 'teacher')
  train.run(small_config(data_dir, **{'train.num_steps': 4}), workdir)
  return workdir


@pytest.fixture
def teacher(finished_teacher, tmp_path):
  """A copy of the finished teacher run, free to damage."""
  return shutil.copytree(finished_teacher, str(tmp_path / 'teacher'))


def _kd(small_config, data_dir, teacher, **overrides):
  return small_config(data_dir, **{'method.name': 'kd', 'teacher.workdir': teacher,
                                   'train.num_steps': 2, **overrides})


def _edit_json(path, edit):
  with open(path) as f:
    contents = json.load(f)
  edit(contents)
  with open(path, 'w') as f:
    json.dump(contents, f)


def test_config_records_the_teacher_checkpoint(teacher, small_config, data_dir, tmp_path, capsys):
  workdir = str(tmp_path / 'student')
  train.run(_kd(small_config, data_dir, teacher), workdir)
  recorded = checkpoint.read_config(workdir)['teacher_checkpoints']
  step_folder = os.path.join(teacher, 'checkpoints', '4')
  assert recorded == [{'source': teacher, 'step': 4, 'sha256': checksums.digest(step_folder)}]
  out = capsys.readouterr().out
  assert f'teacher: {step_folder} (step 4, sha256 {recorded[0]["sha256"][:12]})' in out
  assert 'Teacher check on 2 eval batches: teacher_accuracy' in out


def test_an_unfinished_teacher_run_is_refused_unless_allowed(
    teacher, small_config, data_dir, tmp_path, capsys):
  os.remove(os.path.join(teacher, 'results.json'))
  workdir = str(tmp_path / 'student')
  with pytest.raises(ValueError, match=r'config.teacher: the run in .* never finished \(no final '
                     r'eval of its newest checkpoint, step 4, in results.json\).*'
                     r'teacher.allow_unfinished=True'):
    train.run(_kd(small_config, data_dir, teacher), workdir)
  assert not os.path.exists(workdir)
  train.run(_kd(small_config, data_dir, teacher, **{'teacher.allow_unfinished': True}), workdir)
  assert 'is unfinished; using its newest checkpoint (teacher.allow_unfinished=True)' in (
      capsys.readouterr().out)


def test_a_teacher_of_another_data_set_is_refused_unless_allowed(
    teacher, small_config, data_dir, tmp_path, capsys):
  _edit_json(os.path.join(teacher, 'config.json'), lambda c: c['data'].update(name='mnist'))
  workdir = str(tmp_path / 'student')
  with pytest.raises(ValueError, match="trained on data.name='mnist', this run on 'digits'.*"
                                       'teacher.allow_other_data=True'):
    train.run(_kd(small_config, data_dir, teacher), workdir)
  train.run(_kd(small_config, data_dir, teacher, **{'teacher.allow_other_data': True}), workdir)
  assert "trained on 'mnist', not 'digits' (teacher.allow_other_data=True)" in (
      capsys.readouterr().out)


def test_a_teacher_far_below_its_recorded_accuracy_is_refused(
    teacher, small_config, data_dir, tmp_path):
  _edit_json(os.path.join(teacher, 'results.json'), lambda r: r['eval'].update(accuracy=0.99))
  workdir = str(tmp_path / 'student')
  with pytest.raises(TeacherCheckError, match=r'reaches teacher_accuracy 0\.\d+ on the first 2 '
                                              r'eval batches \(360 examples\), below half the '
                                              r'0\.9900 its run recorded'):
    train.run(_kd(small_config, data_dir, teacher), workdir)
  assert not os.path.exists(workdir)  # A new workdir is not left behind.


@pytest.mark.parametrize('summary, message', [
    ({'teacher_accuracy': float('nan')}, r'non-finite outputs on the first 2 eval batches '
                                         r'\(teacher_accuracy=nan\).*teacher.dtype=bfloat16'),
    ({'teacher_nll': float('inf')}, r'teacher_nll=inf'),
    ({'teacher_nll': 9.0}, r'scores 9.000 nats per token .* more than 1 worse than a uniform '
                           r'guess over its 1,000 tokens \(6.908\)'),
])
def test_check_refuses_broken_figures(summary, message):
  sources = [TeacherSource('model.gguf', vocab_size=1000)]
  with pytest.raises(TeacherCheckError, match=message):
    check(summary, sources, 'bfloat16')


def test_check_passes_a_working_teacher():
  sources = [TeacherSource('run', step=4, accuracy=0.9), TeacherSource('lm', vocab_size=1000)]
  check({'teacher_accuracy': 0.8, 'teacher_nll': math.log(1000) + 0.5, 'accuracy': 0.1,
         'examples': 400}, sources, 'float32')


def test_check_compares_accuracy_only_where_chance_cannot_decide():
  sources = [TeacherSource('run', accuracy=0.2)]
  check({'teacher_accuracy': 0.0, 'examples': 32}, sources, 'float32')  # 6.4 expected right
  with pytest.raises(TeacherCheckError, match=r'teacher_accuracy 0.0000 .* \(200 examples\)'):
    check({'teacher_accuracy': 0.0, 'examples': 200}, sources, 'float32')


def test_check_looks_at_each_teacher_of_an_ensemble():
  sources = [TeacherSource('t0', accuracy=0.9), TeacherSource('t1', accuracy=0.9)]
  summary = {'teacher_accuracy': 0.85, 'teacher0_accuracy': 0.9, 'teacher1_accuracy': 0.1,
             'examples': 400}
  with pytest.raises(TeacherCheckError, match=r'The teacher \(t1\) reaches teacher1_accuracy'):
    check(summary, sources, 'float32')


def test_an_extended_teacher_run_is_unfinished(teacher, small_config, data_dir, tmp_path):
  _edit_json(os.path.join(teacher, 'results.json'), lambda r: r.update(steps=2))
  with pytest.raises(ValueError, match='never finished .*newest checkpoint, step 4'):
    train.run(_kd(small_config, data_dir, teacher), str(tmp_path / 'student'))


def test_a_student_of_an_older_version_resumes_and_may_allow(
    teacher, small_config, data_dir, tmp_path):
  workdir = str(tmp_path / 'student')
  train.run(_kd(small_config, data_dir, teacher), workdir)
  _edit_json(os.path.join(workdir, 'config.json'),  # As written before these switches.
             lambda c: [c['teacher'].pop(k) for k in ('allow_unfinished', 'allow_other_data')])
  results = train.run(_kd(small_config, data_dir, teacher, **{
      'train.num_steps': 4, 'teacher.allow_unfinished': True}), workdir)
  assert results['steps'] == 4


def test_a_damaged_gguf_teacher_is_refused(tmp_path):
  from tests.llm.conftest import random_variables, tiny_config, write_gguf
  from tests.llm.test_run import _config
  config = tiny_config()
  path = str(tmp_path / 'tiny.gguf')
  write_gguf(path, config, random_variables(config))
  size = os.path.getsize(path)
  with open(path, 'r+b') as f:  # All-ones bytes are NaN in float32: a damaged tensor block.
    f.seek(size - size // 4)
    f.write(np.full(size // 8, 0xFF, np.uint8).tobytes())
  workdir = str(tmp_path / 'student')
  with pytest.raises(TeacherCheckError, match=f'The teacher \\({path}\\) gives non-finite '
                                              'outputs on the first 2 eval batches'):
    train.run(_config(path), workdir)
  assert not os.path.exists(workdir)


def test_teacher_model_differing_from_its_run(finished_teacher, data_dir, small_config, tmp_path):
  config = small_config(data_dir, **{'method.name': 'kd', 'teacher.workdir': finished_teacher,
                                     'teacher.model': 'mlp'})
  config.teacher.kwargs.hidden_sizes = (16,)
  with pytest.raises(ValueError, match="asks for model 'mlp'.*trained 'mlp'"):
    train.run(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()


def test_teacher_checkpoint_of_another_shape(finished_teacher):
  abstract = {'params': {
      'Dense_0': {'kernel': jax.ShapeDtypeStruct((64, 16), np.float32),
                  'bias': jax.ShapeDtypeStruct((16,), np.float32)},
      'Dense_1': {'kernel': jax.ShapeDtypeStruct((16, 10), np.float32),
                  'bias': jax.ShapeDtypeStruct((10,), np.float32)}}}
  with pytest.raises(ValueError, match='does not fit the teacher model') as error:
    checkpoint.load_teacher(finished_teacher, abstract, "'mlp' {hidden_sizes: (16,)}")
  assert 'checkpoint (' in str(error.value) or 'missing from the checkpoint' in str(error.value)


def test_teacher_workdir_without_checkpoint(tmp_path):
  os.makedirs(tmp_path / 'empty')
  with pytest.raises(FileNotFoundError, match='No teacher checkpoint'):
    checkpoint.load_teacher(str(tmp_path / 'empty'), {'params': {}}, 'x')
