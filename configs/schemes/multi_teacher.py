"""Multi-teacher distillation on MNIST: a 784-800-800-10 MLP learns from several teachers.

role=teacher trains one teacher (model=mlp: hinton.py's 1200-1200 dropout
MLP; model=mlp3: the same with three 1200-wide layers; model=cnn: the small CNN), role=student distils the MLP from all of
teachers=<workdir>+<workdir>+... with 0.5 * CE + 0.5 * T^2 KL (T=20) against
the teachers' combined soft targets (combine=weighted | confidence | log_mean;
weighted averages the teachers' T-softened distributions).

Launch:
  python -m distill_jax.main --config=configs/schemes/multi_teacher.py:role=teacher,model=mlp --workdir=/tmp/mt/t0
  python -m distill_jax.main --config=configs/schemes/multi_teacher.py:role=teacher,model=cnn --workdir=/tmp/mt/t1
  python -m distill_jax.main --config=configs/schemes/multi_teacher.py:teachers=/tmp/mt/t0+/tmp/mt/t1 \
      --workdir=/tmp/mt/student
Expected (experiments/schemes_table.py): the teachers' ensemble beats each
teacher; the student beats the MLP trained alone.
Arguments: role, model, teachers ('+'-separated workdirs), combine, epochs,
seed, temperature, runlocal.
"""

import os

from distill_jax import config_args

BASE = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'mnist', 'hinton.py')
SMOKE_TEST_ARGS = ('role=teacher,model=mlp3', 'role=teacher,model=cnn',
                   'teachers={run0}+{run1},combine=confidence')


def get_config(arg=None):
  args = config_args.parse_config_arg(arg, {
      'role': 'student', 'model': 'mlp', 'teachers': '', 'combine': 'weighted',
      'epochs': 5, 'seed': 0, 'temperature': 20.0, 'runlocal': False})
  local = ',runlocal' if args['runlocal'] else ''
  if args['role'] == 'teacher':
    config = config_args.load_config_file(BASE, f'role=teacher,epochs={args["epochs"]}{local}')
    if args['model'] == 'mlp3':
      config.student.kwargs.hidden_sizes = (1200, 1200, 1200)
    elif args['model'] != 'mlp':
      config.student.model = args['model']
      config.student.kwargs = {}
    config.seed = args['seed']
    return config
  if args['role'] != 'student':
    raise ValueError(f'role={args["role"]!r}; choose teacher or student.')
  config = config_args.load_config_file(BASE, f'role=scratch,epochs={args["epochs"]}{local}')
  config.seed = args['seed']
  config.scheme.name = 'multi_teacher'
  config.scheme.teachers = tuple(filter(None, str(args['teachers']).split('+')))
  config.scheme.combine = args['combine']
  config.scheme.combine_temperature = float(args['temperature'])
  config.method.name = 'kd'
  config.method.temperature = float(args['temperature'])
  config.method.alpha = 0.5
  return config
