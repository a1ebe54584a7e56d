"""``cc``: Peng et al. (2019), "Correlation Congruence for Knowledge Distillation".

Both models' penultimate features go through learnable linear embeddings
(aux params, ``embed_dim``); the loss couples the absolute embedding
differences of consecutive examples (RepDistiller's form of the
correlation-congruence term). RepDistiller: ``CE + 0.02 * CC``, 128 dims.
"""

import dataclasses

from distill_jax import losses
from distill_jax.methods import common
from distill_jax.registry import register


@register('methods', 'cc')
@dataclasses.dataclass(frozen=True)
class CorrelationCongruence(common.EmbeddingDistiller):
  """CC.

  Attributes (besides ``common.EmbeddingDistiller``'s):
    student_features / teacher_features: the inputs of the embeddings.
  """
  method_name = 'cc'
  normalize = False
  non_negative_fields = ('embed_dim',)
  weight: float = 0.02
  student_features: str = 'pre_logits'

  def term(self, student_features, teacher_features, aux):
    e_s, e_t = self.embed(student_features, teacher_features, aux)
    return losses.correlation_congruence(e_s, e_t).mean(), {}
