"""Shared fixtures of the method tests (one file per method, ``test_<name>.py``).

* ``pair``, ``outputs``: tiny model outputs with RepDistiller-like feature shapes;
  ``logits_example``: two rows of 3-class logits;
* ``init``, ``run``: a method's aux params and state, one call of its loss (with
  ``identity_connectors=True`` every connector is an identity-like map, so that
  the expected value can be computed by hand);
* ``ref``: NumPy references (softmax CE, KL, batch norm, ...) for those values;
* ``distiller_loss``, ``zero_teacher_gradient``, ``distiller_hyper_parameters``,
  ``two_stages``: checks every method of its kind must pass;
* ``fashion_run``: 2 training steps of a method from
  ``configs/fashion_mnist/methods.py`` (``runlocal``) on synthetic Fashion-MNIST,
  all sharing one session-scoped 2-step teacher run.
"""

import dataclasses
import json
import os
import runpy

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax import config_args
from distill_jax import registry
from distill_jax import train
from distill_jax.data import testing


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
def logits_example():
  """``(student [2, 3], teacher [2, 3], labels [2])`` NumPy logits and labels."""
  return (np.array([[2.0, 0.0, -1.0], [0.5, 0.5, 1.0]], np.float32),
          np.array([[3.0, 1.0, 0.0], [0.0, 2.0, 0.0]], np.float32), np.array([0, 1], np.int32))


@pytest.fixture
def pair():
  """A student and a teacher output with RepDistiller-like feature shapes, and a batch."""
  student, teacher = _outputs(0, STUDENT), _outputs(1, TEACHER)
  batch = {'label': jnp.array([0, 1, 2, 3]), 'index': jnp.array([0, 5, 2, 7])}
  return student, teacher, batch


def _shapes(features):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), features)


def _identity_leaf(path, leaf):
  """Conv / dense kernels: identity on the first ``min(C_in, C_out)`` channels at
  the window's centre; biases 0, norm scales 1; other params (VID's variance) kept."""
  name = path[-1].key
  if name == 'kernel':
    *window, c_in, c_out = leaf.shape
    kernel = np.zeros(leaf.shape, np.float32)
    diagonal = np.arange(min(c_in, c_out))
    kernel[tuple(k // 2 for k in window) + (diagonal, diagonal)] = 1.0
    return jnp.asarray(kernel)
  if name == 'bias':
    return jnp.zeros_like(leaf)
  if name == 'scale':
    return jnp.ones_like(leaf)
  return leaf


@pytest.fixture
def init():
  """``init(method, student, teacher, num_train=16, identity_connectors=False)`` ->
  ``(aux, state)``, unboxed, from keys 0 and 1."""
  def call(method, student, teacher, num_train=16, identity_connectors=False):
    aux = nn.unbox(method.init_aux(jax.random.PRNGKey(0), _shapes(student[1]),
                                   _shapes(teacher[1])))
    if identity_connectors:
      aux = jax.tree_util.tree_map_with_path(_identity_leaf, aux)
    state = nn.unbox(method.init_state(jax.random.PRNGKey(1), _shapes(student[1]),
                                       _shapes(teacher[1]), num_train=num_train))
    return aux, state
  return call


@pytest.fixture
def run(init):
  """``run(method, student, teacher, batch, step=0, num_train=16, identity_connectors=False)``
  -> ``(loss, metrics, aux)``."""
  def call(method, student, teacher, batch, step=0, num_train=16, identity_connectors=False):
    aux, state = init(method, student, teacher, num_train, identity_connectors)
    loss, metrics, _ = method.loss_with_state(student, teacher, batch, aux,
                                              jnp.asarray(step), state)
    return loss, metrics, aux
  return call


class NumpyReference:
  """float64 NumPy versions of what the methods compute, for hand-computed values."""

  @staticmethod
  def log_softmax(x):
    x = np.asarray(x, np.float64)
    shifted = x - x.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))

  @classmethod
  def cross_entropy(cls, logits, labels):
    """Mean negative log-likelihood of int ``labels``."""
    labels = np.asarray(labels)
    return -np.mean(cls.log_softmax(logits)[np.arange(len(labels)), labels])

  @classmethod
  def kd_kl(cls, student, teacher, temperature):
    """Batch mean of ``T**2 KL(p_teacher^T || p_student^T)``."""
    log_p_s = cls.log_softmax(np.asarray(student) / temperature)
    log_p_t = cls.log_softmax(np.asarray(teacher) / temperature)
    return temperature**2 * np.mean(np.sum(np.exp(log_p_t) * (log_p_t - log_p_s), -1))

  @staticmethod
  def batch_norm(x, eps=1e-5):
    """Batch statistics over every axis but the channels, scale 1, bias 0."""
    x = np.asarray(x, np.float64)
    axes = tuple(range(x.ndim - 1))
    return (x - x.mean(axes)) / np.sqrt(x.var(axes) + eps)

  @staticmethod
  def channels(x, count):
    """The first ``count`` channels of ``x``, zero-padded: an identity connector."""
    x = np.asarray(x, np.float64)[..., :count]
    return np.concatenate([x, np.zeros((*x.shape[:-1], count - x.shape[-1]))], -1)

  @staticmethod
  def l2_normalize(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.fixture
def ref():
  """:class:`NumpyReference`."""
  return NumpyReference


@pytest.fixture
def distiller_loss(pair, run):
  """``distiller_loss(method, term, step=0, identity_connectors=False)`` runs a
  ``common.Distiller`` on ``pair`` and checks that its loss is ``ce_weight * CE +
  kd_weight * T**2 KL + weight * term`` (CE and KL computed here) and that
  ``metrics[name]`` is ``term``; returns ``(loss, metrics)``."""
  def check(method, term, step=0, identity_connectors=False, rtol=1e-5):
    student, teacher, batch = pair
    loss, metrics, _ = run(method, student, teacher, batch, step=step,
                           identity_connectors=identity_connectors)
    ce = NumpyReference.cross_entropy(student[0], batch['label'])
    kl = NumpyReference.kd_kl(student[0], teacher[0], method.temperature)
    np.testing.assert_allclose(metrics['ce'], ce, rtol=1e-5)
    np.testing.assert_allclose(metrics['kl'], kl, rtol=1e-4)
    np.testing.assert_allclose(metrics[method.method_name], term, rtol=rtol)
    np.testing.assert_allclose(
        loss, method.ce_weight * ce + method.kd_weight * kl + method.weight * term, rtol=rtol)
    return loss, metrics
  return check


@pytest.fixture
def zero_teacher_gradient(run):
  """``zero_teacher_gradient(method, student, teacher, batch)``: the loss is finite
  and its gradient w.r.t. the teacher's logits and features is exactly 0."""
  def check(method, student, teacher, batch):
    assert np.isfinite(run(method, student, teacher, batch)[0])
    grad = jax.grad(lambda t: run(method, student, t, batch)[0])(teacher)
    for leaf in jax.tree.leaves(grad):
      np.testing.assert_array_equal(leaf, 0.0)
  return check


BAD_DISTILLER_VALUES = (('weight', 'ten', 'must be a number'), ('weight', -1.0, 'must be >= 0'),
                        ('temperature', 0.0, 'must be > 0'))


@pytest.fixture
def distiller_hyper_parameters():
  """``distiller_hyper_parameters(name, weight)``: method ``name`` is a registered
  frozen dataclass with RepDistiller's defaults (``weight``, CE weight 1, no KD,
  T = 4) and rejects bad weights and temperatures with a message naming them."""
  def check(name, weight):
    cls = registry.get('methods', name)
    assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen
    method = cls()
    assert (method.weight, method.ce_weight, method.kd_weight, method.temperature) == (
        weight, 1.0, 0.0, 4.0)
    for field, value, message in BAD_DISTILLER_VALUES:
      with pytest.raises(ValueError, match=f'{name}.{field} {message}'):
        cls(**{field: value})
  return check


@pytest.fixture
def two_stages(pair, run):
  """``two_stages(method, metric)``: the loss of a two-stage method at its last
  first-stage step (``init_steps - 1``) is ``metrics[metric]`` alone, and it
  changes at step ``init_steps``; returns the first stage's metrics."""
  def check(method, metric):
    first, metrics, _ = run(method, *pair, step=method.init_steps - 1)
    np.testing.assert_allclose(first, metrics[metric], rtol=1e-6)
    assert run(method, *pair, step=method.init_steps)[0] != first
    return metrics
  return check


FASHION_CONFIG = os.path.join(os.path.dirname(__file__), '..', '..', 'configs', 'fashion_mnist',
                              'methods.py')


def _two_steps(arg, data_dir, workdir):
  """Trains ``FASHION_CONFIG:<arg>,runlocal``; returns its logged train metrics per step."""
  config = config_args.load_config_file(FASHION_CONFIG, f'{arg},runlocal')
  config.data.data_dir = data_dir
  results = train.run(config, workdir)
  assert results['steps'] == 2 and results['eval']['examples'] > 0
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    rows = [row for row in map(json.loads, f) if 'train/loss' in row]
  assert [row['step'] for row in rows] == [1, 2]
  return [{k.removeprefix('train/'): v for k, v in row.items() if k.startswith('train/')}
          for row in rows]


@pytest.fixture(scope='session')
def fashion_teacher(tmp_path_factory):
  """``(data_dir, teacher_workdir)``: the config's synthetic data (``FAKE_DATA``)
  and a 2-step ``role=teacher,runlocal`` run, shared by every method's smoke run."""
  root = tmp_path_factory.mktemp('fashion_mnist_methods')
  data_dir = str(root / 'data')
  for tfds_name, splits in runpy.run_path(FASHION_CONFIG)['FAKE_DATA'].items():
    testing.write_fake_tfds_data(tfds_name, data_dir, splits)
  _two_steps('role=teacher', data_dir, str(root / 'teacher'))
  return data_dir, str(root / 'teacher')


@pytest.fixture
def fashion_run(fashion_teacher, tmp_path):
  """``fashion_run(method)`` -> the train metrics of steps 1 and 2 (``loss``, ``ce``,
  the method's terms; step ``s`` ran the method at step index ``s - 1``) of
  ``configs/fashion_mnist/methods.py:method=<method>,teacher_workdir=...,runlocal``."""
  data_dir, teacher = fashion_teacher
  return lambda method: _two_steps(f'method={method},teacher_workdir={teacher}', data_dir,
                                   str(tmp_path / method))
