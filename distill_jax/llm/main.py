"""Command line: ``python -m distill_jax.llm.main --config=configs/llm/<file>.py[:k=v,...] --workdir=DIR``.

Trains a student language model on a teacher (``distill_jax.llm.run``):
progress lines on stdout, ``metrics.jsonl``, orbax checkpoints every
``train.checkpoint_every_steps``, ``results.json`` at the end. Rerunning the
same command resumes from the workdir's latest checkpoint; SIGTERM saves one
at the next step and exits with status 0. Any config value can be overridden
with ``--config.<key>=<value>`` (e.g. ``--config.train.num_steps=20``).
"""

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from distill_jax.llm import run

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'LM config file, optionally with ":key=value,..." arguments.',
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Run directory: config.json, metrics.jsonl, checkpoints, results.json.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  logging.set_verbosity(logging.WARNING)  # Progress is printed; keep library INFO logs quiet.
  run.run(_CONFIG.value, _WORKDIR.value)


if __name__ == '__main__':
  app.run(main)
