"""Hinton, Vinyals & Dean (2015), section 3: MNIST, one config for the three runs.

role=teacher  784-1200-1200-10 MLP, dropout (input 0.2, hidden 0.5), each
              unit's incoming weights kept at L2 norm <= max_norm (3.5),
              inputs jittered by up to 2 px. Paper: 67 test errors.
role=scratch  784-800-800-10 MLP, no regularisation. Paper: 146 test errors.
role=distill  the same student, trained on the teacher's soft targets at
              T=20 plus the labels: 0.5 * CE + 0.5 * T^2 KL. Paper: 74 test
              errors. (The paper found a lower label weight best; here alpha=0.1
              gave 184 errors after 60 epochs, alpha=0.5 is the default.)

Launch (the teacher first; the distilled student reads its workdir):
  python -m distill_jax.main --config=configs/mnist/hinton.py:role=teacher --workdir=/tmp/hinton/teacher
  python -m distill_jax.main --config=configs/mnist/hinton.py:role=scratch --workdir=/tmp/hinton/scratch
  python -m distill_jax.main --config=configs/mnist/hinton.py:role=distill,teacher_workdir=/tmp/hinton/teacher \
      --workdir=/tmp/hinton/distill
``experiments/hinton_mnist.py`` runs all three and writes the table.
Arguments: role, epochs, teacher_workdir (needed by distill; with scratch the
teacher is only evaluated beside the student), temperature, alpha, max_norm
(the teacher's; 0 = off), seed, runlocal (2 steps, for smoke tests).
"""

from distill_jax import config_args
from distill_jax import defaults

ROLES = ('teacher', 'scratch', 'distill')
# Runs of tests/test_configs.py (with runlocal added); {run0} = the first run's workdir.
SMOKE_TEST_ARGS = ('role=teacher', 'role=scratch,teacher_workdir={run0}',
                   'role=distill,teacher_workdir={run0}')


def get_config(arg=None):
  args = config_args.parse_config_arg(arg, {
      'role': 'teacher', 'epochs': 60, 'teacher_workdir': '', 'temperature': 20.0,
      'alpha': 0.5, 'max_norm': 3.5, 'seed': 0, 'runlocal': False})
  if args['role'] not in ROLES:
    raise ValueError(f'role={args["role"]!r}; choose one of {ROLES}.')
  config = defaults.default_config()
  config.seed = args['seed']
  config.data.name = 'mnist'
  config.train.batch_size = 128
  config.train.num_epochs = float(args['epochs'])
  config.train.eval_batch_size = 1000
  config.train.log_every_steps = 200
  config.optim.name = 'sgd'
  config.optim.learning_rate = 0.05
  config.optim.momentum = 0.9
  config.optim.schedule = 'cosine'

  config.student.model = 'mlp'
  if args['role'] == 'teacher':
    config.student.kwargs.hidden_sizes = (1200, 1200)
    config.student.kwargs.input_dropout_rate = 0.2
    config.student.kwargs.dropout_rate = 0.5
    config.data.augment.crop_padding = 2
    config.optim.max_norm = float(args['max_norm'])
  else:
    config.student.kwargs.hidden_sizes = (800, 800)
  if args['role'] == 'distill' and not args['teacher_workdir']:
    raise ValueError('role=distill needs teacher_workdir=<the teacher run\'s workdir>.')
  if args['role'] != 'teacher':
    # For the scratch student the teacher is only evaluated (agreement, KL).
    config.teacher.workdir = args['teacher_workdir']
  if args['role'] == 'distill':
    config.method.name = 'kd'
    config.method.temperature = float(args['temperature'])
    config.method.alpha = float(args['alpha'])

  if args['runlocal']:
    config.train.num_steps = 2
    config.train.batch_size = 64
    config.train.log_every_steps = 1
  return config
