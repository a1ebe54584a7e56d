"""``key=value`` config arguments and the check for unknown config keys."""

import pytest

from distill_jax import config_args
from distill_jax import defaults


def test_parse_pairs_bare_keys_and_literals():
  args = config_args.parse_config_arg(
      'pair=resnet32x4_resnet8x4,runlocal,epochs=3,temperature=4.5',
      {'pair': '', 'runlocal': False, 'epochs': 1, 'temperature': 1.0})
  assert args == {'pair': 'resnet32x4_resnet8x4', 'runlocal': True, 'epochs': 3,
                  'temperature': 4.5}


def test_parse_empty_keeps_defaults():
  assert config_args.parse_config_arg(None, {'a': 1}) == {'a': 1}
  assert config_args.parse_config_arg('', {'a': 1}) == {'a': 1}


def test_unknown_argument_lists_accepted_ones():
  with pytest.raises(ValueError, match="Unknown config argument 'epoch'.*accepts: epochs, role"):
    config_args.parse_config_arg('epoch=3', {'epochs': 1, 'role': 'x'})


def test_validate_accepts_defaults_and_free_form_subtrees():
  config = defaults.default_config()
  config.student.kwargs.hidden_sizes = (8,)
  config.method.temperature = 3.0
  defaults.validate(config)


def test_validate_names_typos_with_a_suggestion():
  config = defaults.default_config()
  config.optim.lerning_rate = 0.1
  config.train.num_epoch = 3
  with pytest.raises(ValueError) as error:
    defaults.validate(config)
  message = str(error.value)
  assert "optim.lerning_rate (did you mean 'optim.learning_rate'?)" in message
  assert "train.num_epoch (did you mean 'train.num_epochs'?)" in message


def test_load_config_file_missing():
  with pytest.raises(FileNotFoundError, match='No config file'):
    config_args.load_config_file('/nonexistent/config.py')
