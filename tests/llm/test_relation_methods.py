"""token_minilm / token_minilmv2 / token_hidden's layer maps on real decoder features."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from distill_jax import losses
from distill_jax import methods
from distill_jax.llm.model import Llama
from distill_jax.losses import token_relations
from distill_jax.methods import token_hidden
from distill_jax.methods import token_minilm
from distill_jax.methods import token_minilmv2
from tests.llm.conftest import random_variables, tiny_config

TOKEN_MASK = jnp.asarray([[False, False, True, True, True, True],
                          [True, True, True, True, True, True]])
BATCH = {'targets': jnp.ones((2, 6), jnp.int32), 'token_mask': TOKEN_MASK,
         'loss_mask': jnp.asarray([[0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 1, 0]], jnp.float32)}


def _run(config, seed, features, params=None):
  variables = random_variables(config, seed) if params is None else {'params': params}
  tokens = jax.random.randint(jax.random.key(9), (2, 6), 3, config.vocab_size)
  return Llama(config).apply(variables, tokens, token_mask=TOKEN_MASK,
                             attention_features=features)


def _masked_mean(values):
  mask = TOKEN_MASK.astype(jnp.float32)
  return jnp.sum(values * mask) / jnp.sum(mask)


def test_minilm_is_forward_kl_plus_last_block_attention_and_value_relations():
  student_features, teacher_features = token_minilm.TokenMiniLM().attention_features(2, 3)
  assert (student_features, teacher_features) == (('attn_1', 'value_1'), ('attn_2', 'value_2'))
  student = _run(tiny_config(num_layers=2), 0, student_features)
  teacher = _run(tiny_config(num_layers=3, hidden_size=48, intermediate_size=96), 1,
                 teacher_features)
  assert 'attn_0' not in student[1]  # the other blocks keep the fused attention
  loss, metrics = token_minilm.TokenMiniLM().loss(student, teacher, BATCH, {}, 0)
  kl = token_minilm.token_kl.TokenForwardKL().loss(student, teacher, BATCH, {}, 0)[0]
  allowed = token_relations.causal_allowed(TOKEN_MASK)
  attention = _masked_mean(losses.attention_kl(student[1]['attn_1'], teacher[1]['attn_2'],
                                               allowed))
  value = _masked_mean(losses.self_relation_kl(student[1]['value_1'], teacher[1]['value_2'],
                                               allowed, relation_heads=2))
  np.testing.assert_allclose(metrics['attention_kl'], attention, rtol=1e-6)
  np.testing.assert_allclose(metrics['value_relation_kl'], value, rtol=1e-6)
  np.testing.assert_allclose(loss, kl + attention + value, rtol=1e-6)
  assert float(attention) > 0 and float(value) > 0


def test_minilm_terms_vanish_when_the_student_is_the_teacher():
  out = _run(tiny_config(), 0, ('attn', 'value'))
  method = methods.from_config(ml_collections.ConfigDict(
      {'name': 'token_minilm', 'layer_map': 'uniform'}))
  _, metrics = method.loss(out, out, BATCH, {}, 0)
  assert abs(float(metrics['attention_kl'])) < 1e-5
  assert abs(float(metrics['value_relation_kl'])) < 1e-5


def test_minilm_needs_the_teachers_head_counts():
  features = ('attn', 'value')
  teacher = _run(tiny_config(), 1, features)
  fewer_heads = _run(tiny_config(num_heads=2, num_kv_heads=2, head_dim=8), 0, features)
  with pytest.raises(ValueError, match='one head count'):
    token_minilm.TokenMiniLM().loss(fewer_heads, teacher, BATCH, {}, 0)
  fewer_kv = _run(tiny_config(num_kv_heads=1), 0, features)
  with pytest.raises(ValueError, match='student has 1 KV heads and the teacher 2.*minilmv2'):
    token_minilm.TokenMiniLM().loss(fewer_kv, teacher, BATCH, {}, 0)


def test_minilmv2_relates_models_of_other_head_counts_and_widths():
  """Teacher 4 heads / 2 KV of 8; student 2 heads / 1 KV of 4: 4 relation heads."""
  method = token_minilmv2.TokenMiniLMv2(relation_heads=4, layer_map='uniform')
  student_config = tiny_config(hidden_size=16, intermediate_size=32, num_heads=2,
                               num_kv_heads=1, head_dim=4)
  student_features, teacher_features = method.attention_features(2, 4)
  assert teacher_features == ('query_1', 'key_1', 'value_1', 'query_3', 'key_3', 'value_3')
  teacher = _run(tiny_config(num_layers=4), 1, teacher_features)
  params = random_variables(student_config, 0)['params']

  def relation(params):
    student = _run(student_config, 0, student_features, params)
    return method.loss(student, teacher, BATCH, {}, 0)[1]

  metrics = relation(params)
  student = _run(student_config, 0, student_features, params)
  allowed = token_relations.causal_allowed(TOKEN_MASK)
  for name in ('query', 'key', 'value'):  # uniform: student 0 <- teacher 1, 1 <- 3
    want = np.mean([_masked_mean(losses.self_relation_kl(
        student[1][f'{name}_{s}'], teacher[1][f'{name}_{t}'], allowed, relation_heads=4))
                    for s, t in ((0, 1), (1, 3))])
    np.testing.assert_allclose(metrics[f'{name}_relation_kl'], want, rtol=1e-5)
  grads = jax.grad(lambda p: relation(p)['key_relation_kl'])(params)
  assert float(jnp.abs(grads['layers_1']['attn']['k']).sum()) > 0
  assert float(jnp.abs(grads['layers_1']['attn']['q']).sum()) == 0  # keys only


def test_minilmv2_relation_heads_must_divide_every_width():
  method = token_minilmv2.TokenMiniLMv2(relation_heads=3, relations=('value',))
  out = _run(tiny_config(), 0, ('value',))
  with pytest.raises(ValueError, match=r'relation_heads=3 must divide .*student value 16.*'
                                       r'choose one of \[1, 2, 4, 8, 16\]'):
    method.loss(out, out, BATCH, {}, 0)
  with pytest.raises(ValueError, match='choose one or more of query, key, value'):
    token_minilmv2.TokenMiniLMv2(relations=('attn',))


def test_a_model_not_asked_for_its_attention_is_a_clear_error():
  out = _run(tiny_config(), 0, ())
  with pytest.raises(methods.MissingFeatureError, match='the student returned no query_1'):
    token_minilmv2.TokenMiniLMv2().loss(out, out, BATCH, {}, 0)


def test_hidden_uniform_map_projects_every_pair_and_names_both_depths():
  method = token_hidden.TokenHiddenState(layer_map='uniform', normalize=False)
  student = _run(tiny_config(), 0, ())
  teacher = _run(tiny_config(num_layers=4, hidden_size=48, intermediate_size=96), 1, ())
  aux = method.init_aux(jax.random.key(0), student[1], teacher[1])
  assert {k: v.shape for k, v in aux.items()} == {'proj_0': (32, 48), 'proj_1': (32, 48)}
  _, metrics = method.loss(student, teacher, BATCH, aux, 0)
  mask = BATCH['loss_mask']
  want = np.mean([jnp.sum(jnp.mean((student[1][f'hidden_{s}'] @ aux[f'proj_{i}']
                                    - teacher[1][f'hidden_{t}'])**2, -1) * mask) / mask.sum()
                  for i, (s, t) in enumerate(((0, 1), (1, 3)))])
  np.testing.assert_allclose(metrics['hidden'], want, rtol=1e-5)
  with pytest.raises(ValueError, match='student has 2 blocks .* and the teacher 4'):
    token_hidden.TokenHiddenState(layer_map='2:0').init_aux(jax.random.key(0), student[1],
                                                            teacher[1])


def test_hidden_normalized_states_ignore_the_teachers_scale():
  method = token_hidden.TokenHiddenState(layer_map='last:2')
  student, teacher = _run(tiny_config(), 0, ()), _run(tiny_config(), 1, ())
  scaled = (teacher[0], {k: 1000.0 * v for k, v in teacher[1].items()})
  a = method.loss(student, teacher, BATCH, {}, 0)[1]['hidden']
  b = method.loss(student, scaled, BATCH, {}, 0)[1]['hidden']
  np.testing.assert_allclose(a, b, rtol=1e-4)
  assert 0 < float(a) < 4  # squared error of two unit-RMS vectors, per component
