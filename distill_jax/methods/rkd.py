"""``rkd``: Park et al. (2019), "Relational Knowledge Distillation".

Distance-wise (pairwise distances over their mean) and angle-wise (cosines of
triplet angles) structure of the penultimate embeddings, compared with the
Huber loss: ``term = distance_weight * RKD-D + angle_weight * RKD-A``.
RepDistiller: ``CE + 1 * (25 RKD-D + 50 RKD-A)`` on ``pre_logits``.
"""

import dataclasses

from distill_jax import losses
from distill_jax.methods import common
from distill_jax.registry import register


@register('methods', 'rkd')
@dataclasses.dataclass(frozen=True)
class RelationalKD(common.Distiller):
  """RKD.

  Attributes (besides ``common.Distiller``'s):
    distance_weight: weight of the distance loss.
    angle_weight: weight of the angle loss.
    student_features / teacher_features: the embeddings ('' = same spec).
  """
  method_name = 'rkd'
  non_negative_fields = ('distance_weight', 'angle_weight')
  distance_weight: float = 25.0
  angle_weight: float = 50.0
  student_features: str = 'pre_logits'

  def term(self, student_features, teacher_features, aux):
    del aux
    distance = self.layer_sum(losses.rkd_distance, student_features, teacher_features)
    angle = self.layer_sum(losses.rkd_angle, student_features, teacher_features)
    term = self.distance_weight * distance + self.angle_weight * angle
    return term, {'rkd_distance': distance, 'rkd_angle': angle}
