"""Cross-tokenizer distillation: span merging, token_uld / token_gold, the task's checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax import defaults
from distill_jax import methods
from distill_jax import metrics
from distill_jax.losses import cross_vocab
from distill_jax.methods import token_gold
from distill_jax.methods import token_kl
from distill_jax.methods import token_uld
from distill_jax.tasks import language_model


def _logits(seed, shape):
  return 2.0 * jax.random.normal(jax.random.key(seed), shape)


def test_span_rows_take_the_first_row_and_the_realized_rest():
  logits = _logits(0, (1, 4, 5))
  targets = jnp.array([[1, 2, 3, 4]])
  rows, log_scale, valid = cross_vocab.span_rows(logits, targets, jnp.array([[-1, 0, 0, 1]]),
                                                 3, temperature=2.0)
  log_p = jax.nn.log_softmax(logits / 2.0, -1)
  np.testing.assert_allclose(rows[0, :2], logits[0, [1, 3]])
  np.testing.assert_allclose(log_scale[0], [log_p[0, 2, 3], 0.0, 0.0], rtol=1e-6)
  np.testing.assert_array_equal(valid, [[True, True, False]])


def _batch(spans, teacher_spans, targets, teacher_targets):
  return {'targets': jnp.asarray(targets), 'loss_mask': (jnp.asarray(spans) >= 0) * 1.0,
          'span': jnp.asarray(spans), 'teacher_targets': jnp.asarray(teacher_targets),
          'teacher_span': jnp.asarray(teacher_spans)}


def test_uld_on_spans_equals_the_hand_merged_distance():
  # Student: 3 response tokens in 2 spans; teacher: 2 tokens in the same 2 spans.
  s, t = _logits(1, (1, 4, 7)), _logits(2, (1, 3, 11))
  batch = _batch([[-1, 0, 0, 1]], [[-1, 0, 1]], [[0, 3, 5, 6]], [[0, 4, 9]])
  loss, m = token_uld.TokenULD(temperature=1.0).loss((s, {}), (t, {}), batch, {}, 0)
  p_s, p_t = jax.nn.softmax(s[0]), jax.nn.softmax(t[0])
  merged_s = jnp.stack([p_s[1] * p_s[2, 5], p_s[3]])
  merged_t = jnp.stack([p_t[1], p_t[2]])
  sort_pad = lambda p: jnp.pad(-jnp.sort(-p, -1), ((0, 0), (0, 11 - p.shape[-1])))
  want = jnp.abs(sort_pad(merged_s) - sort_pad(merged_t)).sum(-1).mean()
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  assert float(m['spans']) == 2


def test_gold_with_one_vocabulary_and_token_spans_is_forward_kl():
  """Same tokenizer, every label matched, one token per span: KL + 0 * ULD = token_kl."""
  s, t = _logits(3, (2, 5, 9)), _logits(4, (2, 5, 9))
  spans = jnp.array([[-1, 0, 1, 2, 3], [-1, -1, 0, 1, 2]])
  targets = jax.random.randint(jax.random.key(5), (2, 5), 0, 9)
  batch = _batch(spans, spans, targets, targets)
  gold = token_gold.TokenGOLD(matched_student_ids=tuple(range(9)),
                              matched_teacher_ids=tuple(range(9)))
  loss, metrics_ = gold.loss((s, {}), (t, {}), batch, {}, 0)
  kl, _ = token_kl.TokenForwardKL().loss((s, {}), (t, {}), batch, {}, 0)
  np.testing.assert_allclose(loss, kl, rtol=1e-5)
  np.testing.assert_allclose(metrics_['unmatched_uld'], 0.0, atol=1e-7)
  grad_t = jax.grad(lambda t: gold.loss((s, {}), (t, {}), batch, {}, 0)[0])(t)
  np.testing.assert_array_equal(grad_t, 0.0)  # The teacher is not trained.


def test_cross_tokenizer_methods_need_the_aligned_batch():
  s = _logits(6, (1, 3, 5))
  with pytest.raises(ValueError, match='student.tokenizer'):
    token_uld.TokenULD().loss((s, {}), (s, {}), {'targets': jnp.zeros((1, 3), jnp.int32),
                                                 'loss_mask': jnp.ones((1, 3))}, {}, 0)
  with pytest.raises(ValueError, match='pair up'):
    token_gold.TokenGOLD(matched_student_ids=(1, 2), matched_teacher_ids=(1,))
  assert isinstance(methods.from_config(_lm_config('token_gold').method), token_gold.TokenGOLD)


def _lm_config(method, **student):
  config = defaults.default_config('language_model')
  config.method.name = method
  config.student.update(student)
  return config


@pytest.mark.parametrize('method,student,message', [
    ('token_uld', {}, 'set student.tokenizer'),
    ('token_kl', {'tokenizer': 'minilm'}, 'use token_gold or token_uld'),
    ('token_gold', {'tokenizer': 'minilm', 'init': 'pruned'}, 'needs student.init=random'),
])
def test_config_errors_before_anything_is_loaded(method, student, message):
  with pytest.raises(ValueError, match=message):
    language_model.check(_lm_config(method, **student))


def test_eval_summary_counts_each_model_in_its_own_tokens_and_per_character():
  summary = metrics.eval_summary({'count': 10, 'nll': 20.0, 'teacher_count': 5,
                                  'teacher_nll': 5.0, 'chars': 40}, count_name='tokens')
  assert summary['nll'] == 2.0 and summary['teacher_nll'] == 1.0
  np.testing.assert_allclose(summary['bits_per_char'], 20.0 / 40 / np.log(2))
  np.testing.assert_allclose(summary['teacher_bits_per_char'], 5.0 / 40 / np.log(2))
  assert summary['tokens'] == 10


def test_a_pretrained_student_on_its_own_tokenizer_starts_from_its_folder(tmp_path):
  """DeepSeek-R1-Distill's case, an existing model of another family: a Hugging
  Face folder of a Llama on BERT's WordPiece, distilled with token_gold from a
  byte-level BPE teacher. Its params are the folder's and its labels its own."""
  from distill_jax import train as train_lib  # pylint: disable=g-import-not-at-top
  from distill_jax.llm import export  # pylint: disable=g-import-not-at-top
  from distill_jax.llm.tokenizer import load_tokenizer, resolve_tokenizer  # pylint: disable=g-import-not-at-top
  from tests.llm.conftest import random_variables, tiny_config, write_gguf  # pylint: disable=g-import-not-at-top
  from tests.llm.test_run import _config  # pylint: disable=g-import-not-at-top
  wordpiece = load_tokenizer(resolve_tokenizer('minilm'))
  student = tiny_config(vocab_size=wordpiece.vocab_size)  # runlocal's student shape
  folder = str(tmp_path / 'student_hf')
  want = random_variables(student, seed=4)['params']
  export.write_hf_folder(folder, student, want, wordpiece)
  teacher = str(tmp_path / 'teacher.gguf')
  write_gguf(teacher, tiny_config(), random_variables(tiny_config(), seed=1))
  config = _config(teacher, **{'method.name': 'token_gold', 'student.init': 'pretrained',
                               'student.pretrained': folder, 'student.tokenizer': folder})
  exp = train_lib.build(config, jax.devices()[:1])
  assert f'init: {folder}, its own tokenizer {folder} (30,522 tokens' in exp.description
  params = jax.device_get(exp.compiled.init_fn(jax.random.key(0)).params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), params, want)
  results = train_lib.run(config, str(tmp_path / 'run'))
  assert results['steps'] == 2 and results['nonfinite_steps'] == 0
  assert np.isfinite(results['eval']['bits_per_char'])
  small = tiny_config(vocab_size=1000)
  export.write_hf_folder(str(tmp_path / 'small'), small, random_variables(small)['params'],
                         wordpiece)
  config.student.pretrained = str(tmp_path / 'small')
  with pytest.raises(ValueError, match='has 1,000 labels, fewer than the 30,522 tokens'):
    train_lib.build(config, jax.devices()[:1])
