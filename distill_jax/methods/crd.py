"""``crd``: Tian, Krishnan & Isola (2020), "Contrastive Representation Distillation".

Student and teacher penultimate features go through learnable embeddings
(linear + L2 norm, ``embed_dim``; both trained, only the teacher net is
frozen). Two memory banks hold a momentum-averaged embedding of every
training example, one of the student's and one of the teacher's. For each
example, the positive is its own bank row and ``nce_k`` negatives are random
rows; the student embedding is scored against the teacher bank and the
teacher embedding against the student bank, ``exp(v . w / nce_t) / Z``, and
both score sets enter the NCE loss (``losses.nce_contrast``). ``Z`` is fixed
on the first step to ``N`` times the mean score, as in the reference code.
The banks are then updated at the batch's rows:
``w <- normalize(nce_m w + (1 - nce_m) v)``.

The banks, the ``Z`` constants and the sampling key are the method's state
(``init_state``), in ``DistillState.method_state``: sharded like any state
leaf (logical axes ``('bank', 'embed')``; the default rules replicate them,
``('bank', ('data', 'fsdp'))`` shards the rows when ``N`` divides evenly),
checkpointed with the run, never differentiated. Batches must carry ``index``
(each example's row), as the trainer's do.

Negatives (``negatives``): ``'other_class'`` (default, as RepDistiller's
``CIFAR100InstanceSample``, whose ``mode`` only changes the positive) draws
them from examples of other classes; ``'uniform'`` from all rows. The state
keeps a label bank (``label_bank``, ``-1`` = row not seen yet, filled in at
each batch's rows), and a negative whose label equals the anchor's is redrawn
uniformly, up to ``resample_rounds`` times (rejection sampling: with ``C``
balanced classes a same-class negative survives with probability about
``C ** -(resample_rounds + 1)``). Rows not seen yet (during the first epoch)
count as other-class.

RepDistiller: ``CE + 0.8 * CRD`` (``kd_weight = 1`` for CRD+KD), 128 dims,
16384 negatives, ``nce_t = 0.07``, ``nce_m = 0.5``, other-class negatives.
"""

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from distill_jax import losses
from distill_jax.methods import common
from distill_jax.registry import register

BANK_AXES = ('bank', 'embed')
NEGATIVES = ('other_class', 'uniform')


def _update_bank(bank: jax.Array, rows: jax.Array, embeddings: jax.Array,
                 momentum: float) -> jax.Array:
  """``bank[rows] = normalize(m * bank[rows] + (1 - m) * embeddings)``."""
  mixed = momentum * bank[rows] + (1.0 - momentum) * embeddings
  return bank.at[rows].set(losses.l2_normalize(mixed))


def sample_negatives(key: jax.Array, labels: jax.Array, label_bank: jax.Array, *,
                     nce_k: int, rounds: int) -> jax.Array:
  """``[B, nce_k]`` bank rows drawn uniformly, same-class ones redrawn ``rounds`` times.

  Args:
    key: PRNG key.
    labels: ``[B]`` the anchors' labels.
    label_bank: ``[N]`` every row's label (``-1``: unknown, accepted).
    nce_k: negatives per anchor.
    rounds: rejection rounds; 0 = uniform over all rows.
  """
  shape = (labels.shape[0], nce_k)
  num_data = label_bank.shape[0]
  negatives = jax.random.randint(key, shape, 0, num_data)
  for r in range(rounds):
    same = label_bank[negatives] == labels[:, None]
    fresh = jax.random.randint(jax.random.fold_in(key, r + 1), shape, 0, num_data)
    negatives = jnp.where(same, fresh, negatives)
  return negatives


@register('methods', 'crd')
@dataclasses.dataclass(frozen=True)
class ContrastiveRepresentation(common.EmbeddingDistiller):
  """CRD.

  Attributes (besides ``common.EmbeddingDistiller``'s):
    nce_k: negatives per example; must be below the training set size.
    nce_t: temperature of the contrast scores.
    nce_m: momentum of the bank updates, in [0, 1].
    negatives: ``'other_class'`` (RepDistiller) or ``'uniform'``.
    resample_rounds: redraws of same-class negatives (``'other_class'``).
    student_features / teacher_features: the embedded features.
  """
  method_name = 'crd'
  positive_fields = ('embed_dim', 'nce_k', 'nce_t')
  non_negative_fields = ('resample_rounds',)
  weight: float = 0.8
  nce_k: int = 16384
  nce_t: float = 0.07
  nce_m: float = 0.5
  negatives: str = 'other_class'
  resample_rounds: int = 4
  student_features: str = 'pre_logits'

  def __post_init__(self):
    super().__post_init__()
    common.base.check_number('crd.nce_m', self.nce_m, unit_interval=True)
    if self.negatives not in NEGATIVES:
      raise ValueError(f'crd.negatives={self.negatives!r}; choose one of {", ".join(NEGATIVES)}.')

  def init_state(self, rng, student_features, teacher_features, *, num_train):
    if self.nce_k >= num_train:
      raise ValueError(
          f'crd.nce_k={self.nce_k} negatives need a memory bank of more examples, but '
          f'the training split has only {num_train} (one bank row per example). Use '
          f'nce_k < {num_train}.')
    stdv = 1.0 / math.sqrt(self.embed_dim / 3)
    s_rng, t_rng, sample_rng = jax.random.split(rng, 3)
    bank = lambda key: nn.LogicallyPartitioned(
        jax.random.uniform(key, (num_train, self.embed_dim), jnp.float32, -stdv, stdv),
        BANK_AXES)
    return {'bank_student': bank(s_rng), 'bank_teacher': bank(t_rng),
            'z_student': -jnp.ones((), jnp.float32), 'z_teacher': -jnp.ones((), jnp.float32),
            'label_bank': nn.LogicallyPartitioned(-jnp.ones((num_train,), jnp.int32), ('bank',)),
            'rng': sample_rng}

  def loss(self, student_out, teacher_out, batch, aux, step):
    raise TypeError('crd keeps a memory bank: call loss_with_state (the train step does).')

  def loss_with_state(self, student_out, teacher_out, batch, aux, step, state):
    if 'index' not in batch:
      raise ValueError('crd needs batch["index"] (each example\'s row in the memory bank).')
    v_s, v_t = self.embed(student_out[1], teacher_out[1], aux)
    rows = batch['index']
    num_data = state['bank_student'].shape[0]
    labels = batch['label'].astype(jnp.int32)
    label_bank = state['label_bank'].at[rows].set(labels)
    negatives = sample_negatives(
        jax.random.fold_in(state['rng'], step), labels, label_bank, nce_k=self.nce_k,
        rounds=self.resample_rounds if self.negatives == 'other_class' else 0)
    candidates = jnp.concatenate([rows[:, None], negatives], axis=1)

    def scores(bank, v, z):
      weights = jax.lax.stop_gradient(bank[candidates])
      out = jnp.exp(jnp.einsum('bkd,bd->bk', weights, v) / self.nce_t)
      z = jax.lax.stop_gradient(jnp.where(z < 0, jnp.mean(out) * num_data, z))
      return out / z, z

    # The student embedding against the teacher bank and vice versa.
    scores_s, z_s = scores(state['bank_teacher'], v_s, state['z_student'])
    scores_t, z_t = scores(state['bank_student'], v_t, state['z_teacher'])
    term = (losses.nce_contrast(scores_s, num_data=num_data).mean() +
            losses.nce_contrast(scores_t, num_data=num_data).mean())
    total, metrics = self.combine(student_out[0], teacher_out[0], batch, term, {})
    new_state = {
        'bank_student': _update_bank(state['bank_student'], rows, v_s, self.nce_m),
        'bank_teacher': _update_bank(state['bank_teacher'], rows, v_t, self.nce_m),
        'z_student': z_s, 'z_teacher': z_t, 'label_bank': label_bank, 'rng': state['rng']}
    return total, metrics, jax.lax.stop_gradient(new_state)
