"""A training process for tests that interrupt it (``test_preemption.py``).

``python tests/train_worker.py WORKDIR DATA_DIR NUM_STEPS SECONDS_PER_STEP``
trains the digits MLP of ``conftest.make_small_config`` (logging every step,
checkpointing every 4 steps) with ``train.run``, sleeping ``SECONDS_PER_STEP``
after each step so that a test can send a signal while it trains. The sleep
is outside the compiled step: the numbers are those of an unthrottled run.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from conftest import make_small_config  # pylint: disable=g-import-not-at-top,wrong-import-position

from distill_jax import data  # pylint: disable=g-import-not-at-top,wrong-import-position
from distill_jax import train  # pylint: disable=g-import-not-at-top,wrong-import-position

CHECKPOINT_EVERY_STEPS = 4


def worker_config(data_dir: str, num_steps: int):
  """The config of every run in the preemption tests (the uninterrupted one too)."""
  config = make_small_config(data_dir)
  steps_per_epoch = data.num_examples('digits', 'train', data_dir) // config.train.batch_size
  return make_small_config(data_dir, **{
      'train.num_steps': num_steps, 'train.log_every_steps': 1,
      'train.eval_every_epochs': 0.0, 'train.keep_checkpoints': 3,
      'train.checkpoint_every_epochs': CHECKPOINT_EVERY_STEPS / steps_per_epoch})


def _throttled_build(build, seconds: float):
  def throttled(*args, **kwargs):
    exp = build(*args, **kwargs)
    train_fn = exp.compiled.train_fn

    def slow_train_fn(*step_args):
      out = train_fn(*step_args)
      time.sleep(seconds)
      return out
    exp.compiled.train_fn = slow_train_fn
    return exp
  return throttled


def main(workdir: str, data_dir: str, num_steps: str, seconds_per_step: str) -> None:
  train.build = _throttled_build(train.build, float(seconds_per_step))
  results = train.run(worker_config(data_dir, int(num_steps)), workdir)
  print(f'WORKER DONE preempted={results.get("preempted", False)}', flush=True)


if __name__ == '__main__':
  main(*sys.argv[1:])
