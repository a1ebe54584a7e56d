"""Deep mutual learning (Zhang et al., 2018) on MNIST: two 784-800-800-10 MLPs teach each other.

Each peer minimises 0.5 * CE + 0.5 * T^2 KL(p_other^T || p_self^T) at T=1
(the paper's CE + KL, halved), both trained from scratch together in one step
(the recipe of configs/mnist/hinton.py's student: SGD 0.05 cosine, batch 128).

Launch:
  python -m distill_jax.main --config=configs/schemes/dml.py --workdir=/tmp/schemes/dml
Expected (experiments/schemes_table.py, 5 epochs): each peer beats the same
MLP trained alone (role=scratch of hinton.py), the ensemble beats both.
Arguments: epochs, seed, peer (the second peer's model: mlp = a copy of the
student, cnn), temperature, runlocal (2 steps).
"""

import os

from distill_jax import config_args

BASE = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'mnist', 'hinton.py')
SMOKE_TEST_ARGS = ('seed=0',)


def get_config(arg=None):
  args = config_args.parse_config_arg(arg, {
      'epochs': 5, 'seed': 0, 'peer': 'mlp', 'temperature': 1.0, 'runlocal': False})
  config = config_args.load_config_file(
      BASE, f'role=scratch,epochs={args["epochs"]}' + (',runlocal' if args['runlocal'] else ''))
  config.seed = args['seed']
  config.scheme.name = 'dml'
  config.scheme.peers = (args['peer'],)
  config.method.name = 'kd'
  config.method.temperature = float(args['temperature'])
  config.method.alpha = 0.5
  return config
