"""What the feature and relation methods share: feature selection, loss weights, stages.

RepDistiller (Tian et al. 2020) trains every method with one objective,
``gamma * CE + alpha * KD + beta * method_term``; :class:`Distiller` is that
frame (``ce_weight``, ``kd_weight``, ``weight``), a method file adds only its
term (``Distiller.term``) and its connectors (``init_aux``).

Features are chosen by name in the method's config (CONTRIBUTING.md rule 5),
as one string: comma-separated feature names (``'stage2'``,
``'stage1,stage3'``), or a group resolved per model, so that one config fits
teachers and students of different depths:

* ``'stages'``: ``stage1`` .. ``stageN``, every stage the model has;
* ``'stages_preact'``: ``stage1_preact`` .. ``stageN_preact``;
* ``'last_stage'``: ``stageN``;
* ``'stem_and_stages'``: ``stem``, ``stage1`` .. ``stageN``.
"""

import dataclasses
import re
from typing import Any, Callable, ClassVar

import jax
import jax.numpy as jnp

from distill_jax import losses
from distill_jax.losses.features import common_resolution
from distill_jax.methods import base
from distill_jax.methods import connectors
from distill_jax.methods.ce import label_cross_entropy

Array = jax.Array


def _stages(features: dict[str, Any], suffix: str = '') -> list[str]:
  pattern = re.compile(rf'stage(\d+){suffix}$')
  found = [(int(m.group(1)), name) for name in features
           if (m := pattern.match(name))]
  return [name for _, name in sorted(found)]


GROUPS = {
    'stages': _stages,
    'stages_preact': lambda features: _stages(features, '_preact'),
    'last_stage': lambda features: _stages(features)[-1:],
    'stem_and_stages': lambda features: ['stem'] + _stages(features),
}


def _describe(features: dict[str, Any]) -> str:
  return ', '.join(f'{name} {tuple(f.shape)}' for name, f in features.items())


def select(method: str, role: str, features: dict[str, Any], spec: str) -> list[str]:
  """The feature names ``spec`` stands for in one model's ``features``.

  Raises:
    base.MissingFeatureError: a named feature (or every member of a group) is
      not in ``features``; the message lists the available ones with shapes.
  """
  if spec in GROUPS:
    names = GROUPS[spec](features)
  else:
    names = [name.strip() for name in spec.split(',') if name.strip()]
  missing = [name for name in names if name not in features]
  if missing or not names:
    wanted = ', '.join(missing) if missing else f'the group {spec!r}'
    raise base.MissingFeatureError(
        f'method {method!r} needs {role} feature(s) {wanted}, which the model does '
        f'not return. Its features: {_describe(features)}. Choose others with '
        f'config.method.{role}_features (names, comma-separated, or one of '
        f'{", ".join(GROUPS)}).', role)
  return names


def pairs(method: str, student_features: dict[str, Any],
          teacher_features: dict[str, Any], student_spec: str,
          teacher_spec: str) -> list[tuple[str, str]]:
  """``[(student_name, teacher_name), ...]`` matched in order.

  ``teacher_spec=''`` means the same spec as the student's.
  """
  s_names = select(method, 'student', student_features, student_spec)
  t_names = select(method, 'teacher', teacher_features, teacher_spec or student_spec)
  if len(s_names) != len(t_names):
    raise ValueError(
        f'method {method!r} pairs student features {s_names} with teacher features '
        f'{t_names}: the counts differ; name the layers explicitly with '
        'config.method.student_features / teacher_features.')
  return list(zip(s_names, t_names))


def shape_error(method: str, s_name: str, s_shape, t_name: str, t_shape,
                why: str) -> ValueError:
  """The error for a student/teacher layer pair a method cannot compare."""
  return ValueError(
      f'method {method!r}: student feature {s_name!r} {tuple(s_shape)} and teacher '
      f'feature {t_name!r} {tuple(t_shape)} {why}.')


def check_spatial(method: str, s_name: str, s_shape, t_name: str, t_shape, *,
                  regressor: bool = False) -> None:
  """Both NHWC maps, one resolution an integer multiple of the other (or, with
  ``regressor``, a ``connectors.ConvRegressor`` from the first to the second)."""
  why = None
  if len(s_shape) != 4 or len(t_shape) != 4:
    why = 'must both be feature maps [B, H, W, C]'
  elif regressor:
    why = connectors.ConvRegressor.check(s_shape[1:], t_shape[1:])
  elif common_resolution(s_shape, t_shape) is None:
    why = 'have resolutions that do not pool to a common size'
  if why:
    raise shape_error(method, s_name, s_shape, t_name, t_shape, why)


def check_numbers(method: str, *, positive: bool = False, **values: Any) -> None:
  """Every value a real number ``>= 0`` (``> 0`` with ``positive``); else a
  ValueError naming it."""
  for name, value in values.items():
    base.check_number(f'{method}.{name}', value, positive=positive, non_negative=not positive)


@dataclasses.dataclass(frozen=True)
class Distiller(base.Method):
  """``ce_weight * CE + kd_weight * KD(T) + weight * term``: RepDistiller's frame.

  A method file defines ``term`` (and ``init_aux`` for its connectors).

  Class attributes:
    method_name: the registry name, prefix of the error messages and the
      metric of the term.
    positive_fields / non_negative_fields: the method's hyper-parameters that
      must be numbers ``> 0`` / ``>= 0`` (checked on construction).
    spatial: the default ``init_aux`` (no connectors) checks that every layer
      pair is two feature maps that pool to a common resolution.
    stage_one_loss: for a two-stage recipe, the metric that is the whole loss
      during the first ``init_steps`` steps ('' = one stage).

  Attributes:
    ce_weight: weight of the hard-label cross-entropy (RepDistiller ``-r``).
    kd_weight: weight of Hinton's ``T**2 KL`` (``-a``).
    weight: weight of the method's own term (``-b``).
    temperature: ``T > 0`` of the KD term.
    student_features: the student's layers, a spec for ``select``.
    teacher_features: the teacher's layers ('' = the student's spec).
  """
  method_name: ClassVar[str] = ''
  positive_fields: ClassVar[tuple[str, ...]] = ()
  non_negative_fields: ClassVar[tuple[str, ...]] = ()
  spatial: ClassVar[bool] = False
  stage_one_loss: ClassVar[str] = ''
  ce_weight: float = 1.0
  kd_weight: float = 0.0
  weight: float = 1.0
  temperature: float = 4.0
  student_features: str = 'stages'
  teacher_features: str = ''

  def __post_init__(self):
    self._check_fields(('ce_weight', 'kd_weight', 'weight'))
    self._check_fields(self.positive_fields, positive=True)
    base.check_temperature(f'{self.method_name}.temperature', self.temperature)
    self._check_fields(self.non_negative_fields)

  def _check_fields(self, names: tuple[str, ...], *, positive: bool = False) -> None:
    check_numbers(self.method_name, positive=positive, **{n: getattr(self, n) for n in names})

  def layer_pairs(self, student_features: dict[str, Any],
                  teacher_features: dict[str, Any]) -> list[tuple[str, str]]:
    """``pairs`` of the method's ``student_features`` / ``teacher_features``."""
    return pairs(self.method_name, student_features, teacher_features,
                 self.student_features, self.teacher_features)

  def layer_pair(self, student_features: dict[str, Any],
                 teacher_features: dict[str, Any]) -> tuple[str, str]:
    """The one ``(student_name, teacher_name)`` of a single-layer method."""
    layer_pairs = self.layer_pairs(student_features, teacher_features)
    if len(layer_pairs) != 1:
      raise ValueError(f'method {self.method_name!r} takes one layer pair; got {layer_pairs}.')
    return layer_pairs[0]

  def layer_sum(self, kernel: Callable[[Array, Array], Array],
                student_features: dict[str, Array], teacher_features: dict[str, Array]) -> Array:
    """``sum_pairs kernel(student, teacher).mean()`` over the ``layer_pairs``."""
    return sum(kernel(student_features[s], teacher_features[t]).mean()
               for s, t in self.layer_pairs(student_features, teacher_features))

  def init_aux(self, rng, student_features, teacher_features):
    if self.spatial:
      for s, t in self.layer_pairs(student_features, teacher_features):
        check_spatial(self.method_name, s, student_features[s].shape, t,
                      teacher_features[t].shape)
    return {}

  def term(self, student_features: dict[str, Array], teacher_features: dict[str, Array],
           aux: Any) -> tuple[Array, dict[str, Array]]:
    """The method's term (a scalar) and its extra metrics, from both models' features."""
    raise NotImplementedError

  def loss(self, student_out, teacher_out, batch, aux, step):
    term, metrics = self.term(student_out[1], teacher_out[1], aux)
    total, metrics = self.combine(student_out[0], teacher_out[0], batch, term, metrics)
    if self.stage_one_loss:
      total = jnp.where(jnp.asarray(step) < self.init_steps, metrics[self.stage_one_loss], total)
    return total, metrics

  def combine(self, student_logits: Array, teacher_logits: Array, batch: dict[str, Array],
              term: Array, metrics: dict[str, Array]) -> tuple[Array, dict[str, Array]]:
    """The weighted sum, with ``ce``, ``kl`` and the method's metrics."""
    ce = label_cross_entropy(student_logits, batch)
    kl = losses.kl_divergence(student_logits, teacher_logits,
                              temperature=self.temperature).mean()
    total = self.ce_weight * ce + self.kd_weight * kl + self.weight * term
    return total, {**metrics, 'ce': ce, 'kl': kl, self.method_name: term}


@dataclasses.dataclass(frozen=True)
class EmbeddingDistiller(Distiller):
  """A ``Distiller`` of one layer pair, each side through a learnable
  ``connectors.Embed`` of width ``embed_dim`` (``aux``: ``embed_student``,
  ``embed_teacher``; CC and CRD).

  Class attributes:
    normalize: L2-normalize the embeddings.

  Attributes (besides ``Distiller``'s):
    embed_dim: width of the embeddings (RepDistiller ``feat_dim``).
  """
  normalize: ClassVar[bool] = True
  embed_dim: int = 128

  def _embed(self) -> connectors.Embed:
    return connectors.Embed(self.embed_dim, normalize=self.normalize)

  def init_aux(self, rng, student_features, teacher_features):
    s, t = self.layer_pair(student_features, teacher_features)
    s_rng, t_rng = jax.random.split(rng)
    return {'embed_student': connectors.init(self._embed(), s_rng, student_features[s].shape),
            'embed_teacher': connectors.init(self._embed(), t_rng, teacher_features[t].shape)}

  def embed(self, student_features: dict[str, Array], teacher_features: dict[str, Array],
            aux: Any) -> tuple[Array, Array]:
    """``(student, teacher)`` embeddings ``[B, embed_dim]``. The teacher's
    embedding is trained too; only the teacher net is frozen."""
    s, t = self.layer_pair(student_features, teacher_features)
    return (connectors.apply(self._embed(), aux['embed_student'], student_features[s]),
            connectors.apply(self._embed(), aux['embed_teacher'],
                             jax.lax.stop_gradient(teacher_features[t])))
