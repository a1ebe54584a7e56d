"""One process of a multi-host run on CPU (used by tests/test_multihost.py).

python tests/multihost_worker.py PROCESS_ID NUM_PROCESSES PORT DATA_DIR WORKDIR [STEPS]
runs the digits MLP config of tests/conftest.py (STEPS steps, default 6,
checkpoints every 4) with 8 // NUM_PROCESSES simulated devices per process.
"""

import os
import sys


def main(process_id: int, num_processes: int, port: int, data_dir: str, workdir: str,
         num_steps: int) -> None:
  os.environ['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={8 // num_processes}'
  os.environ['JAX_PLATFORMS'] = 'cpu'
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  from distill_jax import distributed  # pylint: disable=g-import-not-at-top
  distributed.initialize(f'127.0.0.1:{port}', num_processes, process_id)
  from conftest import make_small_config  # pylint: disable=g-import-not-at-top
  from distill_jax import train  # pylint: disable=g-import-not-at-top
  config = make_small_config(data_dir, **{'train.checkpoint_every_epochs': 0.05,
                                          'train.num_steps': num_steps})
  results = train.run(config, workdir)
  print(f'WORKER DONE preempted={results.get("preempted", False)}', flush=True)


if __name__ == '__main__':
  main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5],
       int(sys.argv[6]) if len(sys.argv) > 6 else 6)
