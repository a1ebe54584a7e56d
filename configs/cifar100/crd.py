"""CRD paper (Tian et al., ICLR 2020) CIFAR-100 table: 13 teacher -> student pairs x methods.

One config for every cell: ``pair=<teacher>_<student>`` (see ``PAIRS``) and
``method=`` any of ``distill_jax.methods.recipes.METHODS`` (``ce`` = the student
trained alone, ``crd_kd`` = CRD + KD), with the paper's recipe: SGD momentum
0.9, weight decay 5e-4, batch 64, 240 epochs, lr 0.05 (0.01 for MobileNetV2 and
the ShuffleNets), x0.1 at epochs 150/180/210, random crop (4 px) + flip, T=4,
and RepDistiller's per-method loss weights (the methods' defaults). FT, AB and
FSP add their 30 initialisation epochs in front (the decay epochs shift with
them). DKD uses mdistiller's per-pair beta and 20 warm-up epochs.

Launch (teacher first; the student reads its workdir):
  python -m distill_jax.main --config=configs/cifar100/crd.py:pair=resnet32x4_resnet8x4,role=teacher \
      --workdir=/tmp/crd/resnet32x4
  python -m distill_jax.main --config=configs/cifar100/crd.py:pair=resnet32x4_resnet8x4,method=crd,teacher_workdir=/tmp/crd/resnet32x4 \
      --workdir=/tmp/crd/resnet32x4_resnet8x4_crd
``experiments/crd_cifar100.py`` runs a slice of the table and writes it next to
the published numbers. Expected (paper, top-1 %): resnet32x4 -> resnet8x4 CRD
75.51, KD 73.33, student alone 72.50 (mean of 5 runs in the CRD paper).
Arguments: pair, method, role (teacher | student), teacher_workdir, epochs,
seed, runlocal (2 steps of batch 16, tiny memory bank, for smoke tests).
Needs CIFAR-100 as a standard tfds data set in ``config.data.data_dir``.
"""

from distill_jax import config_args
from distill_jax import defaults
from distill_jax.methods import recipes

# name -> (teacher, student, DKD beta (mdistiller)).
PAIRS = {
    'wrn_40_2_wrn_16_2': ('wrn_40_2', 'wrn_16_2', 6.0),
    'wrn_40_2_wrn_40_1': ('wrn_40_2', 'wrn_40_1', 6.0),
    'resnet56_resnet20': ('resnet56', 'resnet20', 2.0),
    'resnet110_resnet20': ('resnet110', 'resnet20', 2.0),
    'resnet110_resnet32': ('resnet110', 'resnet32', 2.0),
    'resnet32x4_resnet8x4': ('resnet32x4', 'resnet8x4', 8.0),
    'vgg13_vgg8': ('vgg13', 'vgg8', 6.0),
    'vgg13_mobilenetv2': ('vgg13', 'mobilenetv2', 6.0),
    'resnet50_mobilenetv2': ('resnet50', 'mobilenetv2', 8.0),
    'resnet50_vgg8': ('resnet50', 'vgg8', 8.0),
    'resnet32x4_shufflenetv1': ('resnet32x4', 'shufflenetv1', 6.0),
    'resnet32x4_shufflenetv2': ('resnet32x4', 'shufflenetv2', 6.0),
    'wrn_40_2_shufflenetv1': ('wrn_40_2', 'shufflenetv1', 6.0),
}
SMALL_LR_STUDENTS = ('mobilenetv2', 'shufflenetv1', 'shufflenetv2')
NUM_TRAIN = 50_000
BATCH_SIZE = 64
EPOCHS = 240
INIT_EPOCHS = 30
DECAY_EPOCHS = (150, 180, 210)
# 2-step runs in tests/test_configs.py; the full pair x method matrix is in
# tests/configs/test_cifar100.py.
SMOKE_TEST_ARGS = ('pair=vgg13_vgg8,role=teacher',
                   'pair=vgg13_vgg8,method=kd,teacher_workdir={run0}')
FAKE_DATA = {'cifar100': {'train': 64, 'test': 32}}


def get_config(arg=None):
  args = config_args.parse_config_arg(arg, {
      'pair': 'resnet32x4_resnet8x4', 'method': 'kd', 'role': 'student',
      'teacher_workdir': '', 'epochs': EPOCHS, 'seed': 0, 'runlocal': False})
  if args['pair'] not in PAIRS:
    raise ValueError(f'pair={args["pair"]!r}; choose one of {", ".join(PAIRS)}.')
  if args['role'] not in ('teacher', 'student'):
    raise ValueError(f'role={args["role"]!r}; choose teacher or student.')
  teacher, student, dkd_beta = PAIRS[args['pair']]
  config = defaults.default_config()
  config.seed = args['seed']
  config.data.name = 'cifar100'
  config.data.augment.crop_padding = 4
  config.data.augment.flip = True
  config.train.batch_size = BATCH_SIZE
  config.train.eval_batch_size = 500
  config.train.log_every_steps = 200
  config.optim.name = 'sgd'
  config.optim.momentum = 0.9
  config.optim.weight_decay = 5e-4
  config.optim.schedule = 'step'
  config.optim.decay_factor = 0.1

  epochs, shift = float(args['epochs']), 0.0
  steps_per_epoch = NUM_TRAIN // BATCH_SIZE
  if args['role'] == 'teacher':
    config.student.model = teacher
    config.optim.learning_rate = 0.05
  else:
    if not args['teacher_workdir']:
      raise ValueError('role=student needs teacher_workdir=<the teacher run\'s workdir>.')
    config.student.model = student
    config.teacher.workdir = args['teacher_workdir']
    config.optim.learning_rate = 0.01 if student in SMALL_LR_STUDENTS else 0.05
    init_epochs = INIT_EPOCHS * epochs / EPOCHS
    method = recipes.repdistiller(
        args['method'], steps_per_epoch=steps_per_epoch, init_epochs=init_epochs,
        dkd_beta=dkd_beta, dkd_warmup_epochs=20 * epochs / EPOCHS)
    config.method.update(method)
    if args['method'] in recipes.TWO_STAGE:
      shift = init_epochs
  config.train.num_epochs = epochs + shift
  config.optim.decay_epochs = tuple(e * epochs / EPOCHS + shift for e in DECAY_EPOCHS)

  if args['runlocal']:
    config.train.num_steps = 2
    config.train.batch_size = 16
    config.train.eval_batch_size = 16
    config.train.log_every_steps = 1
    if 'init_steps' in config.method:
      config.method.init_steps = 1
    if 'nce_k' in config.method:
      config.method.nce_k = 16
  return config
