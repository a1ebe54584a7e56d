"""Token-level methods: registration, invariants, masking, vocabulary errors; the LM loop."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from distill_jax import losses
from distill_jax import methods
from distill_jax.llm import seqkd
from distill_jax.llm import train as lm_train
from distill_jax.llm.model import Llama
from distill_jax.llm.sampling import SamplingParams
from distill_jax.methods.token_skew_kl import skew_kl
from tests.llm.conftest import tiny_config

NAMES = ['token_kl', 'token_reverse_kl', 'token_jsd', 'token_tv', 'token_skew_kl',
         'token_hidden']


def _outputs(seed, vocab=11, width=6):
  k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
  logits = jax.random.normal(k1, (2, 5, vocab)) * 2
  return logits, {'hidden_0': jax.random.normal(k2, (2, 5, width))}


def _batch():
  mask = jnp.asarray([[0, 0, 1, 1, 1], [0, 1, 1, 0, 0]], jnp.float32)
  return {'targets': jnp.zeros((2, 5), jnp.int32), 'loss_mask': mask}


@pytest.mark.parametrize('name', NAMES)
def test_zero_when_student_equals_teacher(name):
  method = methods.from_config(ml_collections.ConfigDict({'name': name}))
  out = _outputs(0)
  aux = method.init_aux(jax.random.PRNGKey(0), out[1], out[1])
  loss, metrics = method.loss(out, out, _batch(), aux, 0)
  assert abs(float(metrics['divergence'])) < 1e-5
  if name != 'token_hidden':
    assert abs(float(loss)) < 1e-5


def test_masked_mean_ignores_masked_tokens():
  method = methods.from_config(ml_collections.ConfigDict({'name': 'token_kl', 'temperature': 2.0}))
  s, t = _outputs(0), _outputs(1)
  batch = _batch()
  loss = method.loss(s, t, batch, {}, 0)[0]
  per_token = losses.kl_divergence(s[0], t[0], temperature=2.0)
  mask = batch['loss_mask']
  np.testing.assert_allclose(loss, jnp.sum(per_token * mask) / mask.sum(), rtol=1e-6)
  garbage = t[0].at[0, 0].set(100.0)  # a masked position
  np.testing.assert_allclose(method.loss(s, (garbage, t[1]), batch, {}, 0)[0], loss, rtol=1e-6)


def test_skew_kl_limits():
  s, t = _outputs(0)[0], _outputs(1)[0]
  np.testing.assert_allclose(skew_kl(s, t, lam=0.0, temperature=1.0, reverse=False),
                             losses.kl_divergence(s, t), rtol=1e-5)
  np.testing.assert_allclose(skew_kl(s, t, lam=0.0, temperature=1.0, reverse=True),
                             losses.reverse_kl(s, t), rtol=1e-5)
  assert (skew_kl(s, t, lam=0.1, temperature=1.0, reverse=False)
          < losses.kl_divergence(s, t)).all()
  grad = jax.grad(lambda t: skew_kl(s, t, lam=0.1, temperature=1.0, reverse=True).sum())(t)
  assert float(jnp.abs(grad).max()) == 0.0  # the teacher is never differentiated


def test_hidden_projection_when_widths_differ():
  method = methods.from_config(ml_collections.ConfigDict(
      {'name': 'token_hidden', 'student_layers': (0,), 'teacher_layers': (0,)}))
  s, t = _outputs(0, width=4), _outputs(1, width=6)
  aux = method.init_aux(jax.random.PRNGKey(0), s[1], t[1])
  assert aux['proj_0'].shape == (4, 6)
  grads = jax.grad(lambda a: method.loss(s, t, _batch(), a, 0)[0])(aux)
  assert float(jnp.abs(grads['proj_0']).sum()) > 0


def test_different_vocabularies_are_an_error():
  method = methods.from_config(ml_collections.ConfigDict({'name': 'token_jsd'}))
  with pytest.raises(ValueError, match='student has 11 tokens and the teacher 13'):
    method.loss(_outputs(0, vocab=11), _outputs(0, vocab=13), _batch(), {}, 0)


def test_make_lm_batch_alignment():
  batch = lm_train.make_lm_batch(np.asarray([[0, 5, 6]]), np.asarray([[False, True, True]]),
                                 np.asarray([[7, 8, 0]]), np.asarray([[True, True, False]]))
  assert batch['inputs'].tolist() == [[0, 5, 6, 7, 8]]
  assert batch['targets'].tolist() == [[5, 6, 7, 8, 0]]
  assert batch['loss_mask'].tolist() == [[0, 0, 1, 1, 0]]
  assert batch['token_mask'].tolist() == [[False, True, True, True, True]]


def test_lm_loop_on_policy_and_seqkd_dataset(tmp_path):
  teacher = Llama(tiny_config())
  teacher_vars = teacher.init(jax.random.PRNGKey(1), jnp.zeros((1, 4), jnp.int32))
  teacher_vars = nn.unbox(teacher_vars)
  student = Llama(tiny_config(hidden_size=16, num_layers=1))
  optim = ml_collections.ConfigDict({
      'name': 'adam', 'learning_rate': 1e-2, 'weight_decay': 0.0, 'schedule': 'constant',
      'warmup_epochs': 0, 'grad_clip_norm': 0.0, 'momentum': 0.0, 'nesterov': False,
      'decay_epochs': (), 'decay_factor': 0.1})
  method = methods.from_config(ml_collections.ConfigDict({'name': 'token_jsd'}))
  trainer = lm_train.build_trainer(student=student, teacher=teacher,
                                   teacher_variables=teacher_vars, method=method,
                                   optim_config=optim, total_steps=3, seq_len=7)
  rng = np.random.default_rng(0)
  prompts = rng.integers(3, 200, (8, 4)).tolist()
  sampling = SamplingParams(max_new_tokens=4, temperature=1.0)
  responses = seqkd.generate_responses(teacher, teacher_vars, prompts, sampling, eos_id=None,
                                       pad_id=0, seed=0, batch_size=8, prompt_multiple=1)
  seqkd.write_dataset(prompts, responses, {'teacher': 'tiny', 'seed': 0},
                      data_dir=str(tmp_path), name='resp')
  source, provenance = seqkd.load_dataset(str(tmp_path), 'resp')
  assert len(source) == 8 and provenance['teacher'] == 'tiny'
  stored = {tuple(source[i]['prompt']): source[i]['response'].tolist() for i in range(8)}
  assert stored == {tuple(p): r for p, r in zip(prompts, responses)}  # tfds shuffles
  example = {'prompt': np.asarray(prompts), 'prompt_mask': np.ones((8, 4), bool),
             'response': np.asarray(responses), 'response_mask': np.ones((8, 4), bool)}
  on_policy = lm_train.OnPolicy(lam=0.5, sampling=sampling, eos_id=None, pad_id=0)
  state = trainer.init_fn(jax.random.PRNGKey(0))
  traces = trainer.train_fn._cache_size()
  state, rows = lm_train.train(trainer, state, iter([example] * 4), 4, on_policy=on_policy,
                               log_every=2)
  assert int(state.step) == 4 and np.isfinite(rows[-1]['loss'])
  assert 0 < sum(r['on_policy'] for r in rows) < 2  # both kinds of batch happened
  assert trainer.train_fn._cache_size() == traces + 1  # compiled once
  summary = lm_train.evaluate(trainer, state, [example])
  assert summary['tokens'] == 32 and 0 <= summary['agreement'] <= 1


def test_vocab_mismatch_in_trainer():
  teacher = Llama(tiny_config(vocab_size=300))
  student = Llama(tiny_config())
  with pytest.raises(ValueError, match='teacher has 300 tokens and the student'):
    lm_train.build_trainer(student=student, teacher=teacher, teacher_variables={},
                           method=methods.from_config(ml_collections.ConfigDict(
                               {'name': 'token_kl'})),
                           optim_config=ml_collections.ConfigDict(), total_steps=1, seq_len=4)
