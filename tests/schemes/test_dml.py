"""dml: each peer's gradient is the method's gradient against the other's frozen output."""

import jax
import numpy as np
import pytest

from distill_jax import checkpoint
from distill_jax import methods
from distill_jax import train
from distill_jax.data import views
from distill_jax.schemes import dml


def _dml(small_config, data_dir, **overrides):
  return small_config(data_dir, **{
      'method.name': 'kd', 'method.temperature': 2.0, 'method.alpha': 0.5,
      'scheme.name': 'dml', 'optim.momentum': 0.0, **overrides})


def _first_batch(exp):
  return train.global_batch(next(exp.train_batches(0)), exp.compiled.batch_sharding)


def test_gradients_reach_every_peer_and_never_pass_through_a_target(small_config, data_dir):
  config = _dml(small_config, data_dir, **{'scheme.peers': ('cnn',)})
  exp = train.build(config)
  compiled, context = exp.compiled, exp.context
  state = compiled.init_fn(jax.random.PRNGKey(0))
  peers = (context.student, train.schemes.build_model(
      train.ml_collections.ConfigDict({'model': 'cnn', 'kwargs': {}, 'dtype': 'float32'}),
      10, 'peer'))
  batch = _first_batch(exp)
  images = views.augmented_view(jax.random.PRNGKey(0), batch, **context.view_kwargs)['image']
  before = jax.device_get(state)
  new_state, _ = compiled.train_fn(state, None, batch)
  method = methods.from_config(config.method)
  outputs = [peer.apply(p.student_variables, images, train=True, mutable=['batch_stats'])[0]
             for peer, p in zip(peers, before.peers)]
  for i, peer in enumerate(peers):
    other = outputs[1 - i]   # A constant: no gradient can flow into the other peer.

    def loss(params, i=i, peer=peer, other=other):
      out = peer.apply({'params': params, **before.peers[i].model_state}, images, train=True,
                       mutable=['batch_stats'])[0]
      return method.loss(out, other, batch, {}, 0)[0]

    grads = jax.grad(loss)(before.peers[i].params)
    expected = jax.tree.map(lambda p, g: p - config.optim.learning_rate * g,
                            before.peers[i].params, grads)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6),
                 jax.device_get(new_state.peers[i].params), expected)
    changed = jax.tree.leaves(jax.tree.map(lambda a, b: np.abs(a - b).max(),
                                           jax.device_get(new_state.peers[i].params),
                                           before.peers[i].params))
    assert max(changed) > 0, f'peer {i} did not move'


def test_evaluation_checkpoint_and_resume_hold_every_peer(small_config, data_dir, tmp_path):
  config = _dml(small_config, data_dir, **{'train.checkpoint_every_epochs': 0})
  results = train.run(config, str(tmp_path / 'run'))
  for key in ('accuracy', 'peer1_accuracy', 'ensemble_accuracy'):
    assert 0.0 <= results['eval'][key] <= 1.0
  exp = train.build(config)
  restored = checkpoint.restore_latest(checkpoint.make_manager(str(tmp_path / 'run'), 2),
                                       exp.compiled.abstract_state)
  assert len(restored.peers) == 2 and int(restored.step) == config.train.num_steps
  assert all(int(p.step) == config.train.num_steps for p in restored.peers)


def test_teacher_workdir_is_refused(small_config, data_dir):
  with pytest.raises(ValueError, match='leave config.teacher.workdir empty'):
    train.build(_dml(small_config, data_dir, **{'teacher.workdir': '/somewhere'}))


def test_keys_of_other_schemes_are_refused(small_config, data_dir):
  with pytest.raises(ValueError, match=r'scheme.generations set, but scheme .dml.'):
    train.build(_dml(small_config, data_dir, **{'scheme.generations': 5}))


def test_peers_share_the_class_count(small_config, data_dir, monkeypatch):
  real = dml.teachers.build_model

  def fewer_classes(model_config, num_classes, role):
    return real(model_config, num_classes - 1, role)

  monkeypatch.setattr(dml.teachers, 'build_model', fewer_classes)
  with pytest.raises(ValueError, match=r'same classes.*\[10, 9\]'):
    train.build(_dml(small_config, data_dir, **{'scheme.peers': ('mlp',)}))
