"""``token_minilmv2``: MiniLMv2's multi-head self-attention relations, plus token-level forward KL.

MiniLMv2 (Wang et al. 2021) relates each of the queries, keys and values of a
block to themselves: the heads are concatenated (``[B, T, H * Dh]``), cut into
``relation_heads`` equal slices ``X_r`` and ``R = softmax(X_r X_r^T /
sqrt(d_r))`` is compared as ``KL(teacher || student)`` over the keys each
query sees (causal here), mean over relation heads and the real tokens::

  loss = ce_weight * CE + (1 - ce_weight) * T**2 KL(p_t || p_s)
         + relation_weight * mean_pairs mean_relations KL(R_t || R_s)

The relation-head count is the method's own, so teacher and student head
counts and widths may differ (it must divide every width it cuts). The
projections are taken before RoPE. ``layer_map`` (``methods/layer_maps.py``)
chooses the blocks, e.g. ``'-1:20'`` for the paper's upper-middle teacher
layer. The kernel is ``losses/token_relations.self_relation_kl``.
"""

import dataclasses
import math

from distill_jax.losses import token_relations
from distill_jax.methods import base
from distill_jax.methods import layer_maps
from distill_jax.methods import token_base
from distill_jax.methods import token_kl
from distill_jax.registry import register

RELATIONS = ('query', 'key', 'value')


@register('methods', 'token_minilmv2')
@dataclasses.dataclass(frozen=True)
class TokenMiniLMv2(token_kl.TokenForwardKL):
  """Forward KL plus MiniLMv2's query-query, key-key and value-value relation KL.

  Attributes:
    layer_map: which student block learns from which teacher block
      (``layer_maps.LayerMap``; default the last from the last).
    relation_heads: the relation-head count ``R`` (> 0), independent of both
      models' head counts.
    relations: which of ``'query'``, ``'key'``, ``'value'`` are related.
    relation_weight: weight of the relation term (>= 0).
  """
  layer_map: layer_maps.LayerMap = 'last'
  relation_heads: int = 8
  relations: tuple[str, ...] = RELATIONS
  relation_weight: float = 1.0

  def __post_init__(self):
    super().__post_init__()
    base.check_number('token_minilmv2.relation_weight', self.relation_weight,
                      non_negative=True)
    if not isinstance(self.relation_heads, int) or self.relation_heads < 1:
      raise ValueError(f'token_minilmv2.relation_heads must be a positive integer, got '
                       f'{self.relation_heads!r}.')
    unknown = set(self.relations) - set(RELATIONS)
    if unknown or not self.relations:
      raise ValueError(f'token_minilmv2.relations: choose one or more of '
                       f'{", ".join(RELATIONS)}; got {tuple(self.relations)}.')

  def attention_features(self, student_depth, teacher_depth):
    return layer_maps.block_features(self.layer_map, self.relations, student_depth,
                                     teacher_depth, 'token_minilmv2')

  def _check_widths(self, pairs_by_relation):
    widths = {f'{role} {relation}': x.shape[2] * x.shape[3]
              for relation, pairs in pairs_by_relation.items() for pair in pairs
              for role, x in zip(('student', 'teacher'), pair)}
    if any(width % self.relation_heads for width in widths.values()):
      common = math.gcd(*widths.values())
      divisors = [r for r in range(1, common + 1) if common % r == 0]
      listed = ', '.join(f'{name} {width}' for name, width in sorted(widths.items()))
      raise ValueError(
          f'token_minilmv2: relation_heads={self.relation_heads} must divide every width it '
          f'cuts ({listed}); choose one of {divisors}.')

  def loss(self, student_out, teacher_out, batch, aux, step):
    total, metrics = super().loss(student_out, teacher_out, batch, aux, step)
    allowed = token_relations.causal_allowed(batch['token_mask'])
    pairs_by_relation = {
        relation: layer_maps.feature_pairs(self.layer_map, student_out[1], teacher_out[1],
                                           relation, 'token_minilmv2')
        for relation in self.relations}
    self._check_widths(pairs_by_relation)
    terms = {}
    for relation, pairs in pairs_by_relation.items():
      kls = [token_base.masked_mean(token_relations.self_relation_kl(
          s, t, allowed, relation_heads=self.relation_heads), batch['token_mask'])
             for s, t in pairs]
      terms[f'{relation}_relation_kl'] = sum(kls) / len(kls)
    relation = sum(terms.values()) / len(terms)
    return total + self.relation_weight * relation, {**metrics, **terms}
