"""``at``: Zagoruyko & Komodakis (2017), "Paying More Attention to Attention".

The student matches the teacher's spatial attention maps (channel mean of the
squared activations, L2-normalized) at every chosen layer pair; maps of
different resolutions are average-pooled to the smaller one. RepDistiller:
all stages, ``CE + 1000 * sum_layers AT``.
"""

import dataclasses

from distill_jax import losses
from distill_jax.methods import common
from distill_jax.registry import register


@register('methods', 'at')
@dataclasses.dataclass(frozen=True)
class AttentionTransfer(common.Distiller):
  """Attention transfer.

  Attributes (besides ``common.Distiller``'s):
    p: power of the activations in the attention map.
    student_features / teacher_features: layers to match ('' = same spec).
  """
  method_name = 'at'
  spatial = True
  weight: float = 1000.0
  p: float = 2.0
  student_features: str = 'stages'

  def term(self, student_features, teacher_features, aux):
    del aux
    kernel = lambda s, t: losses.attention_transfer(s, t, p=self.p)
    return self.layer_sum(kernel, student_features, teacher_features), {}
