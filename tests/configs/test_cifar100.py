"""configs/cifar100/crd.py: every pair x method is buildable; 2-step runs on mock CIFAR-100.

Cost: running all 13 pairs x 17 methods for 2 steps would take over an hour on
2 CPU cores (each run compiles its own step). The default suite instead checks
every cell's feature names and shapes (the errors a run would raise before
compiling), and tests/test_configs.py runs 2 steps of vgg13 -> vgg8 with kd;
``pytest -m slow`` runs 2 steps of one pair per method and of every pair with
kd (measured here: 110-215 s a cell on a loaded 2-core machine). Every method's
training code path is run for 2 steps in the default suite too, on the small
models of configs/fashion_mnist/methods.py (tests/methods/test_<method>.py).
"""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from distill_jax import checkpoint
from distill_jax import config_args
from distill_jax import methods
from distill_jax import registry
from distill_jax import train
from distill_jax.data import testing
from distill_jax.methods import recipes

CONFIG = os.path.join(os.path.dirname(__file__), '..', '..', 'configs', 'cifar100', 'crd.py')


def _pairs():
  namespace = {}
  exec(compile(open(CONFIG).read(), CONFIG, 'exec'), namespace)  # pylint: disable=exec-used
  return namespace['PAIRS']


PAIRS = _pairs()
# FSP needs equal channel counts: n/a for these pairs in the CRD paper too.
FSP_NOT_APPLICABLE = {'wrn_40_2_wrn_40_1', 'vgg13_mobilenetv2', 'resnet50_mobilenetv2',
                      'resnet50_vgg8', 'resnet32x4_shufflenetv1', 'resnet32x4_shufflenetv2',
                      'wrn_40_2_shufflenetv1'}


def _features(model_name):
  model = registry.get('models', model_name)(num_classes=100)
  x = jnp.zeros((2, 32, 32, 3))
  variables = jax.eval_shape(lambda: nn.unbox(model.init(jax.random.PRNGKey(0), x, train=False)))
  return jax.eval_shape(lambda v: model.apply(v, x, train=False), variables)[1]


@pytest.fixture(scope='module')
def features():
  names = {m for pair in PAIRS.values() for m in pair[:2]}
  return {name: _features(name) for name in names}


@pytest.mark.parametrize('pair', sorted(PAIRS))
def test_every_method_fits_the_pair(pair, features):
  teacher, student, _ = PAIRS[pair]
  for name in recipes.METHODS:
    config = config_args.load_config_file(CONFIG, f'pair={pair},method={name},teacher_workdir=x')
    method = methods.from_config(config.method)
    check = lambda: (method.init_aux(jax.random.PRNGKey(0), features[student], features[teacher]),
                     method.init_state(jax.random.PRNGKey(0), features[student],
                                       features[teacher], num_train=50_000))
    if name == 'fsp' and pair in FSP_NOT_APPLICABLE:
      with pytest.raises(ValueError, match='same number of channels'):
        jax.eval_shape(check)
    else:
      jax.eval_shape(check)


def test_recipe():
  config = config_args.load_config_file(CONFIG, 'pair=resnet32x4_shufflenetv1,method=ft,teacher_workdir=x')
  assert config.optim.learning_rate == 0.01 and config.train.batch_size == 64
  assert config.train.num_epochs == 270 and config.optim.decay_epochs == (180, 210, 240)
  assert config.method.init_steps == 30 * 781 and methods.from_config(config.method).weight == 200.0
  config = config_args.load_config_file(CONFIG, 'pair=resnet56_resnet20,method=dkd,teacher_workdir=x')
  assert (config.method.beta, config.method.warmup_steps) == (2.0, 20 * 781)
  assert config.optim.weight_decay == 5e-4 and config.optim.decay_epochs == (150, 180, 210)
  with pytest.raises(ValueError, match='pair=.*choose one of'):
    config_args.load_config_file(CONFIG, 'pair=resnet8_resnet20')


@pytest.fixture(scope='module')
def cifar_dir(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp('cifar'))
  testing.write_fake_tfds_data('cifar100', data_dir, {'train': 32, 'test': 16})
  return data_dir


@pytest.fixture(scope='module')
def teacher_dirs(cifar_dir, tmp_path_factory):
  """An initialised (untrained) teacher run per model: config.json + a checkpoint."""
  root = tmp_path_factory.mktemp('teachers')
  made = {}

  def get(pair):
    model = PAIRS[pair][0]
    if model not in made:
      config = config_args.load_config_file(CONFIG, f'pair={pair},role=teacher,runlocal')
      config.data.data_dir = cifar_dir
      workdir = str(root / model)
      exp = train.build(config)
      os.makedirs(workdir)
      checkpoint.write_config(workdir, config)
      manager = checkpoint.make_manager(workdir, 1)
      checkpoint.save(manager, exp.compiled.init_fn(jax.random.PRNGKey(0)))
      manager.wait_until_finished()
      manager.close()
      made[model] = workdir
    return made[model]
  return get


def _smoke(pair, method, cifar_dir, teacher_dirs, tmp_path):
  config = config_args.load_config_file(
      CONFIG, f'pair={pair},method={method},teacher_workdir={teacher_dirs(pair)},runlocal')
  config.data.data_dir = cifar_dir
  results = train.run(config, str(tmp_path / 'run'))
  assert results['steps'] == 2 and results['eval']['examples'] == 16


@pytest.mark.slow
@pytest.mark.parametrize('method', ['crd', 'ft'])
def test_two_steps(method, cifar_dir, teacher_dirs, tmp_path):
  _smoke('resnet56_resnet20', method, cifar_dir, teacher_dirs, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize('method', recipes.METHODS)
def test_two_steps_every_method(method, cifar_dir, teacher_dirs, tmp_path):
  _smoke('resnet56_resnet20', method, cifar_dir, teacher_dirs, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize('pair', sorted(PAIRS))
def test_two_steps_every_pair(pair, cifar_dir, teacher_dirs, tmp_path):
  _smoke(pair, 'kd', cifar_dir, teacher_dirs, tmp_path)
