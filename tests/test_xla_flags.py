"""distill_jax.xla_flags: the XLA:CPU defaults added to XLA_FLAGS on import."""

import importlib.metadata
import os

import jax
import jax.numpy as jnp
from jax import lax
import pytest

from distill_jax import xla_flags

FLAG = xla_flags.CPU_DEFAULTS[0]
TESTED = xla_flags.TESTED_JAXLIB[0] + '2'


def test_adds_the_defaults_to_the_existing_flags():
  env = {'XLA_FLAGS': '--xla_force_host_platform_device_count=8'}
  assert xla_flags.apply_defaults(env, TESTED) == [FLAG]
  assert env['XLA_FLAGS'] == f'--xla_force_host_platform_device_count=8 {FLAG}'
  assert xla_flags.apply_defaults(env, TESTED) == []  # Idempotent.
  empty = {}
  xla_flags.apply_defaults(empty, TESTED)
  assert empty['XLA_FLAGS'] == FLAG


def test_a_flag_the_user_set_is_left_alone():
  env = {'XLA_FLAGS': '--xla_cpu_experimental_ynn_fusion_type=individual_dot'}
  assert xla_flags.apply_defaults(env, TESTED) == []
  assert env['XLA_FLAGS'] == '--xla_cpu_experimental_ynn_fusion_type=individual_dot'


@pytest.mark.parametrize('value', ['0', 'false', 'off'])
def test_opt_out(value):
  env = {xla_flags.OPT_OUT: value}
  assert xla_flags.apply_defaults(env, TESTED) == []
  assert 'XLA_FLAGS' not in env


def test_untested_jaxlib_gets_nothing():
  # XLA aborts on flags it does not know: only measured jaxlib versions get them.
  env = {}
  assert xla_flags.apply_defaults(env, '0.4.30') == []
  assert env == {}


def test_convolutions_leave_ynnpack_in_this_process():
  if not importlib.metadata.version('jaxlib').startswith(xla_flags.TESTED_JAXLIB):
    pytest.skip('untested jaxlib: no defaults applied')
  if 'ynn_fusion_type' not in os.environ.get('XLA_FLAGS', ''):
    pytest.skip('XLA_FLAGS does not carry the default (opted out or set by the user)')
  if jax.default_backend() != 'cpu':
    pytest.skip('CPU-only flag')
  x, w = jnp.ones((2, 8, 8, 4)), jnp.ones((3, 3, 4, 8))
  conv = lambda x, w: lax.conv_general_dilated(
      x, w, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  text = jax.jit(conv).lower(x, w).compile().as_text()
  assert ' convolution(' in text and '__ynn_fusion' not in text
