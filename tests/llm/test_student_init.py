"""Where an LM student starts (``student.init``): the teacher's blocks or a pretrained model.

``teacher_layers``: the student's params are the teacher's embedding, norms,
head and chosen blocks, in either layout (unrolled / scanned, both ways); with
every block kept, the student is the teacher (divergence 0 at step 0).
``pretrained``: the params are the file's; a different vocabulary is one
clear error. Config mistakes fail before anything is loaded.
"""

import jax
import numpy as np
import pytest

from distill_jax import train as train_lib
from distill_jax.llm import student_init
from distill_jax.llm.weights import load_gguf
from tests.llm.conftest import random_variables, tiny_config, write_gguf
from tests.llm.test_run import _config, one_step

TEACHER = tiny_config(num_layers=4)


@pytest.fixture(scope='module')
def teacher(tmp_path_factory):
  path = str(tmp_path_factory.mktemp('teacher') / 'teacher4.gguf')
  write_gguf(path, TEACHER, random_variables(TEACHER, seed=5))
  return path


def _initial_params(config):
  exp = train_lib.build(config, jax.devices()[:1])
  return exp, jax.device_get(exp.compiled.init_fn(jax.random.PRNGKey(0)).params)


def test_evenly_spaced_and_checked_layers():
  assert student_init.evenly_spaced_layers(30, 4) == (0, 10, 19, 29)
  assert student_init.evenly_spaced_layers(4, 1) == (3,)
  with pytest.raises(ValueError, match='5 student blocks from a teacher of 4'):
    student_init.evenly_spaced_layers(4, 5)
  with pytest.raises(ValueError, match=r'0\.\.3 \(the teacher has 4 blocks\); out of range: \[4\]'):
    student_init.check_layers([0, 4], 4)
  with pytest.raises(ValueError, match='distinct'):
    student_init.check_layers([1, 1], 4)


@pytest.mark.parametrize('teacher_scan,student_scan', [(False, False), (True, False),
                                                       (False, True)])
def test_teacher_layers_copy_the_chosen_blocks(teacher, teacher_scan, student_scan):
  _, want = load_gguf(teacher)
  want = want['params']
  exp, params = _initial_params(_config(teacher, **{
      'student.init': 'teacher_layers', 'student.init_layers': (3, 1),
      'teacher.scan_layers': teacher_scan, 'student.kwargs.scan_layers': student_scan}))
  assert 'teacher blocks [3, 1] of 4' in exp.description
  blocks = ([jax.tree.map(lambda x, i=i: x[i], params['layers']) for i in range(2)]
            if student_scan else [params['layers_0'], params['layers_1']])
  for got, source in zip(blocks, (want['layers_3'], want['layers_1'])):
    jax.tree.map(np.testing.assert_array_equal, got, source)
  for key in ('embed', 'final_norm', 'lm_head'):
    jax.tree.map(np.testing.assert_array_equal, params[key], want[key])


def test_all_teacher_layers_make_the_teacher(teacher):
  """Every block kept: the student's first step sees divergence 0 from the teacher."""
  _, metrics = one_step(_config(teacher, **{
      'student.init': 'teacher_layers', 'student.kwargs.num_layers': 4,
      'optim.name': 'sgd'}), jax.devices()[:1])
  assert abs(float(metrics['divergence'])) < 1e-6
  _, random = one_step(_config(teacher, **{'optim.name': 'sgd'}), jax.devices()[:1])
  assert float(random['divergence']) > 1e-3  # a random student is not the teacher


def test_teacher_layers_refuse_other_widths(teacher):
  with pytest.raises(ValueError, match=r'architecture comes from the teacher, but student.kwargs '
                     r'sets hidden_size=48 \(the teacher: 32\); only scan_layers, remat, num_layers'):
    train_lib.build(_config(teacher, **{'student.init': 'teacher_layers',
                                        'student.kwargs.hidden_size': 48}))


def test_pretrained_student_starts_from_the_file(teacher, tmp_path):
  student_config = tiny_config(num_layers=1, hidden_size=16, intermediate_size=32,
                               num_heads=2, num_kv_heads=1)
  path = str(tmp_path / 'student.gguf')
  write_gguf(path, student_config, random_variables(student_config, seed=9))
  _, want = load_gguf(path)
  exp, params = _initial_params(_config(teacher, **{
      'student.init': 'pretrained', 'student.pretrained': path,
      'student.kwargs.hidden_size': 16, 'student.kwargs.num_layers': 1,
      'student.kwargs.intermediate_size': 32, 'student.kwargs.num_heads': 2,
      'student.kwargs.num_kv_heads': 1}))
  assert f'init: {path}' in exp.description
  jax.tree.map(np.testing.assert_array_equal, params, want['params'])
  # The run trains from there.
  _, metrics = one_step(_config(teacher, **{'student.init': 'pretrained',
                                            'student.pretrained': path,
                                            'student.kwargs.hidden_size': 16,
                                            'student.kwargs.num_layers': 1,
                                            'student.kwargs.intermediate_size': 32,
                                            'student.kwargs.num_heads': 2,
                                            'student.kwargs.num_kv_heads': 1}),
                        jax.devices()[:1])
  assert np.isfinite(float(metrics['loss']))


def test_pretrained_student_with_another_vocabulary_is_refused(teacher, tmp_path):
  other = tiny_config(vocab_size=300)
  path = str(tmp_path / 'other.gguf')
  write_gguf(path, other, random_variables(other), with_tokenizer=False)
  with pytest.raises(ValueError, match=r"its vocabulary has 300 tokens, the teacher's 263; "
                     'token-level distillation needs the same tokenizer'):
    train_lib.build(_config(teacher, **{'student.init': 'pretrained',
                                        'student.pretrained': path}))


@pytest.mark.parametrize('overrides,match', [
    ({'student.init': 'distilbert'}, "student.init='distilbert'; choose one of random"),
    ({'student.init_layers': (0,)}, 'student.init_layers is for student.init=teacher_layers'),
    ({'student.init': 'pretrained'}, 'student.init=pretrained and student.pretrained'),
    ({'student.init': 'teacher_layers', 'student.init_layers': (0, 9)}, 'out of range: \\[9\\]'),
])
def test_init_config_errors(teacher, overrides, match):
  with pytest.raises(ValueError, match=match):
    train_lib.build(_config(teacher, **overrides))


def test_pretrained_student_with_another_tokenizer_is_refused(teacher, tmp_path, monkeypatch):
  """Same size, two token ids swapped: the hashes of the vocabularies differ."""
  from tests.llm import conftest
  swapped = list(conftest.TOKENS)
  swapped[10], swapped[11] = swapped[11], swapped[10]
  monkeypatch.setattr(conftest, 'TOKENS', swapped)
  path = str(tmp_path / 'swapped.gguf')
  write_gguf(path, tiny_config(), random_variables(tiny_config()))
  with pytest.raises(ValueError, match="its tokenizer .* is not the teacher's .* both have 263"):
    train_lib.build(_config(teacher, **{'student.init': 'pretrained',
                                        'student.pretrained': path}))
