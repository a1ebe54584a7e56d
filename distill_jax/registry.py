"""One registry for everything chosen by name from a config.

Namespaces: ``losses``, ``methods``, ``models``, ``datasets``, ``schemes``,
``teacher_combiners``, ``experiments``. Objects register themselves at import time::

    @register('methods', 'kd')
    @dataclasses.dataclass(frozen=True)
    class KD: ...

``get`` imports the namespace's package first (``distill_jax.methods`` for
``methods``), so a caller never has to import a module just to fill the
registry. Registering a name twice, or asking for a name that is not there,
raises an error that lists the registered names.
"""

import importlib
from typing import Any, Callable, TypeVar

T = TypeVar('T')

NAMESPACES = ('losses', 'methods', 'models', 'datasets', 'schemes', 'teacher_combiners',
              'experiments')

_PACKAGES = {
    'losses': 'distill_jax.losses',
    'methods': 'distill_jax.methods',
    'models': 'distill_jax.models',
    'datasets': 'distill_jax.data',
    'schemes': 'distill_jax.schemes',
    'teacher_combiners': 'distill_jax.schemes',
    'experiments': 'experiments',
}

_ENTRIES: dict[str, dict[str, Any]] = {namespace: {} for namespace in NAMESPACES}


def _check_namespace(namespace: str) -> None:
  if namespace not in _ENTRIES:
    raise ValueError(
        f'Unknown registry namespace {namespace!r}; namespaces are: '
        f'{", ".join(NAMESPACES)}.')


def register(namespace: str, name: str) -> Callable[[T], T]:
  """Decorator that registers ``obj`` under ``namespace/name`` and returns it."""
  _check_namespace(namespace)

  def decorator(obj: T) -> T:
    entries = _ENTRIES[namespace]
    if name in entries and entries[name] is not obj:
      raise ValueError(
          f'{namespace!r} already has an entry named {name!r} '
          f'({entries[name]!r}); registered names: {", ".join(sorted(entries))}.')
    entries[name] = obj
    return obj

  return decorator


def _import_namespace(namespace: str) -> None:
  package = _PACKAGES[namespace]
  try:
    importlib.import_module(package)
  except ModuleNotFoundError as e:
    if e.name != package:
      raise


def names(namespace: str) -> list[str]:
  """Sorted names registered in ``namespace``."""
  _check_namespace(namespace)
  _import_namespace(namespace)
  return sorted(_ENTRIES[namespace])


def get(namespace: str, name: str) -> Any:
  """The object registered as ``namespace/name``; a clear error if absent."""
  _check_namespace(namespace)
  _import_namespace(namespace)
  entries = _ENTRIES[namespace]
  if name not in entries:
    raise ValueError(
        f'Unknown name {name!r} in registry namespace {namespace!r}. '
        f'Registered {namespace}: {", ".join(sorted(entries)) or "(none)"}.')
  return entries[name]
