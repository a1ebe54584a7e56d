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
  spatial = True
  weight: float = 50.0
  student_features: str = 'stages'

  def term(self, student_features, teacher_features, aux):
    del aux
    return self.layer_sum(losses.neuron_selectivity_mmd, student_features, teacher_features), {}
