"""``fitnet``: Romero et al. (2015), "FitNets: Hints for Thin Deep Nets".

A learnable regressor (``connectors.ConvRegressor``, conv-BN-ReLU) maps the
student's guided layer onto the teacher's hint layer; the hint loss is their
mean squared difference. RepDistiller's recipe (one stage, hint layer
``stage2``): ``CE + 100 * hint``. The paper's two stages are available with
``init_steps > 0``: for the first ``init_steps`` steps only the hint loss
is optimised (it reaches the student up to the guided layer and the
regressor), then the ``CE + kd + weight * hint`` objective.
"""

import dataclasses

import jax.numpy as jnp

from distill_jax import losses
from distill_jax.methods import common
from distill_jax.methods import connectors
from distill_jax.registry import register


@register('methods', 'fitnet')
@dataclasses.dataclass(frozen=True)
class FitNet(common.Distiller):
  """Hint learning with a convolutional regressor.

  Attributes (besides ``common.Distiller``'s):
    student_features: the guided layer (one name; default ``'stage2'``).
    teacher_features: the hint layer ('' = the same name).
    init_steps: steps of the hint-only first stage (0 = one stage).
  """
  method_name = 'fitnet'
  weight: float = 100.0
  student_features: str = 'stage2'
  teacher_features: str = ''
  init_steps: int = 0

  def __post_init__(self):
    super().__post_init__()
    common.check_weights('fitnet', init_steps=self.init_steps)

  def _layers(self, student_features, teacher_features):
    layer_pairs = common.pairs('fitnet', student_features, teacher_features,
                               self.student_features, self.teacher_features)
    if len(layer_pairs) != 1:
      raise ValueError(f'method \'fitnet\' takes one hint layer; got {layer_pairs}.')
    return layer_pairs[0]

  def _regressor(self, teacher_shape) -> connectors.ConvRegressor:
    return connectors.ConvRegressor(tuple(teacher_shape[1:]))

  def init_aux(self, rng, student_features, teacher_features):
    s, t = self._layers(student_features, teacher_features)
    s_shape, t_shape = student_features[s].shape, teacher_features[t].shape
    if len(s_shape) != 4 or len(t_shape) != 4:
      raise common.shape_error('fitnet', s, s_shape, t, t_shape,
                               'must both be feature maps [B, H, W, C]')
    why = connectors.ConvRegressor.check(s_shape[1:], t_shape[1:])
    if why:
      raise common.shape_error('fitnet', s, s_shape, t, t_shape, why)
    return {'regressor': connectors.init(self._regressor(t_shape), rng, s_shape)}

  def loss(self, student_out, teacher_out, batch, aux, step):
    s, t = self._layers(student_out[1], teacher_out[1])
    target = teacher_out[1][t]
    regressed = connectors.apply(self._regressor(target.shape), aux['regressor'],
                                 student_out[1][s])
    hint = losses.hint_mse(regressed, target).mean()
    total, metrics = self.combine(student_out[0], teacher_out[0], batch, hint, {})
    return jnp.where(common.stage_one(step, self.init_steps), hint, total), metrics
