"""``ft``: Kim et al. (2018), "Paraphrasing Complex Network: Network Compression via
Factor Transfer".

A paraphraser (conv autoencoder, ``connectors.Paraphraser``) compresses the
teacher's last stage into "factors" of ``rate * C_t`` channels; a translator
(convs with BN) maps the student's last stage to factors of the same shape;
the loss is the L1 (``p = 1``) distance of the L2-normalized factors.

Two stages (RepDistiller): for ``init_steps`` steps (30 epochs) only the
paraphraser is trained, to reconstruct the teacher's features (MSE); then it
is frozen and the student and translator train on ``CE + 200 * FT``.
"""

import dataclasses

import jax
import jax.numpy as jnp

from distill_jax import losses
from distill_jax.methods import common
from distill_jax.methods import connectors
from distill_jax.registry import register


@register('methods', 'ft')
@dataclasses.dataclass(frozen=True)
class FactorTransfer(common.Distiller):
  """Factor transfer.

  Attributes (besides ``common.Distiller``'s):
    rate: factor channels / teacher channels.
    p: 1 (L1, the paper) or 2.
    init_steps: steps of paraphraser pre-training.
    student_features / teacher_features: one layer each.
  """
  method_name = 'ft'
  stage_one_loss = 'reconstruction'
  positive_fields = ('rate',)
  non_negative_fields = ('init_steps',)
  weight: float = 200.0
  rate: float = 0.5
  p: int = 1
  init_steps: int = 0
  student_features: str = 'last_stage'

  def __post_init__(self):
    super().__post_init__()
    if self.p not in (1, 2):
      raise ValueError(f'ft.p must be 1 or 2, got {self.p!r}.')

  def _translator(self, teacher_channels: int) -> connectors.ConvStack:
    factor = int(teacher_channels * self.rate)
    return connectors.ConvStack((factor, factor, factor), batch_norm=True)

  def init_aux(self, rng, student_features, teacher_features):
    s, t = self.layer_pair(student_features, teacher_features)
    s_shape, t_shape = student_features[s].shape, teacher_features[t].shape
    common.check_spatial('ft', s, s_shape, t, t_shape)
    if int(t_shape[-1] * self.rate) < 1:
      raise common.shape_error('ft', s, s_shape, t, t_shape,
                               f'leave no factor channels at rate {self.rate}')
    p_rng, t_rng = jax.random.split(rng)
    return {'paraphraser': connectors.init(connectors.Paraphraser(self.rate), p_rng, t_shape),
            'translator': connectors.init(self._translator(t_shape[-1]), t_rng, s_shape)}

  def term(self, student_features, teacher_features, aux):
    s, t = self.layer_pair(student_features, teacher_features)
    target = teacher_features[t]
    paraphraser = connectors.Paraphraser(self.rate)
    _, reconstruction = connectors.apply(paraphraser, aux['paraphraser'], target)
    reconstruction_loss = jnp.mean((reconstruction - target.astype(jnp.float32))**2)
    # After pre-training the paraphraser is frozen.
    factor_t, _ = connectors.apply(paraphraser, jax.lax.stop_gradient(aux['paraphraser']),
                                   target)
    factor_s = connectors.apply(self._translator(target.shape[-1]), aux['translator'],
                                student_features[s])
    factor_s, factor_t = losses.match_spatial(factor_s, factor_t)
    term = losses.factor_transfer(factor_s, factor_t, p=self.p).mean()
    return term, {'reconstruction': reconstruction_loss}
