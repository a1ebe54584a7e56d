"""A CPU-sized method comparison on Fashion-MNIST (real data, offline).

role=teacher  ResNet-8 (78k params), SGD 0.05, cosine, crop 2 px + flip.
role=student  a 3-stage CNN of widths 8-16-32 (6.5k params) with ``method=`` any of
              ``distill_jax.methods.recipes.METHODS``, the CRD paper's loss
              weights (T=4), 4096 CRD negatives, two-stage methods with a
              first stage of 1/8 of the epochs.

Launch:
  python -m distill_jax.main --config=configs/fashion_mnist/methods.py:role=teacher --workdir=/tmp/fm/teacher
  python -m distill_jax.main --config=configs/fashion_mnist/methods.py:method=crd,teacher_workdir=/tmp/fm/teacher \
      --workdir=/tmp/fm/crd
``experiments/fashion_mnist_methods.py`` runs the table
(``experiments/results/fashion_mnist_methods.md`` has the measured numbers).
Arguments: role, method, teacher_workdir, epochs, seed, runlocal.
"""

from distill_jax import config_args
from distill_jax import defaults
from distill_jax.methods import recipes

NUM_TRAIN = 60_000
BATCH_SIZE = 128
# 2-step runs in tests/test_configs.py (the other methods' code paths are the
# same config edits; tests/configs/test_cifar100.py runs every method, slow).
SMOKE_TEST_ARGS = ('role=teacher', 'method=crd,teacher_workdir={run0}')
# The smoke runs read synthetic data in the standard tfds layout, so CI needs
# no Debian package (CRD's 4096 negatives need more rows than that).
FAKE_DATA = {'fashion_mnist': {'train': 8192, 'test': 512}}


def get_config(arg=None):
  args = config_args.parse_config_arg(arg, {
      'role': 'student', 'method': 'kd', 'teacher_workdir': '', 'epochs': 1,
      'seed': 0, 'runlocal': False})
  config = defaults.default_config()
  config.seed = args['seed']
  config.data.name = 'fashion_mnist'
  config.data.augment.crop_padding = 2
  config.data.augment.flip = True
  config.train.batch_size = BATCH_SIZE
  config.train.eval_batch_size = 1000
  config.train.log_every_steps = 100
  config.train.num_epochs = float(args['epochs'])
  config.optim.learning_rate = 0.05
  config.optim.weight_decay = 5e-4
  config.optim.schedule = 'cosine'
  if args['role'] == 'teacher':
    config.student.model = 'resnet8'
  elif args['role'] == 'student':
    if not args['teacher_workdir']:
      raise ValueError('role=student needs teacher_workdir=<the teacher run\'s workdir>.')
    config.student.model = 'cnn'
    config.student.kwargs.widths = (8, 16, 32)
    config.teacher.workdir = args['teacher_workdir']
    config.method.update(recipes.repdistiller(
        args['method'], steps_per_epoch=NUM_TRAIN // BATCH_SIZE,
        init_epochs=args['epochs'] / 8, dkd_warmup_epochs=args['epochs'] / 8, nce_k=4096))
  else:
    raise ValueError(f'role={args["role"]!r}; choose teacher or student.')
  if args['runlocal']:
    config.train.num_steps = 2
    config.train.batch_size = 16
    config.train.log_every_steps = 1
    # Evaluate on 512 test images (same code path, a 20th of the eval time).
    config.data.eval_split = 'test[:512]'
    config.train.eval_batch_size = 256
    if 'init_steps' in config.method:
      config.method.init_steps = 1
  return config
