"""The fused LM loss (``train.lm_logits``): token methods on ``LinearLogits`` equal them on logits.

Method level: values and the student's gradients (hidden states and head) of
every method with a fused form, with soft-capped teacher and student logits.
Model level: ``linear_logits`` is the logits ``Llama.apply`` returns (logit
scale, soft-cap, tied and untied heads). Step level: one train step through
``train.build`` with ``train.lm_logits=fused`` equals ``materialized`` on 1
device, 8 data-parallel devices and a 4 x 2 mesh whose tensor axis splits
the vocabulary (``vocab_sharded``).
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from distill_jax import methods
from distill_jax import train as train_lib
from distill_jax.llm.model import Llama, linear_logits
from distill_jax.losses.large_vocab import LinearLogits
from distill_jax.tasks import language_model
from tests.llm.conftest import random_variables, tiny_config, write_gguf
from tests.llm.test_run import _config, assert_same_step, one_step

FUSED = [('token_kl', {'temperature': 2.0}), ('token_kl', {'ce_weight': 0.3}),
         ('token_reverse_kl', {}), ('token_jsd', {'beta': 0.3, 'temperature': 1.5}),
         ('token_jsd', {'beta': 1.0}), ('token_tv', {'temperature': 2.0}),
         ('token_skew_kl', {'lam': 0.1}), ('token_skew_kl', {'lam': 0.3, 'reverse': True}),
         ('token_ce', {}), ('token_hidden', {'ce_weight': 0.5})]


def _method(name, kwargs):
  return methods.from_config(ml_collections.ConfigDict({'name': name, **kwargs}))


@pytest.mark.parametrize('name,kwargs', FUSED)
def test_fused_method_equals_materialized(name, kwargs):
  method = _method(name, kwargs)
  assert method.fused
  k = jax.random.split(jax.random.PRNGKey(0), 6)
  b, t, ds, dt, v = 2, 7, 8, 12, 40
  h_t, w_t = jax.random.normal(k[0], (b, t, dt)), jax.random.normal(k[1], (dt, v))
  h_s, w_s = jax.random.normal(k[2], (b, t, ds)), jax.random.normal(k[3], (ds, v))
  batch = {'targets': jax.random.randint(k[4], (b, t), 0, v),
           'loss_mask': (jax.random.uniform(k[5], (b, t)) > 0.3).astype(jnp.float32)}
  teacher = LinearLogits(h_t, w_t, softcap=6.0)
  features = lambda h: {'hidden_0': h}

  def loss(h, w, fused):
    student = LinearLogits(h, w, softcap=4.0)
    s = student if fused else student.materialize()
    tt = teacher if fused else teacher.materialize()
    aux = method.init_aux(jax.random.PRNGKey(1), features(h), features(h_t))
    value, metrics = method.loss((s, features(h)), (tt, features(h_t)), batch, aux, 0)
    return value, metrics

  (want, want_m), want_g = jax.value_and_grad(loss, (0, 1), has_aux=True)(h_s, w_s, False)
  (got, got_m), got_g = jax.jit(jax.value_and_grad(loss, (0, 1), has_aux=True),
                                static_argnums=2)(h_s, w_s, True)
  np.testing.assert_allclose(got, want, rtol=2e-5)
  for key in want_m:
    np.testing.assert_allclose(got_m[key], want_m[key], rtol=2e-5, atol=1e-7)
  for g, w in zip(got_g, want_g):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6 * float(jnp.max(jnp.abs(w))))


@pytest.mark.parametrize('tie', [True, False])
def test_linear_logits_equal_the_models_logits(tie):
  config = tiny_config(tie_embeddings=tie, logit_scale=0.5, logit_softcap=3.0)
  model, variables = Llama(config), random_variables(config)
  tokens = jnp.asarray(np.random.default_rng(0).integers(0, config.vocab_size, (2, 9)))
  logits, features = model.apply(variables, tokens)
  assert float(jnp.max(jnp.abs(logits))) <= 3.0
  none, _ = model.apply(variables, tokens, return_logits=False)
  assert none is None
  fused = linear_logits(model, variables['params'], features['pre_logits'])
  assert fused.shape == logits.shape
  np.testing.assert_allclose(fused.materialize(), logits, rtol=1e-5, atol=1e-6)


def test_lm_logits_config(tiny, tmp_path):
  config, variables = tiny
  teacher = str(tmp_path / 'tiny.gguf')
  write_gguf(teacher, config, variables)
  assert language_model.uses_fused_logits(_config(teacher, ',method=token_kl'),
                                          _method('token_kl', {}))
  sparse = _method('token_sparse_kl', {})
  for value, method in (('auto', sparse), ('materialized', _method('token_kl', {}))):
    assert not language_model.uses_fused_logits(
        _config(teacher, **{'train.lm_logits': value}), method)
  config = _config(teacher, ',method=token_sparse_kl', **{'train.lm_logits': 'fused'})
  with pytest.raises(ValueError, match='token_sparse_kl.* has no fused form.*token_ce'):
    language_model.uses_fused_logits(config, sparse)
  with pytest.raises(ValueError, match='train.lm_logits=.sometimes.'):
    train_lib.build(_config(teacher, **{'train.lm_logits': 'sometimes'}))


@pytest.fixture(scope='module')
def capped_teacher(tmp_path_factory):
  """A tiny GGUF teacher with soft-capped logits and an even vocabulary (264)."""
  config = tiny_config(vocab_size=264, logit_softcap=5.0)
  path = str(tmp_path_factory.mktemp('capped') / 'capped.gguf')
  write_gguf(path, config, random_variables(config, seed=3))
  return path


@pytest.mark.parametrize('method,mesh', [
    ('token_kl', None), ('token_jsd', {'mesh.data': 8}),
    ('token_kl', {'mesh.data': 4, 'mesh.tensor': 2})])
def test_fused_step_equals_materialized(capped_teacher, method, mesh):
  devices = jax.devices()[:1] if mesh is None else None
  assert_same_step(*[one_step(_config(capped_teacher, f',method={method}', **{
      'train.lm_logits': lm_logits, 'method.ce_weight': 0.25, 'optim.name': 'sgd',
      'student.kwargs.logit_scale': 0.7, 'student.kwargs.logit_softcap': 8.0, **(mesh or {})}),
                              devices) for lm_logits in ('materialized', 'fused')], atol=1e-6)
