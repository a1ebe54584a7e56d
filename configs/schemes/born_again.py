"""Born-again networks (Furlanello et al., 2018) on MNIST: 784-800-800-10 MLP generations.

Generation 0 is the MLP trained from the labels (hinton.py role=scratch), or
an existing run (first_generation=<workdir>); generation k is the same MLP
distilled from generation k-1 (0.5 * CE + 0.5 * T^2 KL, T=20). One command runs
the chain in <workdir>/gen<k> and evaluates every generation and the ensemble
of generations 1..k.

Launch:
  python -m distill_jax.main --config=configs/schemes/born_again.py --workdir=/tmp/schemes/ban
Expected (experiments/schemes_table.py, 5 epochs a generation): later
generations at least match generation 0; the ensemble beats each generation.
Arguments: epochs, seed, generations, first_generation, temperature, runlocal.
"""

import os

from distill_jax import config_args

BASE = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'mnist', 'hinton.py')
SMOKE_TEST_ARGS = ('generations=1',)  # gen0 -> gen1 and the ensemble (chains: test_born_again)


def get_config(arg=None):
  args = config_args.parse_config_arg(arg, {
      'epochs': 5, 'seed': 0, 'generations': 3, 'first_generation': '',
      'temperature': 20.0, 'runlocal': False})
  config = config_args.load_config_file(
      BASE, f'role=scratch,epochs={args["epochs"]}' + (',runlocal' if args['runlocal'] else ''))
  config.seed = args['seed']
  config.scheme.name = 'born_again'
  config.scheme.generations = args['generations']
  config.scheme.first_generation = args['first_generation']
  config.method.name = 'kd'
  config.method.temperature = float(args['temperature'])
  config.method.alpha = 0.5
  return config
