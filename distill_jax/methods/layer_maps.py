"""Which student block learns from which teacher block: the layer maps of the
hidden-state and relation methods (``token_hidden``, ``token_minilm``,
``token_minilmv2``).

A ``layer_map`` is one of:

* ``'last'``: the student's last block from the teacher's last (MiniLM);
* ``'last:<k>'``: the student's last ``k`` blocks from the teacher's last
  ``k``, in order;
* ``'uniform'``: every student block ``s`` of ``L_s`` from teacher block
  ``max((s + 1) * L_t // L_s - 1, 0)`` of ``L_t`` (TinyBERT's ``g(m) = m N /
  M``; the last from the last);
* ``'<s>:<t> <s>:<t> ...'`` (spaces or commas between pairs) or a sequence of
  ``(s, t)`` pairs: explicit pairs,
  negative indices counting from the end (``'-1:20'``: the last student block
  from teacher block 20, MiniLMv2's upper-middle layer);
* a callable ``(student_depth, teacher_depth) -> pairs``.

``layer_pairs`` resolves a map against both depths; an index out of range is
one error naming both.
"""

import re
from typing import Callable, Sequence, Union

from distill_jax.methods import base

LayerMap = Union[str, Sequence[Sequence[int]], Callable[[int, int], Sequence[Sequence[int]]]]


def _parse(layer_map: str, student_depth: int, teacher_depth: int) -> list[tuple[int, int]]:
  if layer_map == 'last':
    return [(-1, -1)]
  if layer_map == 'uniform':
    return [(s, max((s + 1) * teacher_depth // student_depth - 1, 0))
            for s in range(student_depth)]
  if layer_map.startswith('last:'):
    k = int(layer_map[len('last:'):])
    if k < 1:
      raise ValueError(f"layer_map 'last:{k}': k must be >= 1.")
    return [(-k + i, -k + i) for i in range(k)]
  pairs = []
  for item in re.split(r'[,\s]+', layer_map):
    s, t = item.split(':')
    pairs.append((int(s), int(t)))
  return pairs


def layer_pairs(layer_map: LayerMap, student_depth: int, teacher_depth: int,
                owner: str = 'layer_map') -> tuple[tuple[int, int], ...]:
  """The ``(student block, teacher block)`` pairs of ``layer_map``, as
  non-negative indices into models of ``student_depth`` and ``teacher_depth``
  blocks. ``owner`` names the method in errors.

  Raises:
    ValueError: an unreadable map, no pairs, or an index out of range.
  """
  if callable(layer_map):
    pairs = layer_map(student_depth, teacher_depth)
  elif isinstance(layer_map, str):
    try:
      pairs = _parse(layer_map.strip(), student_depth, teacher_depth)
    except ValueError as e:
      raise ValueError(
          f"{owner}: cannot read layer_map {layer_map!r} ({e}); use 'last', 'last:<k>', "
          "'uniform' or student:teacher pairs such as '0:4 3:29'.") from None
  else:
    pairs = layer_map
  pairs = tuple((int(s), int(t)) for s, t in pairs)
  if not pairs:
    raise ValueError(f'{owner}: layer_map {layer_map!r} maps no blocks.')
  bad = [(s, t) for s, t in pairs
         if not (-student_depth <= s < student_depth and -teacher_depth <= t < teacher_depth)]
  if bad:
    raise ValueError(
        f'{owner}: layer_map {layer_map!r} pairs {bad} (student block, teacher block) are out '
        f'of range: the student has {student_depth} blocks (0..{student_depth - 1}) and the '
        f'teacher {teacher_depth} (0..{teacher_depth - 1}); negative indices count from the end.')
  return tuple((s % student_depth, t % teacher_depth) for s, t in pairs)


def depth(features: dict, prefix: str = 'hidden_') -> int:
  """The number of blocks of a model whose ``features`` hold ``<prefix><i>``."""
  return sum(k.startswith(prefix) and k[len(prefix):].isdigit() for k in features)


def feature_pairs(layer_map: LayerMap, student_features: dict, teacher_features: dict,
                  name: str, owner: str) -> list[tuple]:
  """``[(student <name>_<s>, teacher <name>_<t>)]`` for the pairs of ``layer_map``
  (the depths counted from the ``hidden_<i>`` features).

  Raises:
    base.MissingFeatureError: a model did not return ``<name>_<i>``.
  """
  pairs = layer_pairs(layer_map, depth(student_features), depth(teacher_features), owner)
  for role, features, index in (('student', student_features, 0),
                                ('teacher', teacher_features, 1)):
    missing = sorted({f'{name}_{pair[index]}' for pair in pairs} - set(features))
    if missing:
      raise base.MissingFeatureError(
          f'{owner}: the {role} returned no {", ".join(missing)} (it returned '
          f'{", ".join(sorted(features))}).', role)
  return [(student_features[f'{name}_{s}'], teacher_features[f'{name}_{t}']) for s, t in pairs]


def block_features(layer_map: LayerMap, names: Sequence[str], student_depth: int,
                   teacher_depth: int, owner: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
  """The features ``<name>_<block>`` of the mapped blocks, ``(student's,
  teacher's)``: what a method asks each model for (``Llama``'s
  ``attention_features``)."""
  pairs = layer_pairs(layer_map, student_depth, teacher_depth, owner)
  return tuple(tuple(dict.fromkeys(f'{name}_{pair[side]}' for pair in pairs for name in names))
               for side in (0, 1))
