"""Command line: ``python -m distill_jax.main --config=configs/<file>.py[:k=v,...] --workdir=DIR``.

Any config value can also be overridden with ``--config.<key>=<value>``,
e.g. ``--config.train.num_epochs=2``. Multi-host jobs run the same command on
every host, with ``--coordinator=HOST:PORT --num_processes=N --process_id=I``
(or the environment / TPU-SLURM-MPI auto-detection of ``distributed.py``).
"""

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from distill_jax import distributed
from distill_jax import train

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Experiment config file, optionally with ":key=value,..." arguments.',
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Run directory: config.json, metrics.jsonl, checkpoints, results.json.')
distributed.define_flags()
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  logging.set_verbosity(logging.WARNING)  # Progress is printed; keep library INFO logs quiet.
  distributed.initialize_from_flags()
  train.run(_CONFIG.value, _WORKDIR.value)


if __name__ == '__main__':
  app.run(main)
