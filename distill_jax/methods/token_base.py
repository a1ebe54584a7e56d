"""The shared base of the token-level (language-model) methods, ``methods/token_*.py``.

Language-model batches carry, aligned with the model's logits ``[B, T, V]``:
``targets`` int32 ``[B, T]`` (the next token at each position) and
``loss_mask`` float32 ``[B, T]`` (1 on the response tokens that are
distilled, 0 on prompt and padding). Every token-level method is a
``TokenMethod`` (``task = 'language_model'``). Every token-level loss is a
masked mean over those tokens of a per-token divergence ``[B, T]``,
optionally mixed with the next-token cross-entropy on ``targets``
(``TokenDivergence``)::

    loss = ce_weight * CE + (1 - ce_weight) * divergence

Methods with ``fused = True`` also take the logits as
``losses.large_vocab.LinearLogits`` (hidden states and output head, never
formed): the step then runs them on the fused large-vocabulary kernels with
the loss mask as ``row_weights`` (``train.lm_logits``), same values and
gradients to float32 round-off.
"""

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import optax

from distill_jax.losses import large_vocab
from distill_jax.methods import base

Array = jax.Array


def masked_mean(values: Array, mask: Array) -> Array:
  """Mean of ``values`` ``[B, T]`` over the tokens where ``mask`` ``[B, T]`` is 1."""
  mask = mask.astype(jnp.float32)
  return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def check_vocabularies(student_logits: Array, teacher_logits: Array) -> None:
  """Teacher and student must share the vocabulary; no silent truncation."""
  vs, vt = student_logits.shape[-1], teacher_logits.shape[-1]
  if vs != vt:
    raise ValueError(
        f'Token-level distillation needs one vocabulary: the student has {vs} '
        f'tokens and the teacher {vt}. Use a student built on the teacher\'s '
        'tokenizer (same vocab_size), or sequence-level distillation, which only '
        'needs the teacher\'s text.')
  if student_logits.shape != teacher_logits.shape:
    raise ValueError(f'Student logits {student_logits.shape} and teacher logits '
                     f'{teacher_logits.shape} must have the same [B, T, V] shape.')


def next_token_ce(logits: Array | large_vocab.LinearLogits,
                  batch: dict[str, Array]) -> Array:
  """Masked mean next-token cross-entropy of ``logits`` ``[B, T, V]`` (nats)."""
  if isinstance(logits, large_vocab.LinearLogits):
    ce = large_vocab.on_linear_logits(large_vocab.fused_linear_cross_entropy, logits,
                                      labels=batch['targets'], row_weights=batch['loss_mask'])
  else:
    ce = optax.softmax_cross_entropy_with_integer_labels(
        logits.astype(jnp.float32), batch['targets'])
  return masked_mean(ce, batch['loss_mask'])


class TokenMethod(base.Method):
  """A method of the ``'language_model'`` task.

  ``student_out`` and ``teacher_out`` are a decoder's ``(logits [B, T, V],
  features)`` (``hidden_<i>`` ``[B, T, D]`` block outputs); ``batch`` holds
  ``targets`` and ``loss_mask`` ``[B, T]`` (see the module docstring).
  ``fused``: the logits may come as ``LinearLogits`` (module docstring).
  """

  task = 'language_model'
  fused: ClassVar[bool] = False

  def attention_features(self, student_depth: int, teacher_depth: int
                         ) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The attention features this method reads, ``(the student's, the
    teacher's)`` (``Llama``'s ``attention_features``, e.g. ``attn_3``), for
    models of ``student_depth`` and ``teacher_depth`` blocks."""
    del student_depth, teacher_depth
    return (), ()


@dataclasses.dataclass(frozen=True)
class TokenDivergence(TokenMethod):
  """A per-token divergence between the two models' next-token distributions.

  Subclasses implement ``divergence(student_logits, teacher_logits) ->
  [B, T]`` and, with ``fused = True``, ``fused_divergence`` on
  ``LinearLogits``; this class masks, averages and mixes in the
  cross-entropy (only a metric, not differentiated, at ``ce_weight = 0``).

  Attributes:
    temperature: softmax temperature ``T > 0`` of both models.
    ce_weight: weight of the next-token cross-entropy on ``targets``, in
      ``[0, 1]``; the divergence gets ``1 - ce_weight``.
  """
  temperature: float = 1.0
  ce_weight: float = 0.0

  def __post_init__(self):
    base.check_temperature(f'{type(self).__name__}.temperature', self.temperature)
    base.check_number(f'{type(self).__name__}.ce_weight', self.ce_weight, unit_interval=True)

  def divergence(self, student_logits: Array, teacher_logits: Array) -> Array:
    raise NotImplementedError

  def fused_divergence(self, student: large_vocab.LinearLogits,
                       teacher: large_vocab.LinearLogits, loss_mask: Array) -> Array:
    """``divergence`` on never-formed logits, ``[B, T]`` (``loss_mask`` the rows' weights)."""
    raise NotImplementedError

  def loss(self, student_out, teacher_out, batch, aux, step):
    del aux, step
    student_logits, teacher_logits = student_out[0], teacher_out[0]
    check_vocabularies(student_logits, teacher_logits)
    if isinstance(student_logits, large_vocab.LinearLogits):
      divergence = self.fused_divergence(student_logits, teacher_logits, batch['loss_mask'])
    else:
      divergence = self.divergence(student_logits, teacher_logits)
    return self.combine(student_logits, divergence, batch)

  def combine(self, student_logits: Array | large_vocab.LinearLogits, divergence: Array,
              batch: dict[str, Array]) -> tuple[Array, dict[str, Array]]:
    """``(loss, metrics)`` from the per-token ``divergence`` ``[B, T]``: masked
    mean, mixed with the next-token cross-entropy of ``student_logits``."""
    div = masked_mean(divergence, batch['loss_mask'])
    ce = next_token_ce(student_logits if self.ce_weight else
                       jax.lax.stop_gradient(student_logits), batch)
    total = self.ce_weight * ce + (1.0 - self.ce_weight) * div
    return total, {'ce': ce, 'divergence': div}
