"""Logit distillation kernels: the KL family over the class axis.

Every kernel compares a student's and a teacher's logits ``[..., V]`` (``V``
classes or vocabulary entries, any leading batch/sequence axes) and returns one
value per example, ``[...]``; the caller reduces (mean over the batch, masked
mean over tokens, ...). The conventions, shared by all kernels here, follow
optax's losses (``optax.losses.softmax_cross_entropy``,
``optax.losses.kl_divergence_with_log_targets``):

* **Teacher is frozen.** ``teacher_logits`` goes through
  ``jax.lax.stop_gradient`` first: the gradient w.r.t. the teacher is exactly
  zero (CONTRIBUTING.md rule 2), even when teacher and student share
  parameters (self-distillation).
* **Temperature.** Both models' logits are divided by ``temperature`` before
  the softmax: ``p_t = softmax(teacher / T)``, ``p_s = softmax(student / T)``.
  ``temperature`` is keyword-only and is a scalar or an array broadcastable to
  the batch shape ``[...]`` (one temperature per example). A Python/NumPy
  value is checked at trace time (it must be finite and > 0, else
  ``ValueError``); a ``jax.Array`` (traced or not, e.g. a learned temperature)
  is allowed and is not checked. Gradients flow into a ``jax.Array``
  temperature through both models' softmaxes.
* **Temperature factor.** Each kernel is multiplied by the power of ``T`` that
  keeps its value and its student gradient O(1) as ``T`` grows (Hinton et
  al. 2015, section 2): ``T**2`` for the smooth divergences (``kl_divergence``,
  ``reverse_kl``, ``generalized_jsd``, ``soft_cross_entropy``), whose value
  and gradient shrink like ``1/T**2``, and ``T`` for ``total_variation``,
  whose value and gradient shrink like ``1/T``. With ``c = z - mean(z)`` the
  centred logits, ``T -> inf`` gives, for the KL kernels and the generalized
  JSD (any ``beta``) alike,
  ``T**2 * D -> 1/(2V) * sum((c_s - c_t)**2)`` (Hinton's logit-matching
  limit), and ``T * TV -> 1/(2V) * sum(|c_s - c_t|)``. At ``T = 1`` every
  factor is 1.
* **``where``**: an optional boolean mask over the class axis, broadcastable to
  the logits' shape ``[..., V]`` (``[V]`` for one vocabulary mask, ``[B, 1,
  V]``, ...). Masked-out classes are removed from *both* distributions before
  the softmax, which renormalizes over the remaining classes, so masking is
  exactly slicing the kept classes out. A row whose classes are all masked (or
  all ``-inf``) has empty support and gives 0.
* **Numerics.** Inputs of any floating dtype (bf16, fp16, fp32) are upcast and
  the math is done in float32 (float64 inputs stay float64 when x64 is on);
  the output is float32. Log-probabilities come from a max-shifted
  log-sum-exp, so logits of +-1e4 are fine. ``0 * log 0`` is 0: a class with
  zero probability under the distribution that weights a sum (e.g. ``-inf``
  logits in both models) contributes nothing, to the value and to the
  gradient. A class the teacher supports and the student gives ``-inf``
  (probability exactly 0) makes ``kl_divergence`` and ``soft_cross_entropy``
  ``inf``, as it should; the JSD and TV are bounded and stay finite.
* **Shape checks** happen at trace time: ``ValueError`` naming both shapes
  when student and teacher logits differ, or when ``where``/``temperature``
  do not broadcast.

Kernels are not jitted themselves (callers jit the whole step); they work
under ``jax.jit``, ``jax.vmap`` and ``jax.grad``.
"""

import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from distill_jax.registry import register

Array = jax.Array
ArrayLike = jax.typing.ArrayLike


class _Tempered(NamedTuple):
  """Both models' tempered log-probabilities and probabilities, ``[..., V]``."""
  log_p_student: Array
  log_p_teacher: Array
  p_student: Array
  p_teacher: Array
  temperature: Array  # [] or broadcastable to the batch shape [...]


def _is_host_value(x: Any) -> bool:
  """True for Python/NumPy values (checkable at trace time), not jax.Arrays."""
  return isinstance(x, (numbers.Number, np.ndarray, np.generic, list, tuple))


def _check_logits(fn: str, name: str, x: Any) -> Array:
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(
        f'{fn}: {name} must be a floating-point array [..., V]; got dtype '
        f'{x.dtype} with shape {x.shape}.')
  if x.ndim < 1:
    raise ValueError(
        f'{fn}: {name} needs a class axis (shape [..., V]); got a scalar.')
  return x


def _check_temperature(fn: str, temperature: Any, shape: tuple[int, ...],
                       dtype: Any) -> Array:
  """Validates a host temperature; returns it as an array of ``dtype``."""
  batch_shape = shape[:-1]
  if _is_host_value(temperature):
    value = np.asarray(temperature)
    if (value.dtype == np.bool_ or not np.issubdtype(value.dtype, np.number)
        or not np.all(np.isfinite(value)) or not np.all(value > 0)):
      raise ValueError(
          f'{fn}: temperature must be finite and > 0; got {temperature!r}.')
  t = jnp.asarray(temperature, dtype)
  try:
    broadcast = jnp.broadcast_shapes(t.shape, batch_shape)
  except ValueError:
    broadcast = None
  if broadcast != batch_shape:
    raise ValueError(
        f'{fn}: temperature must be a scalar or broadcastable to the batch '
        f'shape {batch_shape} of the logits (shape {shape} = [..., V]); got '
        f'shape {t.shape}.')
  return t


def _check_where(fn: str, where: Any, shape: tuple[int, ...]) -> Array:
  where = jnp.asarray(where)
  if where.dtype != jnp.bool_:
    raise TypeError(
        f'{fn}: where must be a boolean mask over the classes (True = keep); '
        f'got dtype {where.dtype}.')
  try:
    broadcast = jnp.broadcast_shapes(where.shape, shape)
  except ValueError:
    broadcast = None
  if broadcast != shape:
    raise ValueError(
        f'{fn}: where must be broadcastable to the logits shape {shape}; got '
        f'shape {where.shape}.')
  return where


def _log_softmax(logits: Array, where: Array | None) -> Array:
  """Log-softmax over the last axis, ``[..., V] -> [..., V]``.

  Masked-out classes get ``-inf``. A row with empty support (all classes
  masked or ``-inf``) gives ``-inf`` everywhere instead of NaN, with finite
  (zero) gradients.
  """
  if where is not None:
    logits = jnp.where(where, logits, -jnp.inf)
  shift = jnp.max(logits, axis=-1, keepdims=True)
  shift = jax.lax.stop_gradient(jnp.where(jnp.isfinite(shift), shift, 0.0))
  shifted = logits - shift
  total = jnp.sum(jnp.exp(shifted), axis=-1, keepdims=True)
  # total >= 1 unless the row is empty (the max class contributes exp(0)).
  total = jnp.where(total > 0, total, 1.0)
  return shifted - jnp.log(total)


def _tempered(fn: str, student_logits: ArrayLike, teacher_logits: ArrayLike,
              temperature: Any, where: ArrayLike | None) -> _Tempered:
  """Checks the inputs and returns both tempered distributions (fp32 math)."""
  student = _check_logits(fn, 'student_logits', student_logits)
  teacher = _check_logits(fn, 'teacher_logits', teacher_logits)
  if student.shape != teacher.shape:
    raise ValueError(
        f'{fn}: student_logits and teacher_logits must have the same shape '
        f'[..., V]; got student_logits {student.shape} and teacher_logits '
        f'{teacher.shape}.')
  if where is not None:
    where = _check_where(fn, where, student.shape)
  dtype = jnp.promote_types(jnp.result_type(student, teacher), jnp.float32)
  t = _check_temperature(fn, temperature, student.shape, dtype)
  teacher = jax.lax.stop_gradient(teacher)
  t_last = t[..., None]
  log_p_s = _log_softmax(student.astype(dtype) / t_last, where)
  log_p_t = _log_softmax(teacher.astype(dtype) / t_last, where)
  return _Tempered(log_p_s, log_p_t, jnp.exp(log_p_s), jnp.exp(log_p_t), t)


def _kl(p: Array, log_p: Array, log_q: Array) -> Array:
  """``KL(P || Q) = sum p (log p - log q)`` over the last axis, 0 where p = 0.

  Shapes ``[..., V] -> [...]``. Where ``p = 0`` the difference is replaced
  before it is multiplied (``-inf - -inf`` would be NaN), so both the value
  and the gradient of those terms are exactly 0.
  """
  support = p > 0
  diff = jnp.where(support, log_p - log_q, 0.0)
  return jnp.sum(jnp.where(support, p * diff, 0.0), axis=-1)


@register('losses', 'kl')
def kl_divergence(student_logits: ArrayLike, teacher_logits: ArrayLike, *,
                  temperature: ArrayLike = 1.0,
                  where: ArrayLike | None = None) -> Array:
  """Forward KL, ``T**2 * KL(softmax(teacher/T) || softmax(student/T))``.

  The classic soft-target distillation loss (Hinton et al. 2015); mode
  covering: the student is pushed to put mass wherever the teacher does. Its
  gradient w.r.t. the student logits is ``T * (p_s - p_t)``.

  Args:
    student_logits: student logits ``[..., V]`` (e.g. ``[B, V]``,
      ``[B, L, V]``), any floating dtype.
    teacher_logits: teacher logits, same shape; never differentiated.
    temperature: softmax temperature ``T > 0``: a scalar or an array
      broadcastable to ``[...]``; traced values are allowed.
    where: optional boolean class mask broadcastable to ``[..., V]``; masked
      classes are dropped from both distributions (same as slicing them out).

  Returns:
    ``[...]`` float32: ``T**2 * sum_v p_t (log p_t - log p_s)``; ``>= 0``,
    0 iff the tempered distributions agree; ``inf`` if the student gives
    probability 0 to a class the teacher supports.

  Raises:
    ValueError: shapes differ or do not broadcast, or a Python/NumPy
      temperature is not finite and > 0.
    TypeError: non-floating logits or a non-boolean ``where``.
  """
  d = _tempered('kl_divergence', student_logits, teacher_logits, temperature,
                where)
  return d.temperature**2 * _kl(d.p_teacher, d.log_p_teacher, d.log_p_student)


@register('losses', 'reverse_kl')
def reverse_kl(student_logits: ArrayLike, teacher_logits: ArrayLike, *,
               temperature: ArrayLike = 1.0,
               where: ArrayLike | None = None) -> Array:
  """Reverse KL, ``T**2 * KL(softmax(student/T) || softmax(teacher/T))``.

  Mode seeking (MiniLLM, Gu et al. 2024; GKD with ``beta=1``): the student is
  penalized for mass where the teacher has little, not for missing modes.

  Args:
    student_logits: student logits ``[..., V]``, any floating dtype.
    teacher_logits: teacher logits, same shape; never differentiated.
    temperature: softmax temperature ``T > 0``: a scalar or an array
      broadcastable to ``[...]``; traced values are allowed.
    where: optional boolean class mask broadcastable to ``[..., V]``.

  Returns:
    ``[...]`` float32: ``T**2 * sum_v p_s (log p_s - log p_t)``; ``>= 0``;
    ``inf`` if the student supports a class the teacher gives probability 0.

  Raises:
    ValueError: shapes differ or do not broadcast, or a Python/NumPy
      temperature is not finite and > 0.
    TypeError: non-floating logits or a non-boolean ``where``.
  """
  d = _tempered('reverse_kl', student_logits, teacher_logits, temperature,
                where)
  return d.temperature**2 * _kl(d.p_student, d.log_p_student, d.log_p_teacher)


def _scaled_jsd(d: _Tempered, beta: Array) -> Array:
  """``JSD_beta / (beta (1 - beta))`` for ``0 < beta < 1``, ``[...]``.

  With ``M = beta P_t + (1 - beta) P_s`` (in log space), the two log-ratios are
  computed directly from ``a = log p_t - log p_s`` rather than as
  ``log p - log m``:
    ``log(p_t / m) = -logaddexp(log beta, log(1 - beta) - a)``,
    ``log(p_s / m) = -logaddexp(log(1 - beta) , log beta + a)``,
  which is accurate to float32 relative precision even when ``M`` is close to
  one of them (``beta`` near 0 or 1), where ``log p - log m`` would cancel
  catastrophically before the division by ``beta (1 - beta)``. Both are
  finite when the other distribution has a zero.
  """
  log_beta, log_1m_beta = jnp.log(beta), jnp.log1p(-beta)
  a = d.log_p_teacher - d.log_p_student
  on_t, on_s = d.p_teacher > 0, d.p_student > 0
  # a is NaN where both are -inf; replace it where it is not used (the
  # double-where keeps the gradient of the unused branch from being NaN).
  a_t = jnp.where(on_t, a, 0.0)
  a_s = jnp.where(on_s, a, 0.0)
  log_ratio_t = -jnp.logaddexp(log_beta, log_1m_beta - a_t)
  log_ratio_s = -jnp.logaddexp(log_1m_beta, log_beta + a_s)
  kl_t_m = jnp.sum(jnp.where(on_t, d.p_teacher * log_ratio_t, 0.0), axis=-1)
  kl_s_m = jnp.sum(jnp.where(on_s, d.p_student * log_ratio_s, 0.0), axis=-1)
  # beta KL(P_t||M) + (1-beta) KL(P_s||M), divided by beta (1 - beta).
  return kl_t_m / (1.0 - beta) + kl_s_m / beta


@register('losses', 'generalized_jsd')
def generalized_jsd(student_logits: ArrayLike, teacher_logits: ArrayLike, *,
                    beta: ArrayLike = 0.5, temperature: ArrayLike = 1.0,
                    where: ArrayLike | None = None) -> Array:
  """GKD's generalized Jensen-Shannon divergence, normalized to hit both KLs.

  Agarwal et al. 2024 ("On-Policy Distillation of Language Models: Learning
  from Self-Generated Mistakes", GKD) define, with ``P_t``, ``P_s`` the
  tempered teacher and student distributions and
  ``M = beta P_t + (1 - beta) P_s``::

    JSD_beta = beta KL(P_t || M) + (1 - beta) KL(P_s || M).

  ``JSD_beta`` itself tends to 0 at both ends (``M`` becomes one of the two),
  so this kernel returns it **divided by** ``beta (1 - beta)``::

    generalized_jsd = T**2 * JSD_beta / (beta (1 - beta))     0 < beta < 1
                    = T**2 * KL(P_t || P_s)  (= kl_divergence)  beta == 0
                    = T**2 * KL(P_s || P_t)  (= reverse_kl)     beta == 1

  The normalized value is continuous in ``beta``: as ``beta -> 0`` it tends
  to the forward KL and as ``beta -> 1`` to the reverse KL (the endpoint
  values are those limits, computed directly since the formula is 0/0
  there), matching the public API of CONTRIBUTING.md ("beta=0: forward KL,
  beta=1: reverse KL, as in GKD") and TRL's ``generalized_jsd_loss``
  endpoints. In between it is GKD's ``JSD_beta`` times the constant
  ``1 / (beta (1 - beta))``
  (``4 * JSD`` at ``beta = 0.5``, where ``JSD`` is the usual Jensen-Shannon
  divergence, at most ``4 log 2``); multiply by ``beta * (1 - beta)`` to get
  GKD's / TRL's unnormalized value. For every ``beta`` it has the same
  high-temperature limit as ``kl_divergence``, ``1/(2V) sum((c_s -
  c_t)**2)``. It is bounded for ``0 < beta < 1`` (finite even when one model
  gives a class probability 0).

  Args:
    student_logits: student logits ``[..., V]``, any floating dtype.
    teacher_logits: teacher logits, same shape; never differentiated.
    beta: teacher weight in the mixture, in ``[0, 1]``; a scalar. A
      Python/NumPy value is checked (``ValueError`` outside ``[0, 1]``) and
      picks the endpoint formula in Python; a traced value is allowed and the
      endpoints are selected with ``jnp.where`` (the three branches are all
      computed then; a traced value outside ``[0, 1]`` acts as the nearest
      endpoint). No gradient is meant to flow into ``beta``.
    temperature: softmax temperature ``T > 0``: a scalar or an array
      broadcastable to ``[...]``; traced values are allowed.
    where: optional boolean class mask broadcastable to ``[..., V]``.

  Returns:
    ``[...]`` float32, ``>= 0``, 0 iff the tempered distributions agree.

  Raises:
    ValueError: shapes differ or do not broadcast, a Python/NumPy temperature
      is not finite and > 0, a Python/NumPy beta is outside ``[0, 1]``, or
      beta is not a scalar.
    TypeError: non-floating logits or a non-boolean ``where``.
  """
  fn = 'generalized_jsd'
  if _is_host_value(beta):
    value = np.asarray(beta)
    if (value.ndim != 0 or value.dtype == np.bool_
        or not np.issubdtype(value.dtype, np.number)
        or not 0.0 <= float(value) <= 1.0):
      raise ValueError(f'{fn}: beta must be a number in [0, 1]; got {beta!r}.')
  elif jnp.ndim(beta) != 0:
    raise ValueError(f'{fn}: beta must be a scalar; got shape '
                     f'{jnp.shape(beta)}.')
  d = _tempered(fn, student_logits, teacher_logits, temperature, where)
  scale = d.temperature**2
  forward = lambda: _kl(d.p_teacher, d.log_p_teacher, d.log_p_student)
  reverse = lambda: _kl(d.p_student, d.log_p_student, d.log_p_teacher)
  if _is_host_value(beta):
    beta = float(beta)
    if beta == 0.0:
      return scale * forward()
    if beta == 1.0:
      return scale * reverse()
    return scale * _scaled_jsd(d, jnp.asarray(beta, d.log_p_student.dtype))
  beta = jnp.asarray(beta, d.log_p_student.dtype)
  interior = (beta > 0) & (beta < 1)
  middle = _scaled_jsd(d, jnp.where(interior, beta, 0.5))
  value = jnp.where(beta <= 0, forward(),
                    jnp.where(beta >= 1, reverse(), middle))
  return scale * value


@register('losses', 'total_variation')
def total_variation(student_logits: ArrayLike, teacher_logits: ArrayLike, *,
                    temperature: ArrayLike = 1.0,
                    where: ArrayLike | None = None) -> Array:
  """Total variation distance, ``T * 0.5 * sum_v |p_t - p_s|``.

  Note the factor is ``T``, not ``T**2``: TV is first order in the logit
  difference, so at high temperature both its value and its student gradient
  shrink like ``1/T`` (the KL family's shrink like ``1/T**2``); ``T`` keeps
  them O(1), and ``T * TV -> 1/(2V) sum(|c_s - c_t|)`` (centred logits) as
  ``T -> inf``. At ``T = 1`` this is the plain TV distance, in ``[0, 1]``; in
  general it lies in ``[0, T]``. The gradient at classes where
  ``p_t == p_s`` exactly is taken as 0 (``sign(0) = 0``).

  Args:
    student_logits: student logits ``[..., V]``, any floating dtype.
    teacher_logits: teacher logits, same shape; never differentiated.
    temperature: softmax temperature ``T > 0``: a scalar or an array
      broadcastable to ``[...]``; traced values are allowed.
    where: optional boolean class mask broadcastable to ``[..., V]``.

  Returns:
    ``[...]`` float32 in ``[0, T]``.

  Raises:
    ValueError: shapes differ or do not broadcast, or a Python/NumPy
      temperature is not finite and > 0.
    TypeError: non-floating logits or a non-boolean ``where``.
  """
  d = _tempered('total_variation', student_logits, teacher_logits,
                temperature, where)
  return d.temperature * 0.5 * jnp.sum(jnp.abs(d.p_teacher - d.p_student),
                                       axis=-1)


@register('losses', 'soft_cross_entropy')
def soft_cross_entropy(student_logits: ArrayLike, teacher_logits: ArrayLike,
                       *, temperature: ArrayLike = 1.0,
                       where: ArrayLike | None = None) -> Array:
  """Soft-target cross-entropy, ``-T**2 * sum_v p_t log p_s``.

  Equals ``T**2 * (H(p_t) + KL(p_t || p_s))``: the teacher entropy term is
  constant in the student, so its student gradient is exactly
  ``kl_divergence``'s, ``T * (p_s - p_t)``; only the reported value differs
  (it does not vanish when the student matches the teacher). For hard integer
  labels use ``optax.losses.softmax_cross_entropy_with_integer_labels``.

  Args:
    student_logits: student logits ``[..., V]``, any floating dtype.
    teacher_logits: teacher logits, same shape; never differentiated.
    temperature: softmax temperature ``T > 0``: a scalar or an array
      broadcastable to ``[...]``; traced values are allowed.
    where: optional boolean class mask broadcastable to ``[..., V]``.

  Returns:
    ``[...]`` float32, ``>= T**2 * H(p_t) >= 0``; ``inf`` if the student gives
    probability 0 to a class the teacher supports.

  Raises:
    ValueError: shapes differ or do not broadcast, or a Python/NumPy
      temperature is not finite and > 0.
    TypeError: non-floating logits or a non-boolean ``where``.
  """
  d = _tempered('soft_cross_entropy', student_logits, teacher_logits,
                temperature, where)
  support = d.p_teacher > 0
  log_q = jnp.where(support, d.log_p_student, 0.0)
  cross = jnp.sum(jnp.where(support, d.p_teacher * log_q, 0.0), axis=-1)
  return -d.temperature**2 * cross
