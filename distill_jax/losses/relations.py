"""Relation distillation kernels: structure among the examples of a batch.

These compare how the examples of one batch relate to each other (Gram
matrices, distances, angles, similarity distributions, correlations), so
every value depends on the whole batch. Each kernel still returns one value
per example (its row of the relation), ``[B]``, such that the batch mean is
the paper's / RepDistiller's loss; the caller takes that mean. fp32 math, the
teacher behind ``jax.lax.stop_gradient``, shapes checked at trace time.
Embeddings are ``[B, D]``; feature maps ``[B, ...]`` are flattened.
"""

import jax
import jax.numpy as jnp

from distill_jax.losses.features import as_float32, check_same_shape, float32_pair, l2_normalize
from distill_jax.registry import register

Array = jax.Array


def _flat_pair(fn: str, student: Array, teacher: Array) -> tuple[Array, Array]:
  student, teacher = float32_pair(student, teacher)
  if student.ndim < 2 or student.shape[0] != teacher.shape[0]:
    raise ValueError(f'{fn}: expects [B, ...] inputs with the same batch size; got '
                     f'student {student.shape} and teacher {teacher.shape}.')
  return student.reshape(student.shape[0], -1), teacher.reshape(teacher.shape[0], -1)


def normalized_gram(features: Array) -> Array:
  """Tung & Mori (2019): ``G = f f^T`` with L2-normalized rows, ``[B, D] -> [B, B]``."""
  return l2_normalize(features @ features.T)


@register('losses', 'similarity_preserving')
def similarity_preserving(student: Array, teacher: Array) -> Array:
  """SP: ``sum_j (G_t - G_s)_ij**2 / B`` for row ``i`` of the normalized Grams.

  Args:
    student: ``[B, ...]`` (flattened to ``[B, D_s]``).
    teacher: ``[B, ...]`` with any ``D_t``; never differentiated.

  Returns:
    ``[B]`` float32; the batch mean is ``||G_t - G_s||_F**2 / B**2``
    (RepDistiller ``Similarity``).
  """
  s, t = _flat_pair('similarity_preserving', student, teacher)
  diff = normalized_gram(t) - normalized_gram(s)
  return jnp.sum(diff * diff, axis=-1) / s.shape[0]


def pairwise_distances(x: Array, eps: float = 1e-12) -> Array:
  """Euclidean distances ``[B, D] -> [B, B]``, zero diagonal, finite gradients."""
  squared = jnp.sum(x * x, -1)
  d2 = jnp.maximum(squared[:, None] + squared[None, :] - 2 * x @ x.T, eps)
  off_diagonal = ~jnp.eye(x.shape[0], dtype=bool)
  return jnp.where(off_diagonal, jnp.sqrt(d2), 0.0)


def _mean_normalized_distances(x: Array) -> Array:
  d = pairwise_distances(x)
  count = x.shape[0] * (x.shape[0] - 1)
  return d / (jnp.sum(d) / max(count, 1))


def _smooth_l1(x: Array) -> Array:
  """Huber loss with ``beta = 1`` (``torch.nn.functional.smooth_l1_loss``)."""
  a = jnp.abs(x)
  return jnp.where(a < 1.0, 0.5 * x * x, a - 0.5)


@register('losses', 'rkd_distance')
def rkd_distance(student: Array, teacher: Array) -> Array:
  """RKD distance loss (Park et al. 2019).

  Pairwise distances, each divided by the mean non-zero distance of its
  batch, compared with the Huber loss. Zero for identical embeddings and
  invariant to scaling either embedding.

  Args:
    student: ``[B, D_s]`` embeddings.
    teacher: ``[B, D_t]``; never differentiated.

  Returns:
    ``[B]`` float32, row ``i`` = mean over ``j`` (RepDistiller ``RKDLoss``
    distance term after the batch mean).
  """
  s, t = _flat_pair('rkd_distance', student, teacher)
  return jnp.mean(_smooth_l1(_mean_normalized_distances(s) - _mean_normalized_distances(t)), -1)


def _angles(x: Array) -> Array:
  """``cos`` of the angle at ``i`` between ``j`` and ``k``: ``[B, D] -> [B, B, B]``."""
  e = l2_normalize(x[None, :, :] - x[:, None, :])
  return jnp.einsum('ijd,ikd->ijk', e, e)


@register('losses', 'rkd_angle')
def rkd_angle(student: Array, teacher: Array) -> Array:
  """RKD angle loss: Huber loss of the triplets' angle cosines.

  Args:
    student: ``[B, D_s]`` embeddings.
    teacher: ``[B, D_t]``; never differentiated.

  Returns:
    ``[B]`` float32, row ``i`` = mean over ``j, k``; invariant to scaling and
    translating either embedding.
  """
  s, t = _flat_pair('rkd_angle', student, teacher)
  return jnp.mean(_smooth_l1(_angles(s) - _angles(t)), axis=(1, 2))


def _cosine_similarity_distribution(x: Array) -> Array:
  x = l2_normalize(x)
  similarity = (x @ x.T + 1.0) / 2.0
  return similarity / jnp.sum(similarity, axis=1, keepdims=True)


@register('losses', 'pkt')
def probabilistic_knowledge_transfer(student: Array, teacher: Array, *,
                                     eps: float = 1e-7) -> Array:
  """PKT (Passalis & Tefas 2018): KL between cosine-similarity distributions.

  Each row of the cosine similarity, shifted to ``[0, 1]`` and normalized to
  sum 1, is a distribution over the batch; the loss is
  ``KL(teacher row || student row)``, divided by ``B``.

  Args:
    student: ``[B, D_s]``.
    teacher: ``[B, D_t]``; never differentiated.
    eps: smoothing inside the logarithm.

  Returns:
    ``[B]`` float32; the batch mean is RepDistiller ``PKT.cosine_similarity_loss``.
  """
  s, t = _flat_pair('probabilistic_knowledge_transfer', student, teacher)
  p_s, p_t = _cosine_similarity_distribution(s), _cosine_similarity_distribution(t)
  return jnp.mean(p_t * jnp.log((p_t + eps) / (p_s + eps)), axis=-1)


@register('losses', 'correlation_congruence')
def correlation_congruence(student: Array, teacher: Array) -> Array:
  """CC (Peng et al. 2019), RepDistiller's form: ``sum_d |s_i - t_i|_d |s_{i+1} - t_{i+1}|_d``.

  Unlike the other kernels, both arguments are differentiated: CC compares two
  *learned* embeddings (the teacher's embedding head is trained with the
  student). Pass ``jax.lax.stop_gradient(teacher)`` to freeze that side.

  Args:
    student: ``[B, D]`` student embeddings.
    teacher: ``[B, D]`` teacher embeddings (same ``D``).

  Returns:
    ``[B - 1]`` float32, one value per consecutive pair of examples; their
    mean is RepDistiller ``Correlation``.
  """
  s, t = as_float32(student), as_float32(teacher)
  check_same_shape('correlation_congruence', s, t)
  delta = jnp.abs(s - t).reshape(s.shape[0], -1)
  return jnp.sum(delta[:-1] * delta[1:], axis=-1)


def _pearson_distance(a: Array, b: Array) -> Array:
  """``1 - pearson(a, b)`` along the last axis, ``[..., N] -> [...]``."""
  a = a - a.mean(-1, keepdims=True)
  b = b - b.mean(-1, keepdims=True)
  cosine = jnp.sum(a * b, -1) / (jnp.linalg.norm(a, axis=-1) * jnp.linalg.norm(b, axis=-1) + 1e-8)
  return 1.0 - cosine


def _dist_relation(fn: str, student_logits: Array, teacher_logits: Array, temperature: float,
                   *, per_class: bool) -> Array:
  """``T**2 (1 - pearson)`` of the tempered probabilities, per example or per class."""
  if not temperature > 0:
    raise ValueError(f'{fn}: temperature must be > 0; got {temperature!r}.')
  s, t = float32_pair(student_logits, teacher_logits)
  check_same_shape(fn, s, t)
  p_s, p_t = jax.nn.softmax(s / temperature, -1), jax.nn.softmax(t / temperature, -1)
  if per_class:
    p_s, p_t = p_s.T, p_t.T
  return temperature**2 * _pearson_distance(p_s, p_t)


@register('losses', 'dist_inter')
def inter_class_relation(student_logits: Array, teacher_logits: Array, *,
                         temperature: float = 1.0) -> Array:
  """DIST (Huang et al. 2022) inter-class relation: ``T**2 (1 - pearson)`` per example.

  Args:
    student_logits: ``[B, K]``.
    teacher_logits: ``[B, K]``; never differentiated.
    temperature: ``T > 0`` of both softmaxes.

  Returns:
    ``[B]`` float32 in ``[0, 2 T**2]``; 0 when the tempered distributions
    agree up to a positive affine map (invariant to shifting logits).
  """
  return _dist_relation('inter_class_relation', student_logits, teacher_logits, temperature,
                        per_class=False)


@register('losses', 'dist_intra')
def intra_class_relation(student_logits: Array, teacher_logits: Array, *,
                         temperature: float = 1.0) -> Array:
  """DIST intra-class relation: ``T**2 (1 - pearson)`` of each class over the batch.

  Takes what ``inter_class_relation`` takes (logits ``[B, K]``, the teacher's
  never differentiated, ``T > 0``); returns ``[K]`` float32, one value per
  class (the caller averages them).
  """
  return _dist_relation('intra_class_relation', student_logits, teacher_logits, temperature,
                        per_class=True)


@register('losses', 'nce')
def nce_contrast(scores: Array, *, num_data: int) -> Array:
  """CRD's NCE loss (Tian et al. 2020, eq. 19) on normalized contrast scores.

  ``scores[:, 0]`` is the positive pair's score ``P``, ``scores[:, 1:]`` the
  ``K`` negatives'. With the noise distribution uniform over ``N`` examples,
  ``P_n = 1/N``, the per-example loss is
  ``-log(P_0 / (P_0 + K P_n)) - sum_k log(K P_n / (P_k + K P_n))``.

  Args:
    scores: ``[B, K + 1]`` positive scores (``exp(v . w / tau) / Z``).
    num_data: ``N``, the size of the memory bank.

  Returns:
    ``[B]`` float32 ``> 0`` (RepDistiller ``ContrastLoss`` after the batch
    mean).
  """
  scores = as_float32(scores)
  k = scores.shape[-1] - 1
  noise = k / num_data
  eps = 1e-7
  positive = jnp.log(scores[:, 0] / (scores[:, 0] + noise + eps))
  negative = jnp.log(noise / (scores[:, 1:] + noise + eps))
  return -(positive + jnp.sum(negative, -1))
