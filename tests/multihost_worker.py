"""One process of a multi-host run on CPU (used by tests/test_multihost.py).

python tests/multihost_worker.py PROCESS_ID NUM_PROCESSES PORT DATA_DIR WORKDIR [STEPS [LM_TEACHER [EXACT]]]
runs the digits MLP config of tests/conftest.py (STEPS steps, default 6,
checkpoints every 4) with 8 // NUM_PROCESSES simulated devices per process;
with LM_TEACHER (a .gguf file) the runlocal LM config of configs/llm/smollm2.py
on that teacher instead (DATA_DIR unused; EXACT=1: sharding.mode=shard_map with
reduce_in_order, whose results do not depend on the process layout).
"""

import os
import sys


LM_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'configs', 'llm',
                         'smollm2.py')


def lm_config(teacher: str, num_steps: int, exact: bool = False):
  """The LM run of the multi-host tests (the 1-process reference too)."""
  from distill_jax import config_args  # pylint: disable=g-import-not-at-top
  config = config_args.load_config_file(LM_CONFIG, f'runlocal,teacher={teacher}')
  config.train.num_steps = num_steps
  config.train.checkpoint_every_steps = 4
  if exact:
    config.sharding.mode = 'shard_map'
    config.sharding.reduce_in_order = True
  return config


def main(process_id: int, num_processes: int, port: int, data_dir: str, workdir: str,
         num_steps: int, lm_teacher: str = '', exact: str = '0') -> None:
  os.environ['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={8 // num_processes}'
  os.environ['JAX_PLATFORMS'] = 'cpu'
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  from distill_jax import distributed  # pylint: disable=g-import-not-at-top
  distributed.initialize(f'127.0.0.1:{port}', num_processes, process_id)
  from conftest import make_small_config  # pylint: disable=g-import-not-at-top
  from distill_jax import train  # pylint: disable=g-import-not-at-top
  if lm_teacher:
    config = lm_config(lm_teacher, num_steps, exact == '1')
  else:
    config = make_small_config(data_dir, **{'train.checkpoint_every_epochs': 0.05,
                                            'train.num_steps': num_steps})
  results = train.run(config, workdir)
  print(f'WORKER DONE preempted={results.get("preempted", False)}', flush=True)


if __name__ == '__main__':
  main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5],
       int(sys.argv[6]) if len(sys.argv) > 6 else 6, *sys.argv[7:9])
