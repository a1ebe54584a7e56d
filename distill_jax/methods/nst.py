"""``nst``: Huang & Wang (2017), "Like What You Like: Knowledge Distill via Neuron
Selectivity Transfer".

Squared MMD (polynomial kernel) between the student's and the teacher's sets
of normalized channel maps, per layer pair. RepDistiller: all stages,
``CE + 50 * sum_layers NST``.
"""

import dataclasses

from distill_jax import losses
from distill_jax.methods import common
from distill_jax.registry import register


@register('methods', 'nst')
@dataclasses.dataclass(frozen=True)
class NeuronSelectivityTransfer(common.Distiller):
  """NST.

  Attributes (besides ``common.Distiller``'s):
    student_features / teacher_features: layers to match ('' = same spec).
  """
  method_name = 'nst'
  weight: float = 50.0
  student_features: str = 'stages'
  teacher_features: str = ''

  def init_aux(self, rng, student_features, teacher_features):
    for s, t in common.pairs('nst', student_features, teacher_features,
                             self.student_features, self.teacher_features):
      common.check_spatial('nst', s, student_features[s].shape, t, teacher_features[t].shape)
    return {}

  def loss(self, student_out, teacher_out, batch, aux, step):
    del aux, step
    term = sum(losses.neuron_selectivity_mmd(student_out[1][s], teacher_out[1][t]).mean()
               for s, t in common.pairs('nst', student_out[1], teacher_out[1],
                                        self.student_features, self.teacher_features))
    return self.combine(student_out[0], teacher_out[0], batch, term, {})
