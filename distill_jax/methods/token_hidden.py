"""``token_hidden``: hidden-state distillation for decoders, plus the token-level forward KL.

Each chosen student block output ``hidden_<s>`` ``[B, T, D_s]`` is mapped by a
learnable linear projection ``[D_s, D_t]`` (only when the widths differ) onto
the paired teacher block output ``hidden_<t>`` ``[B, T, D_t]``, and the mean
squared error over the hidden axis is averaged over the response tokens
(TinyBERT / MiniLM-style layer mapping)::

  loss = ce_weight * CE + (1 - ce_weight) * T**2 KL(p_t || p_s)
         + hidden_weight * mean_pairs masked_mean(mean_d (h_s W - h_t)**2)
"""

import dataclasses

import jax
import jax.numpy as jnp

from distill_jax.methods import base
from distill_jax.methods import token_base
from distill_jax.methods import token_kl
from distill_jax.registry import register


def _feature(features, name: str, role: str):
  if name not in features:
    available = sorted(k for k in features if k.startswith('hidden_'))
    raise base.MissingFeatureError(
        f'token_hidden: the {role} has no feature {name!r}; it has '
        f'{", ".join(available)}.', role)
  return features[name]


@register('methods', 'token_hidden')
@dataclasses.dataclass(frozen=True)
class TokenHiddenState(token_kl.TokenForwardKL):
  """Forward KL plus projected hidden-state MSE on paired blocks.

  Attributes:
    student_layers: student block indices, e.g. ``(1, 3)``.
    teacher_layers: the paired teacher block indices, same length.
    hidden_weight: weight of the hidden-state term (>= 0).
  """
  student_layers: tuple[int, ...] = (-1,)
  teacher_layers: tuple[int, ...] = (-1,)
  hidden_weight: float = 1.0

  def __post_init__(self):
    super().__post_init__()
    base.check_number('token_hidden.hidden_weight', self.hidden_weight, non_negative=True)
    if len(self.student_layers) != len(self.teacher_layers) or not self.student_layers:
      raise ValueError(
          'token_hidden: student_layers and teacher_layers must pair up (same, '
          f'non-zero length); got {self.student_layers} and {self.teacher_layers}.')

  def _pairs(self, student_features, teacher_features):
    def name(features, i):
      count = sum(k.startswith('hidden_') for k in features)
      return f'hidden_{i % count if count else i}'
    return [(_feature(student_features, name(student_features, s), 'student'),
             _feature(teacher_features, name(teacher_features, t), 'teacher'))
            for s, t in zip(self.student_layers, self.teacher_layers)]

  def init_aux(self, rng, student_features, teacher_features):
    aux = {}
    init = jax.nn.initializers.lecun_normal()
    for i, (hs, ht) in enumerate(self._pairs(student_features, teacher_features)):
      if hs.shape[-1] != ht.shape[-1]:
        aux[f'proj_{i}'] = init(jax.random.fold_in(rng, i),
                                (hs.shape[-1], ht.shape[-1]), jnp.float32)
    return aux

  def loss(self, student_out, teacher_out, batch, aux, step):
    total, metrics = super().loss(student_out, teacher_out, batch, aux, step)
    terms = []
    for i, (hs, ht) in enumerate(self._pairs(student_out[1], teacher_out[1])):
      hs = hs.astype(jnp.float32)
      if f'proj_{i}' in aux:
        hs = hs @ aux[f'proj_{i}']
      ht = jax.lax.stop_gradient(ht).astype(jnp.float32)
      terms.append(token_base.masked_mean(jnp.mean((hs - ht)**2, -1), batch['loss_mask']))
    hidden = sum(terms) / len(terms)
    return total + self.hidden_weight * hidden, {**metrics, 'hidden': hidden}
