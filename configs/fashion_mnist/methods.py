"""A CPU-sized method comparison on Fashion-MNIST (real data, offline).

role=teacher  ResNet-8 (78k params), SGD 0.05, cosine, crop 2 px + flip.
role=student  a 3-stage CNN of widths 8-16-32 (6.5k params) with ``method=`` any of
              ``distill_jax.methods.recipes.METHODS``, the CRD paper's loss
              weights (T=4), 4096 CRD negatives, two-stage methods with a
              first stage of 1/8 of the epochs. The CNN has no pre-activation
              features and other channel counts than ResNet-8 (16-16-32-64),
              so AB reads the student's stages (post-ReLU, through its conv-BN
              connectors) against the teacher's pre-activations, and FSP pairs
              the layers whose channels agree (``LAYERS``).

Launch:
  python -m distill_jax.main --config=configs/fashion_mnist/methods.py:role=teacher --workdir=/tmp/fm/teacher
  python -m distill_jax.main --config=configs/fashion_mnist/methods.py:method=crd,teacher_workdir=/tmp/fm/teacher \
      --workdir=/tmp/fm/crd
``experiments/fashion_mnist_methods.py`` runs the table
(``experiments/results/fashion_mnist_methods.md`` has the measured numbers).
Arguments: role, method, teacher_workdir, epochs, seed, runlocal (2 steps of
batch 16, evaluation on 512 test images, 16 CRD negatives, for smoke tests).
"""

from distill_jax import config_args
from distill_jax import defaults
from distill_jax.methods import recipes

NUM_TRAIN = 60_000
BATCH_SIZE = 128
# Layers of the methods whose defaults do not fit this student.
LAYERS = {
    'ab': {'student_features': 'stages', 'teacher_features': 'stages_preact'},
    # One FSP matrix: student stage2 -> stage3 (16 -> 32 channels) against the
    # teacher's stage1 -> stage2 (16 -> 32).
    'fsp': {'student_features': 'stage2,stage3', 'teacher_features': 'stage1,stage2'},
}
# 2-step runs (runlocal): of the teacher in tests/test_configs.py, of the
# student with each method in tests/methods/test_<method>.py (one shared teacher).
SMOKE_TEST_ARGS = ('role=teacher',)
# The smoke runs read synthetic data in the standard tfds layout, so CI needs
# no Debian package.
FAKE_DATA = {'fashion_mnist': {'train': 512, 'test': 512}}


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
    config.method.update(LAYERS.get(args['method'], {}))
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
    if 'nce_k' in config.method:
      config.method.nce_k = 16
  return config
