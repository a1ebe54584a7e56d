"""``token_skew_kl``: DistiLLM's skew KL per token (Ko et al. 2024).

With ``lam`` the skew (DistiLLM's alpha, 0.1 in the paper)::

  skew forward:  T**2 KL(p_t || lam p_t + (1 - lam) p_s)
  skew reverse:  T**2 KL(p_s || lam p_s + (1 - lam) p_t)

``lam=0`` is the plain forward (reverse) KL. The mixture keeps the divergence
finite and its gradient bounded where the student (teacher) gives a token
probability ~0. The mixture is formed in log space
(``logaddexp(log lam + log p, log(1 - lam) + log q)``).
"""

import dataclasses
import math

import jax
import jax.numpy as jnp

from distill_jax.losses import large_vocab
from distill_jax.methods import base
from distill_jax.methods import token_base
from distill_jax.registry import register


def skew_kl(student_logits: jax.Array, teacher_logits: jax.Array, *, lam: float,
            temperature: float, reverse: bool) -> jax.Array:
  """Per-token skew KL, ``[..., V] -> [...]`` float32; teacher not differentiated."""
  t = temperature
  log_p_s = jax.nn.log_softmax(student_logits.astype(jnp.float32) / t, axis=-1)
  log_p_t = jax.nn.log_softmax(
      jax.lax.stop_gradient(teacher_logits).astype(jnp.float32) / t, axis=-1)
  log_p, log_q = (log_p_s, log_p_t) if reverse else (log_p_t, log_p_s)
  if lam > 0:
    log_q = jnp.logaddexp(math.log(lam) + log_p, math.log1p(-lam) + log_q)
  p = jnp.exp(log_p)
  return t**2 * jnp.sum(jnp.where(p > 0, p * (log_p - log_q), 0.0), axis=-1)


@register('methods', 'token_skew_kl')
@dataclasses.dataclass(frozen=True)
class TokenSkewKL(token_base.TokenDivergence):
  """Skew (forward or reverse) KL at every response token.

  Attributes:
    lam: the skew, in ``[0, 1)``.
    reverse: skew reverse KL (``p_s`` first) instead of skew forward KL.
  """
  lam: float = 0.1
  reverse: bool = False
  fused = True

  def __post_init__(self):
    super().__post_init__()
    base.check_number('token_skew_kl.lam', self.lam, unit_interval=True)
    if self.lam >= 1:
      raise ValueError(f'token_skew_kl.lam must be < 1 (1 gives 0), got {self.lam}.')

  def divergence(self, student_logits, teacher_logits):
    return skew_kl(student_logits, teacher_logits, lam=self.lam,
                   temperature=self.temperature, reverse=self.reverse)

  def fused_divergence(self, student, teacher, loss_mask):
    return large_vocab.on_linear_logits(large_vocab.fused_linear_skew_kl, student, teacher,
                                        lam=self.lam, reverse=self.reverse,
                                        temperature=self.temperature, row_weights=loss_mask)
