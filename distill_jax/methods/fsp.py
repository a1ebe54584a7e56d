"""``fsp``: Yim et al. (2017), "A Gift from Knowledge Distillation: Fast
Optimization, Network Minimization and Transfer Learning".

The "flow of solution procedure" between consecutive layers, the Gram
matrix ``G = mean_x f_a(x) f_b(x)^T`` ``[C_a, C_b]`` (maps pooled to a common
resolution), must match the teacher's; this needs the student's and the
teacher's layers to have equal channel counts (so it does not apply to the
CRD paper's cross-architecture pairs). RepDistiller's recipe is two-stage:
``init_steps`` (30 epochs) of the FSP loss alone, then ``CE`` only
(``weight = 0``); with ``init_steps = 0`` the term is added from the start.
"""

import dataclasses

from distill_jax import losses
from distill_jax.methods import common
from distill_jax.registry import register


@register('methods', 'fsp')
@dataclasses.dataclass(frozen=True)
class FlowOfSolutionProcedure(common.Distiller):
  """FSP.

  Attributes (besides ``common.Distiller``'s):
    init_steps: steps of the FSP-only initialisation stage.
    student_features / teacher_features: the chain of layers; consecutive
      ones form the FSP pairs.
  """
  method_name = 'fsp'
  stage_one_loss = 'fsp'
  non_negative_fields = ('init_steps',)
  weight: float = 50.0
  init_steps: int = 0
  student_features: str = 'stem_and_stages'

  def _pairs(self, student_features, teacher_features):
    layer_pairs = self.layer_pairs(student_features, teacher_features)
    if len(layer_pairs) < 2:
      raise ValueError(f'method \'fsp\' needs at least two layers; got {layer_pairs}.')
    return layer_pairs

  def init_aux(self, rng, student_features, teacher_features):
    layer_pairs = self._pairs(student_features, teacher_features)
    for s, t in layer_pairs:
      s_shape, t_shape = student_features[s].shape, teacher_features[t].shape
      if len(s_shape) != 4 or len(t_shape) != 4 or s_shape[-1] != t_shape[-1]:
        raise common.shape_error('fsp', s, s_shape, t, t_shape,
                                 'need the same number of channels for FSP matrices')
    for (s, _), (s_next, _) in zip(layer_pairs, layer_pairs[1:]):
      common.check_spatial('fsp', s, student_features[s].shape, s_next,
                           student_features[s_next].shape)
    return {}

  def term(self, student_features, teacher_features, aux):
    del aux
    layer_pairs = self._pairs(student_features, teacher_features)
    fs, ft = student_features, teacher_features
    return sum(losses.fsp_distance((fs[s], fs[s_next]), (ft[t], ft[t_next])).mean()
               for (s, t), (s_next, t_next) in zip(layer_pairs, layer_pairs[1:])), {}
