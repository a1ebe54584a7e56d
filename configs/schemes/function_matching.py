"""Consistent teaching / function matching (Beyer et al., 2022) on MNIST.

The 784-800-800-10 MLP student learns 0.5 * CE + 0.5 * T^2 KL (T=20) from
hinton.py's teacher on batches that are jittered (2 px) and mixed (mixup,
alpha 1.0; cutmix too with cutmix=1.0) inside the step. view=consistent feeds
the teacher the student's exact pixels (function matching); view=clean feeds it
the un-augmented images ("fixed teacher"), view=independent its own
augmentation of the same examples.

Launch (teacher from configs/mnist/hinton.py:role=teacher):
  python -m distill_jax.main --config=configs/schemes/function_matching.py:teacher_workdir=/tmp/hinton/teacher,view=consistent \
      --workdir=/tmp/fm/consistent
Expected (experiments/schemes_table.py): consistent >= clean.
Arguments: teacher_workdir, view, mixup, cutmix, epochs, seed, temperature, runlocal.
"""

import os

from distill_jax import config_args

BASE = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'mnist', 'hinton.py')
SMOKE_TEST_ARGS = ('role=teacher', 'teacher_workdir={run0},view=consistent,cutmix=1.0',
                   'teacher_workdir={run0},view=clean')


def get_config(arg=None):
  args = config_args.parse_config_arg(arg, {
      'role': 'student', 'teacher_workdir': '', 'view': 'consistent', 'mixup': 1.0,
      'cutmix': 0.0, 'epochs': 5, 'seed': 0, 'temperature': 20.0, 'runlocal': False})
  local = ',runlocal' if args['runlocal'] else ''
  if args['role'] == 'teacher':
    return config_args.load_config_file(BASE, f'role=teacher,epochs={args["epochs"]}{local}')
  config = config_args.load_config_file(
      BASE, f'role=distill,teacher_workdir={args["teacher_workdir"]},epochs={args["epochs"]},'
      f'temperature={args["temperature"]},alpha=0.5{local}')
  config.seed = args['seed']
  config.data.augment.crop_padding = 2
  config.data.mixing.mixup_alpha = float(args['mixup'])
  config.data.mixing.cutmix_alpha = float(args['cutmix'])
  config.teacher.view = args['view']
  return config
