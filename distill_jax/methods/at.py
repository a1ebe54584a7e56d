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
  weight: float = 1000.0
  p: float = 2.0
  student_features: str = 'stages'
  teacher_features: str = ''

  def init_aux(self, rng, student_features, teacher_features):
    for s, t in common.pairs('at', student_features, teacher_features,
                             self.student_features, self.teacher_features):
      common.check_spatial('at', s, student_features[s].shape, t, teacher_features[t].shape)
    return {}

  def loss(self, student_out, teacher_out, batch, aux, step):
    del aux, step
    term = sum(losses.attention_transfer(student_out[1][s], teacher_out[1][t], p=self.p).mean()
               for s, t in common.pairs('at', student_out[1], teacher_out[1],
                                        self.student_features, self.teacher_features))
    return self.combine(student_out[0], teacher_out[0], batch, term, {})
