"""Registry: registration, lookup, and the errors people see."""

import pytest

from distill_jax import registry


@pytest.fixture
def empty_registry(monkeypatch):
  monkeypatch.setattr(registry, '_ENTRIES', {n: {} for n in registry.NAMESPACES})
  monkeypatch.setattr(registry, '_import_namespace', lambda namespace: None)


def test_register_and_get(empty_registry):
  @registry.register('methods', 'toy')
  def toy():
    return 1

  assert registry.get('methods', 'toy') is toy
  assert registry.names('methods') == ['toy']


def test_duplicate_name_is_an_error(empty_registry):
  registry.register('models', 'a')(object)
  with pytest.raises(ValueError, match="already has an entry named 'a'"):
    registry.register('models', 'a')(int)


def test_unknown_name_lists_registered_names(empty_registry):
  registry.register('losses', 'kl')(object)
  registry.register('losses', 'tv')(int)
  with pytest.raises(ValueError, match="'klx'.*Registered losses: kl, tv"):
    registry.get('losses', 'klx')


def test_unknown_namespace():
  with pytest.raises(ValueError, match='namespaces are: losses, methods'):
    registry.names('optimizers')


def test_real_namespaces_are_filled():
  assert {'ce', 'kd'} <= set(registry.names('methods'))
  assert {'kl', 'reverse_kl', 'generalized_jsd', 'total_variation'} <= set(
      registry.names('losses'))
  assert {'mlp', 'resnet8x4', 'resnet32x4'} <= set(registry.names('models'))
  assert {'mnist', 'fashion_mnist', 'digits', 'cifar10', 'cifar100'} <= set(
      registry.names('datasets'))
