"""How several teachers' outputs become one soft target (``config.scheme.combine``).

Each rule is registered in the ``teacher_combiners`` namespace and maps the
teachers' logits to one logit tensor that the distillation method then treats
as "the teacher": ``fn(logits, labels, *, weights, temperature) -> [B, K]``.

- ``weighted``: ``T * log(sum_i w_i softmax(z_i / T))``: at the method's
  temperature ``T`` (set ``combine_temperature`` to it) the target is exactly
  the weighted average of the teachers' softened distributions.
- ``confidence``: the same average with per-example weights
  ``softmax_i(-CE(z_i, label))``: a teacher that is more confident about the
  true label counts more (CA-MKD, Zhang et al., 2022).
- ``log_mean``: ``sum_i w_i log_softmax(z_i)``: averaging in log space (a
  weighted geometric mean of the distributions, at every temperature).

With one teacher every rule returns its logits up to a per-example constant,
so every method gives the offline loss (to float rounding).
"""

from typing import Sequence

import jax
import jax.numpy as jnp
import optax

from distill_jax.registry import register

Array = jax.Array


def _stack(logits: Sequence[Array]) -> Array:
  return jnp.stack([x.astype(jnp.float32) for x in logits])   # [n, B, K]


def _mixture(logits: Array, weights: Array, temperature: float) -> Array:
  """``T * log(sum_i w_i softmax(z_i / T))`` for ``weights`` ``[n]`` or ``[n, B]``."""
  log_probs = jax.nn.log_softmax(logits / temperature, axis=-1)
  weights = weights.reshape(weights.shape + (1,) * (3 - weights.ndim))
  return temperature * jax.nn.logsumexp(log_probs, axis=0, b=weights)


@register('teacher_combiners', 'weighted')
def weighted(logits: Sequence[Array], labels: Array, *, weights: Array,
             temperature: float) -> Array:
  """Fixed-weight average of the softened distributions.

  Args:
    logits: one ``[B, K]`` per teacher.
    labels: int ``[B]`` (unused).
    weights: ``[n]``, non-negative, summing to 1.
    temperature: ``T > 0`` of the averaged distributions.

  Returns:
    float32 ``[B, K]``.
  """
  del labels
  return _mixture(_stack(logits), weights, temperature)


@register('teacher_combiners', 'confidence')
def confidence(logits: Sequence[Array], labels: Array, *, weights: Array,
               temperature: float) -> Array:
  """Per-example weights ``softmax_i(-CE(z_i, y))`` (``weights`` unused), averaged at ``T``."""
  del weights
  stacked = _stack(logits)
  ce = jax.vmap(lambda z: optax.softmax_cross_entropy_with_integer_labels(z, labels))(stacked)
  example_weights = jax.lax.stop_gradient(jax.nn.softmax(-ce, axis=0))   # [n, B]
  return _mixture(stacked, example_weights, temperature)


@register('teacher_combiners', 'log_mean')
def log_mean(logits: Sequence[Array], labels: Array, *, weights: Array,
             temperature: float) -> Array:
  """``sum_i w_i log_softmax(z_i)`` (``temperature`` unused: it commutes)."""
  del labels, temperature
  log_probs = jax.nn.log_softmax(_stack(logits), axis=-1)
  return jnp.tensordot(weights, log_probs, axes=1)
