"""Every registered method declares the task it serves (``Method.task``)."""

from distill_jax import registry
from distill_jax.methods import base
from distill_jax.methods import token_base

TASKS = ('classification', 'language_model')
# The token-level methods (methods/token_*.py), listed by hand: a new one is
# added here with its file.
LANGUAGE_MODEL_METHODS = {'token_ce', 'token_gold', 'token_hidden', 'token_jsd', 'token_kl',
                          'token_minilm', 'token_minilmv2', 'token_reverse_kl', 'token_skew_kl', 'token_sparse_kl',
                          'token_tv', 'token_uld'}


def _methods():
  return {name: registry.get('methods', name) for name in registry.names('methods')}


def test_every_method_declares_a_known_task():
  bad = {name: getattr(cls, 'task', None) for name, cls in _methods().items()
         if getattr(cls, 'task', None) not in TASKS}
  assert not bad, f'methods whose task is not one of {TASKS}: {bad}'


def test_exactly_the_token_methods_are_language_model_methods():
  by_task = {task: {name for name, cls in _methods().items() if cls.task == task}
             for task in TASKS}
  assert by_task['language_model'] == LANGUAGE_MODEL_METHODS
  assert by_task['classification'] == set(_methods()) - LANGUAGE_MODEL_METHODS
  assert by_task['classification']  # kd, fitnet, crd, ...


def test_task_comes_from_the_shared_bases():
  assert base.Method.task == 'classification'
  assert token_base.TokenMethod.task == 'language_model'
  for name, cls in _methods().items():
    assert issubclass(cls, base.Method), name
    assert issubclass(cls, token_base.TokenMethod) == (name in LANGUAGE_MODEL_METHODS), name
