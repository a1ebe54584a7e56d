"""Metric aggregation and writing (JSONL + TensorBoard), on process 0 only.

Train metrics stay on device between log steps (no host round-trip per
step); ``mean_of`` fetches them all at once. Eval metrics are (sum, count)
pairs summed over batches, so padded batches give exact figures.
"""

import json
import os
import time
from typing import Any, Sequence

import jax
import numpy as np


def log(message: str) -> None:
  """Progress output on process 0 (stdout, so library INFO logs can stay off)."""
  if jax.process_index() == 0:
    print(f'[{time.strftime("%H:%M:%S")}] {message}', flush=True)


METRICS_FILE = 'metrics.jsonl'


def mean_of(step_metrics: Sequence[dict[str, jax.Array]]) -> dict[str, float]:
  """Means over steps of per-step scalar metrics (one device->host transfer)."""
  fetched = jax.device_get(list(step_metrics))
  return {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}


def add_sums(total: dict[str, Any] | None, sums: dict[str, jax.Array]) -> dict[str, Any]:
  """Accumulates eval sums on device."""
  return sums if total is None else jax.tree.map(lambda a, b: a + b, total, sums)


def eval_summary(sums: dict[str, Any], count_name: str = 'examples') -> dict[str, float]:
  """Eval sums -> accuracies, errors, cross-entropies per model (+ teacher figures).

  The one eval summary of every task. ``sums`` holds ``count`` (examples, or
  tokens for language models: ``count_name``) and, per evaluated model with
  name prefix ``p`` (``''`` = the student, ``teacher_``, ``peer1_``,
  ``ensemble_`` ...): ``{p}correct`` -> ``{p}accuracy`` and ``{p}errors``;
  ``{p}correct_top5`` -> ``{p}top5_accuracy``; ``{p}ce`` ->
  ``{p}cross_entropy``; ``{p}nll`` (next-token) -> ``{p}nll`` and
  ``{p}perplexity``. ``kl`` becomes ``kl_teacher_student``; other sums
  (``agreement``) are divided by ``count``. A model counted in its own units
  has ``{p}count`` (a teacher with another tokenizer); with ``chars`` (the
  characters those tokens spell) every ``{p}nll`` also gives
  ``{p}bits_per_char``.
  """
  sums = {k: float(v) for k, v in jax.device_get(sums).items()}
  count = sums.pop('count')
  chars = sums.pop('chars', None)
  counts = {k.removesuffix('count'): sums.pop(k) for k in list(sums) if k.endswith('_count')}
  summary = {}
  # Accuracy and errors first for every model, then the other figures.
  for key, value in sorted(sums.items(), key=lambda kv: not kv[0].endswith('correct')):
    if key.endswith('correct_top5'):
      summary[key.removesuffix('correct_top5') + 'top5_accuracy'] = value / count
    elif key.endswith('correct'):
      prefix = key.removesuffix('correct')
      summary[prefix + 'accuracy'] = value / count
      summary[prefix + 'errors'] = int(round(count - value))
    elif key.endswith('ce'):
      summary[key.removesuffix('ce') + 'cross_entropy'] = value / count
    elif key.endswith('nll'):
      prefix = key.removesuffix('nll')
      n = counts.get(prefix, count)
      summary[key] = value / n
      summary[prefix + 'perplexity'] = float(np.exp(value / n))
      if chars:
        summary[prefix + 'bits_per_char'] = value / chars / float(np.log(2.0))
    elif key == 'kl':
      summary['kl_teacher_student'] = value / count
    else:
      summary[key] = value / count
  summary[count_name] = int(count)
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
