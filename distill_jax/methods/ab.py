"""``ab``: Heo et al. (2019), "Knowledge Transfer via Distillation of Activation
Boundaries Formed by Hidden Neurons".

The student (through per-layer connectors, ``conv-BN``, identity where the
shapes already agree) learns on which side of zero each teacher neuron's
pre-activation lies, with a margin: ``activation_boundary`` on the
``stageN_preact`` features, layer ``i`` of ``n`` weighted ``2**(i - n + 1)``,
scaled by ``3 / 1000`` (RepDistiller's ``ABLoss``).

RepDistiller's recipe is two-stage: ``init_steps`` (30 epochs) of the AB
loss alone (it trains the student's feature layers and the connectors), then
``CE`` only (``weight = 0``). With ``init_steps = 0`` the AB term is added
to the objective from the start (weight ``weight``).
"""

import dataclasses

import jax

from distill_jax import losses
from distill_jax.methods import common
from distill_jax.methods import connectors
from distill_jax.registry import register


@register('methods', 'ab')
@dataclasses.dataclass(frozen=True)
class ActivationBoundaries(common.Distiller):
  """Activation-boundary distillation.

  Attributes (besides ``common.Distiller``'s):
    margin: ``m > 0`` of the alternative L2 loss.
    init_steps: steps of the AB-only initialisation stage.
    student_features / teacher_features: pre-activation layers.
  """
  method_name = 'ab'
  stage_one_loss = 'ab'
  positive_fields = ('margin',)
  non_negative_fields = ('init_steps',)
  margin: float = 1.0
  init_steps: int = 0
  student_features: str = 'stages_preact'

  @staticmethod
  def _connector(t_shape) -> connectors.ConvRegressor:
    return connectors.ConvRegressor(tuple(t_shape[1:]), relu=False)

  def init_aux(self, rng, student_features, teacher_features):
    aux = {}
    for (s, t), key in zip(self.layer_pairs(student_features, teacher_features),
                           jax.random.split(rng, 64)):
      s_shape, t_shape = student_features[s].shape, teacher_features[t].shape
      common.check_spatial('ab', s, s_shape, t, t_shape, regressor=True)
      if tuple(s_shape[1:]) != tuple(t_shape[1:]):
        aux[s] = connectors.init(self._connector(t_shape), key, s_shape)
    return aux

  def term(self, student_features, teacher_features, aux):
    layer_pairs = self.layer_pairs(student_features, teacher_features)
    n = len(layer_pairs)
    term = 0.0
    for i, (s, t) in enumerate(layer_pairs):
      source, target = student_features[s], teacher_features[t]
      if s in aux:
        source = connectors.apply(self._connector(target.shape), aux[s], source)
      boundary = losses.activation_boundary(source, target, margin=self.margin).mean()
      term += 2.0**(i - n + 1) * boundary * 3 / 1000
    return term, {}
