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
  stage_one_loss = 'fitnet'
  non_negative_fields = ('init_steps',)
  weight: float = 100.0
  student_features: str = 'stage2'
  init_steps: int = 0

  def _regressor(self, teacher_shape) -> connectors.ConvRegressor:
    return connectors.ConvRegressor(tuple(teacher_shape[1:]))

  def init_aux(self, rng, student_features, teacher_features):
    s, t = self.layer_pair(student_features, teacher_features)
    s_shape, t_shape = student_features[s].shape, teacher_features[t].shape
    common.check_spatial('fitnet', s, s_shape, t, t_shape, regressor=True)
    return {'regressor': connectors.init(self._regressor(t_shape), rng, s_shape)}

  def term(self, student_features, teacher_features, aux):
    s, t = self.layer_pair(student_features, teacher_features)
    target = teacher_features[t]
    regressed = connectors.apply(self._regressor(target.shape), aux['regressor'],
                                 student_features[s])
    return losses.hint_mse(regressed, target).mean(), {}
