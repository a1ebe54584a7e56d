"""Be your own teacher (Zhang et al., 2019) on MNIST: exits of a 784-800-800-10 MLP learn from its top.

An exit head (pool -> 800-wide bottleneck -> classifier) sits on the first
hidden layer; it learns 0.7 * CE + 0.3 * T^2 KL(deepest^T || exit^T) at T=3
plus 1e-6 * ||bottleneck - pre_logits||^2 (BYOT's feature hint); the deepest
classifier learns from the labels. Only the MLP itself is exported.

Launch:
  python -m distill_jax.main --config=configs/schemes/deep_to_shallow.py --workdir=/tmp/schemes/byot
Expected (experiments/schemes_table.py, 5 epochs): the deepest classifier
about matches the MLP trained alone; the exit is weaker, the ensemble close to
the deepest.
Arguments: epochs, seed, model (mlp | cnn: exits on every stage but the last),
temperature, runlocal (2 steps).
"""

import os

from distill_jax import config_args

BASE = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'mnist', 'hinton.py')
SMOKE_TEST_ARGS = ('model=mlp', 'model=cnn')


def get_config(arg=None):
  args = config_args.parse_config_arg(arg, {
      'epochs': 5, 'seed': 0, 'model': 'mlp', 'temperature': 3.0, 'runlocal': False})
  config = config_args.load_config_file(
      BASE, f'role=scratch,epochs={args["epochs"]}' + (',runlocal' if args['runlocal'] else ''))
  config.seed = args['seed']
  if args['model'] != 'mlp':
    config.student.model = args['model']
    config.student.kwargs = {}
  config.scheme.name = 'deep_to_shallow'
  config.method.name = 'kd'
  config.method.temperature = float(args['temperature'])
  config.method.alpha = 0.7
  return config
