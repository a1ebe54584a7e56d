"""Test set-up: 8 simulated CPU devices, as the design asks for every sharded test."""

import os

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import pytest


@pytest.fixture(scope='session')
def data_dir(tmp_path_factory):
  """One tfds data_dir for the whole session (offline builders prepare into it)."""
  return str(tmp_path_factory.mktemp('tensorflow_datasets'))
