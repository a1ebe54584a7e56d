"""Parsing of the ``arg`` in ``--config=configs/x.py:arg`` (``key=value`` pairs).

``'pair=resnet32x4_resnet8x4,runlocal,epochs=3'`` ->
``{'pair': 'resnet32x4_resnet8x4', 'runlocal': True, 'epochs': 3}``.
A bare key means True. Values are parsed as Python literals when they are one
(numbers, booleans, tuples), otherwise kept as strings.
"""

import ast
import os
from typing import Any


def parse_config_arg(arg: str | None, defaults: dict[str, Any]) -> dict[str, Any]:
  """Merges ``arg``'s pairs over ``defaults``; unknown keys are an error."""
  values = dict(defaults)
  for item in filter(None, (part.strip() for part in (arg or '').split(','))):
    key, sep, raw = item.partition('=')
    key = key.strip()
    if key not in defaults:
      raise ValueError(
          f'Unknown config argument {key!r} in {arg!r}; this config accepts: '
          f'{", ".join(sorted(defaults))}.')
    if not sep:
      values[key] = True
      continue
    try:
      values[key] = ast.literal_eval(raw.strip())
    except (ValueError, SyntaxError):
      values[key] = raw.strip()
  return values


def load_config_module(path: str):
  """The config file at ``path`` as a module (its ``get_config``, ``SMOKE_TEST_ARGS``...)."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location('distill_jax_config', path)
  if spec is None or not os.path.exists(path):
    raise FileNotFoundError(f'No config file at {path!r}.')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_config_file(path: str, arg: str | None = None):
  """``get_config(arg)`` of the config file at ``path`` (as ``--config=path:arg`` does)."""
  return load_config_module(path).get_config(arg)
