"""The package's layering, read from the source with ``ast`` (CONTRIBUTING.md, style rules).

Every ``import`` of a ``distill_jax`` module, at module level or inside a
function, is an edge of the module import graph. The tests assert:

* no import cycle among the modules;
* the lower layers (``distill_jax.data``, ``distill_jax.losses``) never import
  the trainers (``train``, ``steps``, ``schemes``, ``compile``,
  ``tasks``), directly or through other modules.

The graph is the one Python runs: importing ``distill_jax.a.b`` first runs
``distill_jax/a/__init__.py``, so the importer also gets an edge to each
package above its target (``from distill_jax.methods import base`` in
``llm/x.py`` runs ``methods/__init__.py``, which imports every method). A
module's imports of its own packages are left out: those are already being
initialised when it runs, and they are what makes ``pkg/__init__.py``
re-exporting ``pkg.sub`` look like a cycle with ``pkg.sub``.
"""

import ast
import pathlib

import pytest

PACKAGE = 'distill_jax'
ROOT = pathlib.Path(__file__).resolve().parents[1] / PACKAGE

LOWER_LAYERS = ('distill_jax.data', 'distill_jax.losses')
TRAINERS = ('distill_jax.train', 'distill_jax.steps', 'distill_jax.schemes',
            'distill_jax.compile', 'distill_jax.tasks')



def _within(name: str, prefix: str) -> bool:
  return name == prefix or name.startswith(prefix + '.')


def _modules() -> dict[str, tuple[pathlib.Path, bool]]:
  """Dotted module name -> (its file, whether it is a package ``__init__``)."""
  modules = {}
  for path in sorted(ROOT.rglob('*.py')):
    parts = path.relative_to(ROOT.parent).with_suffix('').parts
    is_package = parts[-1] == '__init__'
    modules['.'.join(parts[:-1] if is_package else parts)] = (path, is_package)
  return modules


def _imported(module: str, is_package: bool, node: ast.AST,
              modules) -> list[str]:
  """Dotted names an ``Import``/``ImportFrom`` node of ``module`` brings in."""
  if isinstance(node, ast.Import):
    return [alias.name for alias in node.names]
  if node.level:  # Relative: `from . import x`, `from ..a import b`.
    anchor = module.split('.')
    anchor = anchor[:len(anchor) - node.level + is_package]
    base = '.'.join(anchor + ([node.module] if node.module else []))
  else:
    base = node.module or ''
  # `from pkg import name`: `name` is a submodule of pkg or an attribute of it.
  return [f'{base}.{alias.name}' if f'{base}.{alias.name}' in modules else base
          for alias in node.names]


def _imports(module: str, path: pathlib.Path, is_package: bool,
             modules) -> set[str]:
  """The package modules that importing ``module`` runs, from anywhere in its file."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if not isinstance(node, (ast.Import, ast.ImportFrom)):
      continue
    for name in _imported(module, is_package, node, modules):
      parts = name.split('.')
      for end in range(1, len(parts) + 1):  # The target and its packages.
        prefix = '.'.join(parts[:end])
        if prefix in modules and _within(prefix, PACKAGE):
          found.add(prefix)
  # Not the module itself, nor the packages it is in.
  return {target for target in found if not _within(module, target)}


def _graph() -> dict[str, set[str]]:
  """Module -> the modules it imports."""
  modules = _modules()
  return {module: _imports(module, path, is_package, modules)
          for module, (path, is_package) in modules.items()}


def _components(graph: dict[str, set[str]]) -> list[set[str]]:
  """The strongly connected components with more than one module (Tarjan)."""
  index, low, stack, on_stack, components = {}, {}, [], set(), []

  def visit(node):
    index[node] = low[node] = len(index)
    stack.append(node)
    on_stack.add(node)
    for succ in sorted(graph[node]):
      if succ not in index:
        visit(succ)
        low[node] = min(low[node], low[succ])
      elif succ in on_stack:
        low[node] = min(low[node], index[succ])
    if low[node] == index[node]:
      component = set()
      while not component or member != node:
        member = stack.pop()
        on_stack.discard(member)
        component.add(member)
      if len(component) > 1:
        components.append(component)

  for node in sorted(graph):
    if node not in index:
      visit(node)
  return components


def _path(parents: dict[str, str | None], end: str) -> list[str]:
  path = [end]
  while parents[path[-1]] is not None:
    path.append(parents[path[-1]])
  return path[::-1]


def _reachable(graph: dict[str, set[str]], start: str,
               within=None) -> dict[str, str | None]:
  """Modules reachable from ``start`` (breadth first) -> the one importing them."""
  parents, frontier = {start: None}, [start]
  while frontier:
    nxt = []
    for node in frontier:
      for succ in sorted(graph[node]):
        if succ not in parents and (within is None or succ in within):
          parents[succ] = node
          nxt.append(succ)
    frontier = nxt
  return parents


def _cycle(graph: dict[str, set[str]], component: set[str]) -> list[str]:
  """A shortest cycle ``[a, ..., a]`` through the component's first module."""
  start = min(component)
  parents = _reachable(graph, start, within=component)
  last = min((node for node in parents if start in graph[node]),
             key=lambda node: len(_path(parents, node)))
  return _path(parents, last) + [start]


@pytest.fixture(scope='module')
def graph():
  return _graph()


def test_graph_sees_every_kind_of_import(graph):
  # Imports known to exist, one of each kind the parser must read.
  assert 'distill_jax.registry' in graph['distill_jax.methods.base']
  # `from pkg import module` and `from pkg.module import name`.
  assert {'distill_jax.losses', 'distill_jax.methods.ce'} <= graph['distill_jax.methods.kd']
  # The target's packages run first: `from distill_jax.methods.base import Method`.
  assert {'distill_jax.methods', 'distill_jax.methods.base'} <= graph['distill_jax.state']
  # A function-level import (the Pallas kernels are loaded on use).
  assert 'distill_jax.losses.pallas_kl' in graph['distill_jax.losses.large_vocab']
  # A package's __init__ importing its own submodules is an edge ...
  assert 'distill_jax.methods.kd' in graph['distill_jax.methods']
  # ... and a submodule importing its own package is not.
  assert 'distill_jax.methods' not in graph['distill_jax.methods.kd']


def test_cycle_finder_reports_a_cycle():
  graph = {'a': {'b'}, 'b': {'c'}, 'c': {'a', 'd'}, 'd': set()}
  assert [_cycle(graph, c) for c in _components(graph)] == [['a', 'b', 'c', 'a']]


def test_no_import_cycles(graph):
  components = _components(graph)
  assert not components, 'Import cycles in distill_jax:\n' + '\n'.join(
      f'  {" -> ".join(_cycle(graph, c))}  (all of: {", ".join(sorted(c))})'
      for c in components)


def test_lower_layers_never_import_trainers(graph):
  violations = []
  for module in sorted(graph):
    if any(_within(module, lower) for lower in LOWER_LAYERS):
      parents = _reachable(graph, module)
      violations += [' -> '.join(_path(parents, target)) for target in sorted(parents)
                     if any(_within(target, high) for high in TRAINERS)]
  assert not violations, ('distill_jax.data and distill_jax.losses must not import '
                          'the trainers:\n  ' + '\n  '.join(violations))
