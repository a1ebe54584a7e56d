"""``token_minilm``: MiniLM's self-attention transfer for decoders, plus the token-level forward KL.

MiniLM (Wang et al. 2020) distills the last Transformer block's
self-attention: the attention distributions ``A = softmax(Q K^T / sqrt(d))``
and the value relation ``VR = softmax(V V^T / sqrt(d))``, head by head, as
``KL(teacher || student)`` over the keys each query sees (causal here), mean
over heads and over the real tokens (prompt and response)::

  loss = ce_weight * CE + (1 - ce_weight) * T**2 KL(p_t || p_s)
         + mean_pairs [attention_weight * AT + value_weight * VR]

Head by head needs one attention-head count and one KV-head count on both
sides (a clear error otherwise; ``token_minilmv2`` has relation heads of its
own). ``layer_map`` (``methods/layer_maps.py``) chooses the blocks; MiniLM's is
``'last'``. The kernels are ``losses/token_relations.py``.
"""

import dataclasses

from distill_jax.losses import token_relations
from distill_jax.methods import base
from distill_jax.methods import layer_maps
from distill_jax.methods import token_base
from distill_jax.methods import token_kl
from distill_jax.registry import register


@register('methods', 'token_minilm')
@dataclasses.dataclass(frozen=True)
class TokenMiniLM(token_kl.TokenForwardKL):
  """Forward KL plus MiniLM's attention-distribution and value-relation KL.

  Attributes:
    layer_map: which student block learns from which teacher block
      (``layer_maps.LayerMap``; default the last from the last).
    attention_weight: weight of the attention-distribution KL (>= 0).
    value_weight: weight of the value-relation KL (>= 0).
  """
  layer_map: layer_maps.LayerMap = 'last'
  attention_weight: float = 1.0
  value_weight: float = 1.0

  def __post_init__(self):
    super().__post_init__()
    base.check_number('token_minilm.attention_weight', self.attention_weight,
                      non_negative=True)
    base.check_number('token_minilm.value_weight', self.value_weight, non_negative=True)

  def attention_features(self, student_depth, teacher_depth):
    return layer_maps.block_features(self.layer_map, ('attn', 'value'), student_depth,
                                     teacher_depth, 'token_minilm')

  def loss(self, student_out, teacher_out, batch, aux, step):
    total, metrics = super().loss(student_out, teacher_out, batch, aux, step)
    allowed = token_relations.causal_allowed(batch['token_mask'])
    attention, value = [], []
    pairs = zip(*(layer_maps.feature_pairs(self.layer_map, student_out[1], teacher_out[1],
                                           name, 'token_minilm') for name in ('attn', 'value')))
    for (attn_s, attn_t), (value_s, value_t) in pairs:
      if value_s.shape[2] != value_t.shape[2]:
        raise ValueError(
            f'token_minilm: the value relation is head by head, but the student has '
            f'{value_s.shape[2]} KV heads and the teacher {value_t.shape[2]}; give the student '
            'the teacher\'s head counts or use token_minilmv2 (relation heads of its own).')
      attention.append(token_base.masked_mean(
          token_relations.attention_kl(attn_s, attn_t, allowed), batch['token_mask']))
      value.append(token_base.masked_mean(token_relations.self_relation_kl(
          value_s, value_t, allowed, relation_heads=value_s.shape[2]), batch['token_mask']))
    attention, value = sum(attention) / len(attention), sum(value) / len(value)
    total = total + self.attention_weight * attention + self.value_weight * value
    return total, {**metrics, 'attention_kl': attention, 'value_relation_kl': value}
