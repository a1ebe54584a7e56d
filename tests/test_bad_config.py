"""Bad configs: one clear error naming the key, the value and what is allowed,
before compiling, and no workdir left behind."""

import pytest

from distill_jax import data
from distill_jax import train


CASES = {
    'unknown model': ({'student.model': 'mlpx'}, ValueError,
                      "Unknown name 'mlpx'.*Registered models: .*mlp"),
    'unknown method': ({'method.name': 'kdd'}, ValueError,
                       "Unknown name 'kdd'.*Registered methods: .*ce"),
    'unknown data set': ({'data.name': 'mnist2'}, ValueError,
                         "Unknown name 'mnist2'.*Registered datasets: .*digits"),
    'config key typo': ({'optim.lerning_rate': 0.1}, ValueError,
                        "optim.lerning_rate \\(did you mean 'optim.learning_rate'\\?\\)"),
    'model kwarg typo': ({'student.kwargs.hiden_sizes': (8,)}, ValueError,
                         "model 'mlp' does not accept the arguments.*hiden_sizes"),
    'batch not divisible by devices': ({'train.batch_size': 12}, ValueError,
                                       'train.batch_size=12 is not divisible by the 8 batch shards'),
    'method needs a teacher': ({'method.name': 'kd'}, ValueError,
                               "Method 'kd' needs a teacher: set config.teacher.workdir"),
    'no checkpoints kept': ({'train.keep_checkpoints': 0}, ValueError,
                            'train.keep_checkpoints=0 must be an integer >= 1'),
    'empty batch': ({'train.batch_size': 0}, ValueError,
                    'train.batch_size=0 must be an integer >= 1'),
    'negative batch': ({'train.batch_size': -8}, ValueError,
                       'train.batch_size=-8 must be an integer >= 1'),
    'eval split typo': ({'data.eval_split': 'tset'}, ValueError,
                        "data.eval_split='tset': data set 'digits' has no split 'tset'; its "
                        "splits are 'train', 'test'"),
    'train split typo': ({'data.train_split': 'tain'}, ValueError,
                         "data.train_split='tain': data set 'digits' has no split 'tain'"),
    'empty eval batch': ({'train.eval_batch_size': 0}, ValueError,
                         'train.eval_batch_size=0 must be an integer >= 1'),
    'no log cadence': ({'train.log_every_steps': 0}, ValueError,
                       'train.log_every_steps=0 must be an integer >= 1'),
    'negative steps': ({'train.num_steps': -5}, ValueError,
                       'train.num_steps=-5 must be an integer >= 0'),
    'nothing to train': ({'train.num_steps': 0, 'train.num_epochs': 0.0}, ValueError,
                         'nothing to train; set train.num_steps or train.num_epochs > 0'),
    'negative cadence': ({'train.eval_every_epochs': -1.0}, ValueError,
                         'train.eval_every_epochs=-1.0 must be a number >= 0.0'),
    'unknown dtype': ({'student.dtype': 'float8'}, ValueError,
                      "student.dtype='float8': the compute dtype is one of float32, bfloat16"),
    'bad hyper-parameter': ({'method.name': 'kd', 'method.temperature': 0.0}, ValueError,
                            'kd.temperature must be > 0'),
    'underflowing temperature': ({'method.name': 'kd', 'method.temperature': 1e-30}, ValueError,
                                 'kd.temperature=1e-30 is below 0.01: logits / T would overflow'),
    'missing data set': ({'data.name': 'cifar10'}, FileNotFoundError, 'cifar10'),
    'language-model method': ({'method.name': 'token_kl'}, ValueError,
                              "'token_kl' is a language_model method but config.task is "
                              "'classification': choose one of the classification methods"),
    'language-model key': ({'on_policy.lam': 0.5}, ValueError,
                           "on_policy.lam set, but config.task 'classification' does not read it"),
    'teacher run missing': ({'method.name': 'kd', 'teacher.workdir': '/nonexistent/teacher'},
                            FileNotFoundError, "No config.json in '/nonexistent/teacher'"),
}


@pytest.mark.parametrize('overrides, error, message', CASES.values(), ids=CASES.keys())
def test_bad_config_fails_before_the_workdir(overrides, error, message, data_dir,
                                             small_config, tmp_path):
  workdir = tmp_path / 'run'
  with pytest.raises(error, match=message):
    train.run(small_config(data_dir, **overrides), str(workdir))
  assert not workdir.exists()


def test_missing_data_set_names_the_data_dir(data_dir, small_config, tmp_path):
  with pytest.raises(data.DatasetUnavailableError) as error:
    train.run(small_config(data_dir, **{'data.name': 'cifar100'}), str(tmp_path / 'run'))
  assert data_dir in str(error.value)


def test_missing_workdir_parent(data_dir, small_config, tmp_path):
  workdir = tmp_path / 'no' / 'such' / 'run'
  with pytest.raises(FileNotFoundError, match="parent folder .* does not exist"):
    train.run(small_config(data_dir), str(workdir))
  assert not workdir.parent.exists()
