"""``token_hidden``: hidden-state distillation for decoders, plus the token-level forward KL.

Each student block output ``hidden_<s>`` ``[B, T, D_s]`` that ``layer_map``
pairs with a teacher block (``methods/layer_maps.py``: ``'last'``,
``'uniform'``, ``'last:<k>'``, explicit ``s:t`` pairs or a function) is mapped
by a learnable linear projection ``[D_s, D_t]`` (only when the widths differ)
onto the teacher's ``hidden_<t>`` ``[B, T, D_t]``, and the mean squared error
over the hidden axis is averaged over the response tokens (FitNets / TinyBERT
hidden-state transfer)::

  loss = ce_weight * CE + (1 - ce_weight) * T**2 KL(p_t || p_s)
         + hidden_weight * mean_pairs masked_mean(mean_d (n(h_s W) - n(h_t))**2)

``n`` is RMS normalization without a learned scale (``normalize``, the
default): a pre-norm decoder's residual stream is not normalized and grows to
large norms with a few huge outlier features (SmolLM2-135M's block 14 has a
mean square of ~24,000), which would swamp every other term; each block reads
it through its RMSNorm, so that is what is compared. ``normalize=False``
compares the raw states (TinyBERT, on post-norm BERT, does).
"""

import dataclasses

import jax
import jax.numpy as jnp

from distill_jax.methods import base
from distill_jax.methods import layer_maps
from distill_jax.methods import token_base
from distill_jax.methods import token_kl
from distill_jax.registry import register


def _rms_normalized(x: jax.Array) -> jax.Array:
  """``x / rms(x)`` over the last axis."""
  return x * jax.lax.rsqrt(jnp.mean(x**2, axis=-1, keepdims=True) + 1e-12)


@register('methods', 'token_hidden')
@dataclasses.dataclass(frozen=True)
class TokenHiddenState(token_kl.TokenForwardKL):
  """Forward KL plus projected hidden-state MSE on paired blocks.

  Attributes:
    layer_map: which student block learns from which teacher block
      (``layer_maps.LayerMap``; default the last from the last).
    hidden_weight: weight of the hidden-state term (>= 0).
    normalize: RMS-normalize both sides before the squared error (module
      docstring).
  """
  layer_map: layer_maps.LayerMap = 'last'
  hidden_weight: float = 1.0
  normalize: bool = True

  def __post_init__(self):
    super().__post_init__()
    base.check_number('token_hidden.hidden_weight', self.hidden_weight, non_negative=True)

  def _pairs(self, student_features, teacher_features):
    """The paired ``(hidden_<s>, hidden_<t>)`` block outputs."""
    return layer_maps.feature_pairs(self.layer_map, student_features, teacher_features,
                                    'hidden', 'token_hidden')

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
      if self.normalize:
        hs, ht = _rms_normalized(hs), _rms_normalized(ht)
      terms.append(token_base.masked_mean(jnp.mean((hs - ht)**2, -1), batch['loss_mask']))
    hidden = sum(terms) / len(terms)
    return total + self.hidden_weight * hidden, {**metrics, 'hidden': hidden}
