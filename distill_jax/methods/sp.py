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
  teacher_features: str = ''

  def loss(self, student_out, teacher_out, batch, aux, step):
    del aux, step
    term = sum(losses.similarity_preserving(student_out[1][s], teacher_out[1][t]).mean()
               for s, t in common.pairs('sp', student_out[1], teacher_out[1],
                                        self.student_features, self.teacher_features))
    return self.combine(student_out[0], teacher_out[0], batch, term, {})
