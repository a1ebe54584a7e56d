"""crd: memory bank in the method state, NCE on both sides, bank updates, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax import losses
from distill_jax import registry
from distill_jax.methods import crd


def test_bank_rows_are_updated_with_momentum(pair, init):
  student, teacher, batch = pair
  method = registry.get('methods', 'crd')(nce_k=4, embed_dim=3)
  aux, state = init(method, student, teacher, num_train=10)
  assert state['bank_student'].shape == (10, 3)
  loss, metrics, new = method.loss_with_state(student, teacher, batch, aux, jnp.asarray(0), state)
  assert np.isfinite(loss) and metrics['crd'] > 0
  v_s = losses.l2_normalize(student[1]['pre_logits'] @ aux['embed_student']['Dense_0']['kernel'] +
                            aux['embed_student']['Dense_0']['bias'])
  rows = batch['index']
  expected = losses.l2_normalize(0.5 * state['bank_student'][rows] + 0.5 * v_s)
  np.testing.assert_allclose(new['bank_student'][rows], expected, rtol=1e-5, atol=1e-6)
  untouched = np.setdiff1d(np.arange(10), rows)
  np.testing.assert_array_equal(new['bank_student'][untouched], state['bank_student'][untouched])
  # Z is fixed on the first step and kept afterwards.
  assert new['z_student'] > 0
  _, _, newer = method.loss_with_state(student, teacher, batch, aux, jnp.asarray(1), new)
  assert newer['z_student'] == new['z_student']


def test_loss_hand_computed(pair, init, distiller_loss, ref):
  """Identity embeddings, the initial banks and the negatives drawn at step 0."""
  student, teacher, batch = pair
  method = registry.get('methods', 'crd')(nce_k=4, embed_dim=16)
  state = init(method, student, teacher)[1]
  v_s = ref.l2_normalize(ref.channels(student[1]['pre_logits'], 16))
  v_t = ref.l2_normalize(np.asarray(teacher[1]['pre_logits'], np.float64))
  label_bank = state['label_bank'].at[batch['index']].set(batch['label'])
  negatives = crd.sample_negatives(jax.random.fold_in(state['rng'], 0), batch['label'],
                                   label_bank, nce_k=4, rounds=4)
  candidates = np.concatenate([np.asarray(batch['index'])[:, None], negatives], 1)

  def nce(bank, v):
    """Scores exp(v . w / 0.07) / Z, Z = N * their mean; noise K / N = 4 / 16."""
    scores = np.exp(np.einsum('bkd,bd->bk', np.asarray(bank)[candidates], v) / 0.07)
    p = scores / (16 * scores.mean())
    return -np.mean(np.log(p[:, 0] / (p[:, 0] + 0.25 + 1e-7)) +
                    np.sum(np.log(0.25 / (p[:, 1:] + 0.25 + 1e-7)), -1))

  term = nce(state['bank_teacher'], v_s) + nce(state['bank_student'], v_t)
  distiller_loss(method, term, identity_connectors=True, rtol=1e-4)


def test_bank_larger_than_the_data_set(pair, init):
  student, teacher, _ = pair
  with pytest.raises(ValueError, match='crd.nce_k=100 negatives.*only 50'):
    init(registry.get('methods', 'crd')(nce_k=100), student, teacher, num_train=50)


def test_needs_example_indices(pair, run):
  student, teacher, batch = pair
  with pytest.raises(ValueError, match='index'):
    run(registry.get('methods', 'crd')(nce_k=4), student, teacher, {'label': batch['label']})


def test_zero_gradient_to_the_teacher(pair, zero_teacher_gradient):
  zero_teacher_gradient(registry.get('methods', 'crd')(nce_k=4), *pair)


def test_negatives_come_from_other_classes():
  labels = jnp.arange(1000) % 10
  anchors = jnp.array([0, 3, 7, 9])
  negatives = crd.sample_negatives(jax.random.PRNGKey(0), anchors, labels, nce_k=500, rounds=4)
  assert negatives.shape == (4, 500)
  # A same-class draw survives 5 rounds with probability 1e-5: none in 2,000 draws.
  assert not np.any(labels[negatives] == anchors[:, None])
  uniform = crd.sample_negatives(jax.random.PRNGKey(0), anchors, labels, nce_k=500, rounds=0)
  same = np.mean(labels[uniform] == anchors[:, None])
  assert 0.05 < same < 0.15  # about 1/10 with uniform negatives
  # Rows of unknown label (-1, not seen yet) are accepted.
  unknown = crd.sample_negatives(jax.random.PRNGKey(0), anchors, -jnp.ones(1000, jnp.int32),
                                 nce_k=500, rounds=4)
  np.testing.assert_array_equal(unknown, uniform)


def test_label_bank_is_filled_at_the_batch_rows(pair, init):
  student, teacher, batch = pair
  method = registry.get('methods', 'crd')(nce_k=4)
  aux, state = init(method, student, teacher, num_train=10)
  np.testing.assert_array_equal(state['label_bank'], -np.ones(10))
  _, _, new = method.loss_with_state(student, teacher, batch, aux, jnp.asarray(0), state)
  expected = -np.ones(10, np.int32)
  expected[np.asarray(batch['index'])] = np.asarray(batch['label'])
  np.testing.assert_array_equal(new['label_bank'], expected)


def test_defaults_and_bad_hyper_parameters(distiller_hyper_parameters):
  distiller_hyper_parameters('crd', weight=0.8)
  with pytest.raises(ValueError, match='crd.negatives=.*other_class, uniform'):
    registry.get('methods', 'crd')(negatives='exact')


def test_two_steps_from_the_fashion_mnist_config(fashion_run):
  for logged in fashion_run('crd'):
    np.testing.assert_allclose(logged['loss'], logged['ce'] + 0.8 * logged['crd'], rtol=1e-5)
