"""Shared fixtures of the method tests: tiny model outputs and a loss runner."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest


def _outputs(seed, shapes, num_classes=5, batch=4):
  rng = np.random.default_rng(seed)
  logits = jnp.asarray(rng.normal(size=(batch, num_classes)), jnp.float32)
  features = {name: jnp.asarray(rng.normal(size=(batch, *shape)), jnp.float32)
              for name, shape in shapes.items()}
  return logits, features


STUDENT = {'stem': (8, 8, 2), 'stage1': (8, 8, 2), 'stage2': (4, 4, 4), 'stage3': (2, 2, 8),
           'stage1_preact': (8, 8, 2), 'stage2_preact': (4, 4, 4),
           'stage3_preact': (2, 2, 8), 'pre_logits': (8,)}
TEACHER = {'stem': (8, 8, 2), 'stage1': (8, 8, 4), 'stage2': (4, 4, 4), 'stage3': (2, 2, 16),
           'stage1_preact': (8, 8, 4), 'stage2_preact': (4, 4, 4),
           'stage3_preact': (2, 2, 16), 'pre_logits': (16,)}


@pytest.fixture
def outputs():
  """``outputs(seed, shapes=None)`` -> ``(logits [4, 5], features)``; student shapes by default."""
  return lambda seed, shapes=None: _outputs(seed, shapes or STUDENT)


@pytest.fixture
def pair():
  """A student and a teacher output with RepDistiller-like feature shapes, and a batch."""
  student, teacher = _outputs(0, STUDENT), _outputs(1, TEACHER)
  batch = {'label': jnp.array([0, 1, 2, 3]), 'index': jnp.array([0, 5, 2, 7])}
  return student, teacher, batch


def _shapes(features):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), features)


@pytest.fixture
def run():
  """``run(method, student, teacher, batch, step=0, num_train=16)`` -> ``(loss, metrics, aux)``."""
  def call(method, student, teacher, batch, step=0, num_train=16):
    aux = nn.unbox(method.init_aux(jax.random.PRNGKey(0), _shapes(student[1]),
                                   _shapes(teacher[1])))
    state = nn.unbox(method.init_state(jax.random.PRNGKey(1), _shapes(student[1]),
                                       _shapes(teacher[1]), num_train=num_train))
    loss, metrics, _ = method.loss_with_state(student, teacher, batch, aux,
                                              jnp.asarray(step), state)
    return loss, metrics, aux
  return call
