"""``pkt``: Passalis & Tefas (2018), "Learning Deep Representations with
Probabilistic Knowledge Transfer".

KL divergence between the teacher's and the student's conditional
distributions of cosine similarity over the batch. RepDistiller:
``pre_logits``, ``CE + 30000 * PKT``.
"""

import dataclasses

from distill_jax import losses
from distill_jax.methods import common
from distill_jax.registry import register


@register('methods', 'pkt')
@dataclasses.dataclass(frozen=True)
class ProbabilisticKT(common.Distiller):
  """PKT.

  Attributes (besides ``common.Distiller``'s):
    student_features / teacher_features: the embeddings ('' = same spec).
  """
  method_name = 'pkt'
  weight: float = 30000.0
  student_features: str = 'pre_logits'

  def term(self, student_features, teacher_features, aux):
    del aux
    kernel = losses.probabilistic_knowledge_transfer
    return self.layer_sum(kernel, student_features, teacher_features), {}
