"""Metric aggregation and writing (JSONL + TensorBoard), on process 0 only.

Train metrics stay on device between log steps (no host round-trip per
step); ``mean_of`` fetches them all at once. Eval metrics are (sum, count)
pairs summed over batches, so padded batches give exact figures.
"""

import json
import os
from typing import Any, Sequence

import jax
import numpy as np

METRICS_FILE = 'metrics.jsonl'


def mean_of(step_metrics: Sequence[dict[str, jax.Array]]) -> dict[str, float]:
  """Means over steps of per-step scalar metrics (one device->host transfer)."""
  fetched = jax.device_get(list(step_metrics))
  return {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}


def add_sums(total: dict[str, Any] | None, sums: dict[str, jax.Array]) -> dict[str, Any]:
  """Accumulates eval sums on device."""
  return sums if total is None else jax.tree.map(lambda a, b: a + b, total, sums)


def eval_summary(sums: dict[str, Any]) -> dict[str, float]:
  """Eval sums -> accuracy, top-5, errors, cross-entropy (+ teacher figures)."""
  sums = {k: float(v) for k, v in jax.device_get(sums).items()}
  count = sums['count']
  summary = {
      'accuracy': sums['correct'] / count,
      'top5_accuracy': sums['correct_top5'] / count,
      'errors': int(round(count - sums['correct'])),
      'cross_entropy': sums['ce'] / count,
      'examples': int(count),
  }
  if 'teacher_correct' in sums:
    summary.update({
        'teacher_accuracy': sums['teacher_correct'] / count,
        'teacher_errors': int(round(count - sums['teacher_correct'])),
        'agreement': sums['agreement'] / count,
        'kl_teacher_student': sums['kl'] / count,
    })
  return summary


class MetricWriter:
  """Appends ``{"step": s, ...}`` lines to ``metrics.jsonl`` and TensorBoard scalars.

  Writes nothing on processes other than 0.
  """

  def __init__(self, workdir: str):
    self._enabled = jax.process_index() == 0
    self._path = os.path.join(workdir, METRICS_FILE)
    self._tensorboard = None
    if self._enabled:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._tensorboard = SummaryWriter(os.path.join(workdir, 'tensorboard'))

  def write(self, step: int, scalars: dict[str, float]) -> None:
    if not self._enabled:
      return
    with open(self._path, 'a') as f:
      f.write(json.dumps({'step': step, **scalars}) + '\n')
    for name, value in scalars.items():
      self._tensorboard.add_scalar(name, value, step)

  def close(self) -> None:
    if self._tensorboard is not None:
      self._tensorboard.close()


def read_metrics(workdir: str) -> list[dict[str, Any]]:
  """All logged rows of a run, in order."""
  with open(os.path.join(workdir, METRICS_FILE)) as f:
    return [json.loads(line) for line in f if line.strip()]
