"""Shared harness of the method-table experiments: train a slice, aggregate, tabulate.

A table is a grid of (pair, method) cells, each trained with several seeds.
Each run's workdir is reused when it already holds ``results.json`` (a rerun
only trains what is missing; an interrupted run resumes). Per cell we report
mean +- std over seeds of the last-epoch test accuracy and of the best-epoch
test accuracy (the maximum over the per-epoch evaluations, i.e. selected on
the test set, as RepDistiller's ``best_acc`` does; flagged in the table).
"""

import json
import math
import os
from typing import Any, Callable, Sequence

from distill_jax import config_args
from distill_jax import metrics
from distill_jax import train


def train_or_reuse(config_path: str, arg: str, workdir: str,
                   data_dir: str = '') -> dict[str, Any]:
  """``results.json`` of the run ``config_path:arg`` in ``workdir`` (trained if absent)."""
  done = os.path.join(workdir, train.RESULTS_FILE)
  if os.path.exists(done):
    with open(done) as f:
      return json.load(f)
  config = config_args.load_config_file(config_path, arg)
  if data_dir:
    config.data.data_dir = data_dir
  print(f'=== {arg} -> {workdir}', flush=True)
  return train.run(config, workdir)


def best_accuracy(workdir: str) -> float:
  """Highest ``eval/accuracy`` logged in ``workdir`` (selected on the eval split)."""
  return max(r['eval/accuracy'] for r in metrics.read_metrics(workdir) if 'eval/accuracy' in r)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
  """Mean and sample standard deviation (0 for one value)."""
  mean = sum(values) / len(values)
  if len(values) < 2:
    return mean, 0.0
  return mean, math.sqrt(sum((v - mean)**2 for v in values) / (len(values) - 1))


def cell(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
  """Per-seed results -> ``{'last': (mean, std), 'best': (mean, std), 'seeds': n, ...}`` in %."""
  last = [100 * r['eval']['accuracy'] for r in runs]
  best = [100 * best_accuracy(r['workdir']) for r in runs]
  return {'last': mean_std(last), 'best': mean_std(best), 'seeds': len(runs),
          'last_runs': last, 'best_runs': best,
          'wall_time_s': sum(r['wall_time_s'] for r in runs)}


def _pm(value: tuple[float, float], seeds: int) -> str:
  return f'{value[0]:.2f} ± {value[1]:.2f}' if seeds > 1 else f'{value[0]:.2f}'


def markdown(cells: dict[tuple[str, str], dict[str, Any]], *,
             published: Callable[[str, str], float | None], title: str,
             notes: Sequence[str]) -> str:
  """One row per (pair, method): ours (last, best epoch) beside the published number."""
  rows = [f'### {title}', '',
          '| pair | method | seeds | ours: last epoch (%) | ours: best epoch (%)* | '
          'published (%) | train time |',
          '|---|---|---:|---:|---:|---:|---:|']
  for (pair, method), c in cells.items():
    paper = published(pair, method)
    rows.append(
        f'| {pair} | {method} | {c["seeds"]} | {_pm(c["last"], c["seeds"])} | '
        f'{_pm(c["best"], c["seeds"])} | {"-" if paper is None else f"{paper:.2f}"} | '
        f'{c["wall_time_s"] / 60:.1f} min |')
  rows += ['', '\\* best epoch = the maximum test accuracy over the per-epoch '
           'evaluations: it is selected on the test set (as RepDistiller\'s '
           '`best_acc`), so it is optimistic; the last-epoch column is the unbiased one.']
  rows += [''] + list(notes)
  return '\n'.join(rows) + '\n'


def write(stem: str, cells: dict[tuple[str, str], dict[str, Any]], table: str) -> None:
  """``stem.json`` (every run's numbers) and ``stem.md`` (the table)."""
  os.makedirs(os.path.dirname(stem) or '.', exist_ok=True)
  with open(stem + '.json', 'w') as f:
    json.dump({f'{p}/{m}': c for (p, m), c in cells.items()}, f, indent=2)
  with open(stem + '.md', 'w') as f:
    f.write(table)
