"""What the feature and relation methods share: feature selection, loss weights, stages.

RepDistiller (Tian et al. 2020) trains every method with one objective,
``gamma * CE + alpha * KD + beta * method_term``; :class:`Distiller` is that
frame (``ce_weight``, ``kd_weight``, ``weight``), a method file adds only its
term.

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
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from distill_jax import losses
from distill_jax.methods import base
from distill_jax.methods.ce import label_cross_entropy

Array = jax.Array
GROUPS = ('stages', 'stages_preact', 'last_stage', 'stem_and_stages')


def _stages(features: dict[str, Any], suffix: str = '') -> list[str]:
  pattern = re.compile(rf'stage(\d+){suffix}$')
  found = [(int(m.group(1)), name) for name in features
           if (m := pattern.match(name))]
  return [name for _, name in sorted(found)]


def _describe(features: dict[str, Any]) -> str:
  return ', '.join(f'{name} {tuple(f.shape)}' for name, f in features.items())


def select(method: str, role: str, features: dict[str, Any], spec: str) -> list[str]:
  """The feature names ``spec`` stands for in one model's ``features``.

  Raises:
    base.MissingFeatureError: a named feature (or every member of a group) is
      not in ``features``; the message lists the available ones with shapes.
  """
  if spec == 'stages':
    names = _stages(features)
  elif spec == 'stages_preact':
    names = _stages(features, '_preact')
  elif spec == 'last_stage':
    names = _stages(features)[-1:]
  elif spec == 'stem_and_stages':
    names = ['stem'] + _stages(features)
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


def check_spatial(method: str, s_name: str, s_shape, t_name: str, t_shape) -> None:
  """Both NHWC maps, one resolution an integer multiple of the other."""
  if len(s_shape) != 4 or len(t_shape) != 4:
    raise shape_error(method, s_name, s_shape, t_name, t_shape,
                      'must both be feature maps [B, H, W, C]')
  h, w = min(s_shape[1], t_shape[1]), min(s_shape[2], t_shape[2])
  if s_shape[1] % h or t_shape[1] % h or s_shape[2] % w or t_shape[2] % w:
    raise shape_error(method, s_name, s_shape, t_name, t_shape,
                      'have resolutions that do not pool to a common size')


def stage_one(step: Array, init_steps: int) -> Array:
  """True during the first ``init_steps`` steps (a two-stage recipe's first stage)."""
  return jnp.asarray(step) < init_steps


def check_weights(method: str, **weights: Any) -> None:
  """Every weight a real number >= 0; else a ValueError naming it."""
  for name, value in weights.items():
    base.check_number(f'{method}.{name}', value, non_negative=True)


@dataclasses.dataclass(frozen=True)
class Distiller(base.Method):
  """``ce_weight * CE + kd_weight * KD(T) + weight * term``: RepDistiller's frame.

  Attributes:
    ce_weight: weight of the hard-label cross-entropy (RepDistiller ``-r``).
    kd_weight: weight of Hinton's ``T**2 KL`` (``-a``).
    weight: weight of the method's own term (``-b``).
    temperature: ``T > 0`` of the KD term.
  """
  method_name: ClassVar[str] = ''
  ce_weight: float = 1.0
  kd_weight: float = 0.0
  weight: float = 1.0
  temperature: float = 4.0

  def __post_init__(self):
    check_weights(self.method_name, ce_weight=self.ce_weight,
                  kd_weight=self.kd_weight, weight=self.weight)
    base.check_number(f'{self.method_name}.temperature', self.temperature, positive=True)

  def combine(self, student_logits: Array, teacher_logits: Array, batch: dict[str, Array],
              term: Array, metrics: dict[str, Array]) -> tuple[Array, dict[str, Array]]:
    """The weighted sum, with ``ce``, ``kl`` and the method's metrics."""
    ce = label_cross_entropy(student_logits, batch)
    kl = losses.kl_divergence(student_logits, teacher_logits,
                              temperature=self.temperature).mean()
    total = self.ce_weight * ce + self.kd_weight * kl + self.weight * term
    return total, {**metrics, 'ce': ce, 'kl': kl, self.method_name: term}
