"""A benchmark's result files: ``<out>.json`` (the data) and ``<out>.md`` (its table)."""

import json
import os
from typing import Any


def write(out: str, results: Any, table: str) -> None:
  """Writes ``results`` to ``out + '.json'`` and ``table`` to ``out + '.md'``; prints the table."""
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out + '.json', 'w') as f:
    json.dump(results, f, indent=1)
  with open(out + '.md', 'w') as f:
    f.write(table + '\n')
  print(table, flush=True)
