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
  distance_weight: float = 25.0
  angle_weight: float = 50.0
  student_features: str = 'pre_logits'
  teacher_features: str = ''

  def __post_init__(self):
    super().__post_init__()
    common.check_weights('rkd', distance_weight=self.distance_weight,
                         angle_weight=self.angle_weight)

  def loss(self, student_out, teacher_out, batch, aux, step):
    del aux, step
    distance = angle = 0.0
    for s, t in common.pairs('rkd', student_out[1], teacher_out[1],
                             self.student_features, self.teacher_features):
      distance += losses.rkd_distance(student_out[1][s], teacher_out[1][t]).mean()
      angle += losses.rkd_angle(student_out[1][s], teacher_out[1][t]).mean()
    term = self.distance_weight * distance + self.angle_weight * angle
    return self.combine(student_out[0], teacher_out[0], batch, term,
                        {'rkd_distance': distance, 'rkd_angle': angle})
