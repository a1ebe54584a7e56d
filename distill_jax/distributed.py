"""Multi-host start-up: ``jax.distributed.initialize`` from flags, environment or auto-detection.

Every host runs the same command. Where the cluster is described:

1. flags ``--coordinator=HOST:PORT --num_processes=N --process_id=I`` (main.py);
2. else the environment ``DISTILL_JAX_COORDINATOR``, ``DISTILL_JAX_NUM_PROCESSES``,
   ``DISTILL_JAX_PROCESS_ID``;
3. else on a Cloud TPU pod slice, under SLURM or Open MPI, JAX detects it
   (``jax.distributed.initialize()`` without arguments);
4. else a single process (nothing to initialise).

On CPU the cross-process collectives use gloo. After initialisation,
``jax.devices()`` lists every host's devices; the input pipeline reads this
process's share of each global batch (``data.train_batches(process_index=...)``)
and only process 0 writes logs, metrics and ``results.json``. Offline jobs
(the teacher-logit cache, sequence-level KD generation) split their work in
contiguous blocks (``share``) and meet at ``barrier``.
"""

import os

from absl import flags
import jax
from jax.experimental import multihost_utils

ENV_COORDINATOR = 'DISTILL_JAX_COORDINATOR'
ENV_NUM_PROCESSES = 'DISTILL_JAX_NUM_PROCESSES'
ENV_PROCESS_ID = 'DISTILL_JAX_PROCESS_ID'


def define_flags() -> None:
  """``--coordinator``, ``--num_processes``, ``--process_id`` (``initialize_from_flags``)."""
  flags.DEFINE_string('coordinator', '', 'Multi-host: HOST:PORT of process 0 (default: '
                      'environment / auto-detect).')
  flags.DEFINE_integer('num_processes', 0, 'Multi-host: number of processes.')
  flags.DEFINE_integer('process_id', -1, 'Multi-host: index of this process.')


def initialize_from_flags() -> None:
  """``initialize`` with the values of ``define_flags``'s flags."""
  f = flags.FLAGS
  initialize(f.coordinator, f.num_processes, f.process_id)


def share(num_batches: int) -> range:
  """This process's contiguous block of ``num_batches`` work batches (all on one process)."""
  index, count = jax.process_index(), jax.process_count()
  return range(index * num_batches // count, (index + 1) * num_batches // count)


def barrier(name: str) -> None:
  """Waits until every process has reached ``barrier(name)`` (no-op on one process)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def _auto_detectable() -> bool:
  """A TPU pod worker, a SLURM job step with several tasks, or Open MPI."""
  return (bool(os.environ.get('TPU_WORKER_HOSTNAMES') and ',' in os.environ['TPU_WORKER_HOSTNAMES'])
          or int(os.environ.get('SLURM_NTASKS', '1')) > 1
          or 'OMPI_COMM_WORLD_SIZE' in os.environ)


def initialize(coordinator: str = '', num_processes: int = 0, process_id: int = -1) -> None:
  """Initialises the JAX distributed system when the job has several processes.

  Args:
    coordinator: ``host:port`` of process 0 ('' = from the environment / auto).
    num_processes: processes in the job (0 = from the environment / auto).
    process_id: this process's index (-1 = from the environment / auto).

  Raises:
    ValueError: a coordinator is given without the process count and id.
  """
  coordinator = coordinator or os.environ.get(ENV_COORDINATOR, '')
  num_processes = num_processes or int(os.environ.get(ENV_NUM_PROCESSES, '0'))
  if process_id < 0:
    process_id = int(os.environ.get(ENV_PROCESS_ID, '-1'))
  if coordinator:
    if num_processes < 1 or not 0 <= process_id < num_processes:
      raise ValueError(
          f'Multi-host: coordinator {coordinator!r} needs num_processes >= 1 and 0 <= '
          f'process_id < num_processes (got {num_processes}, {process_id}); set --num_processes '
          f'and --process_id (or {ENV_NUM_PROCESSES} and {ENV_PROCESS_ID}).')
    if num_processes == 1:
      return
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')   # CPU backend only.
    jax.distributed.initialize(coordinator, num_processes=num_processes, process_id=process_id)
  elif _auto_detectable():
    jax.distributed.initialize()
