"""``cc``: Peng et al. (2019), "Correlation Congruence for Knowledge Distillation".

Both models' penultimate features go through learnable linear embeddings
(aux params, ``embed_dim``); the loss couples the absolute embedding
differences of consecutive examples (RepDistiller's form of the
correlation-congruence term). RepDistiller: ``CE + 0.02 * CC``, 128 dims.
"""

import dataclasses

import jax

from distill_jax import losses
from distill_jax.methods import common
from distill_jax.methods import connectors
from distill_jax.registry import register


@register('methods', 'cc')
@dataclasses.dataclass(frozen=True)
class CorrelationCongruence(common.Distiller):
  """CC.

  Attributes (besides ``common.Distiller``'s):
    embed_dim: width of the two linear embeddings.
    student_features / teacher_features: the inputs of the embeddings.
  """
  method_name = 'cc'
  weight: float = 0.02
  embed_dim: int = 128
  student_features: str = 'pre_logits'
  teacher_features: str = ''

  def __post_init__(self):
    super().__post_init__()
    common.check_weights('cc', embed_dim=self.embed_dim)

  def _pair(self, student_features, teacher_features):
    (pair,) = common.pairs('cc', student_features, teacher_features,
                           self.student_features, self.teacher_features)
    return pair

  def init_aux(self, rng, student_features, teacher_features):
    s, t = self._pair(student_features, teacher_features)
    embed = connectors.Embed(self.embed_dim, normalize=False)
    s_rng, t_rng = jax.random.split(rng)
    return {'embed_student': connectors.init(embed, s_rng, student_features[s].shape),
            'embed_teacher': connectors.init(embed, t_rng, teacher_features[t].shape)}

  def loss(self, student_out, teacher_out, batch, aux, step):
    del step
    s, t = self._pair(student_out[1], teacher_out[1])
    embed = connectors.Embed(self.embed_dim, normalize=False)
    e_s = connectors.apply(embed, aux['embed_student'], student_out[1][s])
    # The teacher's embedding is trained too: only the teacher net is frozen.
    e_t = connectors.apply(embed, aux['embed_teacher'],
                           jax.lax.stop_gradient(teacher_out[1][t]))
    term = losses.correlation_congruence(e_s, e_t).mean()
    return self.combine(student_out[0], teacher_out[0], batch, term, {})
