"""Where an LM student starts (``student.init``): the teacher's blocks or a pretrained model.

``teacher_layers``: the student's params are the teacher's embedding, norms,
head and chosen blocks, in either layout (unrolled / scanned, both ways); with
every block kept, the student is the teacher (divergence 0 at step 0).
``pretrained``: the params are the file's; a vocabulary of the teacher's family
that differs in size is mapped by token string, any other is one clear error. Config mistakes fail before anything is loaded.
"""

import dataclasses

import jax
import numpy as np
import pytest

from distill_jax import train as train_lib
from distill_jax.llm import export
from distill_jax.llm import student_init
from distill_jax.llm import vocabulary
from distill_jax.llm.model import Llama
from distill_jax.llm.weights import load_gguf
from tests.llm.conftest import TOKENS, random_variables, tiny_config, tiny_tokenizer, write_gguf
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


@pytest.mark.slow  # ~40 s; CI copies chosen blocks (test_teacher_layers_copy_the_chosen_blocks).
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


def test_pretrained_student_with_another_size_and_no_tokenizer_is_refused(teacher, tmp_path):
  other = tiny_config(vocab_size=300)
  path = str(tmp_path / 'other.gguf')
  write_gguf(path, other, random_variables(other), with_tokenizer=False)
  with pytest.raises(ValueError, match=r'no tokenizer in it to map its labels by, and it has '
                     "300 labels, the teacher 263; token-level distillation needs one"):
    train_lib.build(_config(teacher, **{'student.init': 'pretrained',
                                        'student.pretrained': path}))


def test_pretrained_student_of_the_teachers_family_is_mapped_by_token_string(teacher, tmp_path):
  """A student vocabulary padded with 5 tokens the teacher lacks (as Qwen checkpoints
  differ in padded rows): mapped, not refused; the teacher's logits reach the
  student's labels, the extra ones with probability 0."""
  padded = tuple(TOKENS) + tuple(f'[PAD{i}]' for i in range(5))
  student_config = tiny_config(vocab_size=len(padded), num_layers=1)
  path = str(tmp_path / 'padded.gguf')
  export.write_gguf(path, student_config, random_variables(student_config, seed=3)['params'],
                    tiny_tokenizer(padded))
  overrides = {'student.init': 'pretrained', 'student.pretrained': path,
               'student.kwargs.num_layers': 1}
  exp = train_lib.build(_config(teacher, **overrides), jax.devices()[:1])
  assert ("mapped to the teacher's by token string: 268 labels, the teacher 263; 5 student "
          'labels have no teacher label') in exp.description
  _, metrics = one_step(_config(teacher, **overrides), jax.devices()[:1])
  assert np.isfinite(float(metrics['loss'])) and float(metrics['divergence']) > 0
  mapping = vocabulary.one_family_map(tiny_tokenizer(padded), tiny_tokenizer(),
                                      student_vocab=268, teacher_vocab=263)
  np.testing.assert_array_equal(mapping, list(range(263)) + [-1] * 5)
  logits = jax.random.normal(jax.random.key(0), (2, 263))
  on_student = vocabulary.remap_logits(logits, mapping)
  np.testing.assert_allclose(jax.nn.softmax(on_student)[:, :263], jax.nn.softmax(logits),
                             rtol=1e-6)
  np.testing.assert_array_equal(jax.nn.softmax(on_student)[:, 263:], 0.0)


@pytest.mark.parametrize('overrides,match', [
    ({'student.init': 'distilbert'}, "student.init='distilbert'; choose one of random"),
    ({'student.init_layers': (0,)}, 'student.init_layers is for student.init=teacher_layers'),
    ({'student.init': 'pretrained'}, 'student.init=pretrained and student.pretrained'),
    ({'student.init': 'teacher_layers', 'student.init_layers': (0, 9)}, 'out of range: \\[9\\]'),
])
def test_init_config_errors(teacher, overrides, match):
  with pytest.raises(ValueError, match=match):
    train_lib.build(_config(teacher, **overrides))


def test_pretrained_student_with_another_tokenizer_is_refused(teacher, tmp_path):
  """Same size, two token ids swapped: not one vocabulary, refused."""
  swapped = list(TOKENS)
  swapped[10], swapped[11] = swapped[11], swapped[10]
  path = str(tmp_path / 'swapped.gguf')
  export.write_gguf(path, tiny_config(), random_variables(tiny_config())['params'],
                    tiny_tokenizer(tuple(swapped)))
  with pytest.raises(ValueError, match=r"not one family: 2 tokens have other ids .*student\.tokenizer"):
    train_lib.build(_config(teacher, **{'student.init': 'pretrained',
                                        'student.pretrained': path}))


def _dead_teacher(scan=False):
  """A 4-head / 2-KV-group teacher whose KV group 1 and SwiGLU channels 0..31
  are dead (zero values / zero gate and up columns): they contribute nothing."""
  config = dataclasses.replace(tiny_config(num_layers=2), scan_layers=scan)
  params = jax.tree.map(np.array, random_variables(tiny_config(num_layers=2), seed=4)['params'])
  for i in range(2):
    layer = params[f'layers_{i}']
    layer['attn']['v'][:, 1] = 0.0
    layer['mlp']['gate'][:, :32] = 0.0
    layer['mlp']['up'][:, :32] = 0.0
  if scan:
    params = {**{k: v for k, v in params.items() if not k.startswith('layers_')},
              'layers': jax.tree.map(lambda *r: np.stack(r), params['layers_0'],
                                     params['layers_1'])}
  return config, params


@pytest.mark.parametrize('scan', [False, True])
def test_pruning_drops_the_dead_heads_and_channels_and_keeps_the_function(scan):
  config, params = _dead_teacher(scan)
  tokens = np.random.default_rng(0).integers(3, 200, (2, 12))
  teacher = Llama(config)
  logits, state = teacher.apply({'params': params}, tokens, mutable=['intermediates'])
  importance = student_init.width_importance(state['intermediates'], config)
  student_config = dataclasses.replace(config, num_kv_heads=1, num_heads=2,
                                       intermediate_size=32)
  kept = student_init.kept_channels(jax.device_get(importance), config, student_config)
  for layer in kept['layers']:
    np.testing.assert_array_equal(layer['groups'], [0])
    np.testing.assert_array_equal(layer['heads'], [0, 1])
    np.testing.assert_array_equal(layer['mlp'], np.arange(32, 64))
  np.testing.assert_array_equal(kept['embed'], np.arange(config.hidden_size))
  pruned = jax.jit(lambda p: student_init.pruned_params(p, config, kept, student_config))(params)
  np.testing.assert_allclose(Llama(student_config).apply({'params': pruned}, tokens)[0],
                             logits[0], atol=1e-5)


def test_pruned_student_from_the_config(teacher):
  exp, params = _initial_params(_config(teacher, **{
      'student.init': 'pruned', 'student.kwargs.num_layers': 4, 'student.kwargs.hidden_size': 24,
      'student.kwargs.intermediate_size': 40, 'student.kwargs.num_kv_heads': 1,
      'student.calibration_batches': 2}))
  assert 'pruned to width 24, SwiGLU 40, 2 heads / 1 KV heads by activations on 2' in (
      exp.description)
  assert params['layers_3']['attn']['q'].shape == (24, 2, 8)
  assert params['layers_0']['mlp']['down'].shape == (40, 24)
  assert params['embed']['embedding'].shape == (263, 24)
  with pytest.raises(ValueError, match='num_kv_heads=3; the teacher has 2'):
    train_lib.build(_config(teacher, **{'student.init': 'pruned', 'student.kwargs.num_layers': 4,
                                        'student.kwargs.num_kv_heads': 3}))
