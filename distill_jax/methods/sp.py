"""``sp``: Tung & Mori (2019), "Similarity-Preserving Knowledge Distillation".

The student's batch similarity (normalized Gram matrix of the flattened
features) matches the teacher's. RepDistiller: last stage,
``CE + 3000 * SP``.
"""

import dataclasses

from distill_jax import losses
from distill_jax.methods import common
from distill_jax.registry import register


@register('methods', 'sp')
@dataclasses.dataclass(frozen=True)
class SimilarityPreserving(common.Distiller):
  """Similarity-preserving KD.

  Attributes (besides ``common.Distiller``'s):
    student_features / teacher_features: layers to compare ('' = same spec).
  """
  method_name = 'sp'
  weight: float = 3000.0
  student_features: str = 'last_stage'

  def term(self, student_features, teacher_features, aux):
    del aux
    return self.layer_sum(losses.similarity_preserving, student_features, teacher_features), {}
