"""``vid``: Ahn et al. (2019), "Variational Information Distillation for Knowledge
Transfer".

Per layer pair, a regressor (three 1x1 convs, ``connectors.VIDRegressor``)
predicts the mean of a Gaussian over the teacher's activations from the
student's, with a learned per-channel variance; the loss is its negative
log-likelihood (a variational lower bound on the mutual information). The
larger map is average-pooled to the smaller one. RepDistiller: all stages,
``CE + 1 * sum_layers VID``.
"""

import dataclasses

import jax

from distill_jax import losses
from distill_jax.losses.features import common_resolution
from distill_jax.methods import common
from distill_jax.methods import connectors
from distill_jax.registry import register


@register('methods', 'vid')
@dataclasses.dataclass(frozen=True)
class VariationalInformation(common.Distiller):
  """VID.

  Attributes (besides ``common.Distiller``'s):
    init_variance: initial predicted variance.
    eps: variance floor.
    student_features / teacher_features: layers to match ('' = same spec).
  """
  method_name = 'vid'
  positive_fields = ('init_variance', 'eps')
  init_variance: float = 5.0
  eps: float = 1e-5
  student_features: str = 'stages'

  def _regressor(self, channels: int) -> connectors.VIDRegressor:
    return connectors.VIDRegressor(channels, self.init_variance, self.eps)

  def init_aux(self, rng, student_features, teacher_features):
    aux = {}
    for (s, t), key in zip(self.layer_pairs(student_features, teacher_features),
                           jax.random.split(rng, 64)):
      s_shape, t_shape = student_features[s].shape, teacher_features[t].shape
      common.check_spatial('vid', s, s_shape, t, t_shape)
      pooled = (s_shape[0], *common_resolution(s_shape, t_shape), s_shape[3])
      aux[s] = connectors.init(self._regressor(t_shape[-1]), key, pooled)
    return aux

  def term(self, student_features, teacher_features, aux):
    term = 0.0
    for s, t in self.layer_pairs(student_features, teacher_features):
      source, target = losses.match_spatial(student_features[s], teacher_features[t])
      mean, log_scale = connectors.apply(self._regressor(target.shape[-1]), aux[s], source)
      term += losses.variational_information(mean, target, log_scale, eps=self.eps).mean()
    return term, {}
