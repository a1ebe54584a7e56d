"""The method interface every file in ``distill_jax/methods/`` follows.

A method serves one task (``Method.task``). Shapes for ``'classification'``
(the default): ``student_out`` and ``teacher_out`` are a model's ``(logits
[B, K], features dict)``; ``teacher_out`` is None for methods with
``needs_teacher = False``. ``batch`` holds ``label`` int32 ``[B]`` and the
augmented ``image`` the models saw. The ``'language_model'`` methods
(``token_*.py``) derive from ``token_base.TokenMethod``, which gives their
shapes (``logits [B, T, V]``, ``targets`` and ``loss_mask`` ``[B, T]``).
``aux`` holds the method's learnable connector params (``{}`` when it has
none); they are optimised with the student and are not part of the exported
student.

A method with non-trainable state that the step updates (CRD's memory bank)
overrides ``init_state`` and ``loss_with_state`` instead of ``loss``; the
state lives in ``DistillState.method_state`` (sharded and checkpointed with
the run, never differentiated). Train batches carry ``index`` int32 ``[B]``,
each example's position in the training split, for per-example state.

Two-stage recipes (FitNet's hint stage, FT's paraphraser pre-training, AB's
and FSP's initialisation) are expressed inside ``loss`` as a function of
``step`` (``common.Distiller.stage_one_loss``), so the trainer stays one loop.
"""

import dataclasses
from typing import Any, ClassVar

import jax
import ml_collections

from distill_jax import registry

Array = jax.Array
ModelOutput = tuple[Array, dict[str, Array]]


class Method:
  """Default parts of a method: it needs a teacher and has no aux params.

  Attributes:
    task: the task whose models and batches the method is written for,
      ``'classification'`` (image classifiers, the default) or
      ``'language_model'`` (decoders; every ``token_*.py`` method, through
      ``token_base.TokenMethod``). A class attribute, not a hyper-parameter.
    needs_teacher: False for methods that use no teacher outputs
      (``teacher_out`` is then None).
  """

  task: ClassVar[str] = 'classification'
  needs_teacher: ClassVar[bool] = True

  def init_aux(self, rng: Array, student_features: dict[str, Any],
               teacher_features: dict[str, Any] | None) -> Any:
    """Learnable connector params; features are given as shape structs."""
    del rng, student_features, teacher_features
    return {}

  def init_state(self, rng: Array, student_features: dict[str, Any],
                 teacher_features: dict[str, Any] | None, *,
                 num_train: int) -> Any:
    """Non-trainable state updated by the step (``{}``: stateless).

    ``num_train`` is the number of examples in the training split.
    """
    del rng, student_features, teacher_features, num_train
    return {}

  def loss(self, student_out: ModelOutput, teacher_out: ModelOutput | None,
           batch: dict[str, Array], aux: Any,
           step: Array) -> tuple[Array, dict[str, Array]]:
    raise NotImplementedError

  def loss_with_state(self, student_out: ModelOutput,
                      teacher_out: ModelOutput | None, batch: dict[str, Array],
                      aux: Any, step: Array, state: Any
                      ) -> tuple[Array, dict[str, Array], Any]:
    """``(loss, metrics, new_state)``; what the train step calls.

    Stateless methods keep the default (``loss`` and the state unchanged).
    """
    loss, metrics = self.loss(student_out, teacher_out, batch, aux, step)
    return loss, metrics, state


class MissingFeatureError(ValueError):
  """A method asked for a feature the model does not return.

  Attributes:
    role: ``'student'`` or ``'teacher'``.
  """

  def __init__(self, message: str, role: str):
    super().__init__(message)
    self.role = role


def from_config(method_config: ml_collections.ConfigDict) -> Method:
  """Builds the method named ``method_config.name`` with the other keys as its
  hyper-parameters; unknown names or hyper-parameters are errors listing the
  valid ones."""
  values = dict(method_config.to_dict())
  name = values.pop('name')
  cls = registry.get('methods', name)
  fields = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(values) - fields)
  if unknown:
    raise ValueError(
        f'Method {name!r} has no hyper-parameter(s) {", ".join(unknown)}; '
        f'it takes: {", ".join(sorted(fields)) or "(none)"}.')
  return cls(**values)


# Below this, logits / T overflow float32 and the loss turns NaN.
MIN_TEMPERATURE = 1e-2


def check_temperature(name: str, value: Any) -> None:
  """A softmax temperature: a number >= ``MIN_TEMPERATURE``."""
  check_number(name, value, positive=True)
  if value < MIN_TEMPERATURE:
    raise ValueError(f'{name}={value} is below {MIN_TEMPERATURE}: logits / T would overflow '
                     'float32 (the loss turns NaN); use a temperature >= that.')


def check_number(name: str, value: Any, *, positive: bool = False,
                 unit_interval: bool = False,
                 non_negative: bool = False) -> None:
  """Raises a ValueError unless ``value`` is a real number in range."""
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise ValueError(f'{name} must be a number, got {value!r}.')
  if positive and value <= 0:
    raise ValueError(f'{name} must be > 0, got {value}.')
  if non_negative and value < 0:
    raise ValueError(f'{name} must be >= 0, got {value}.')
  if unit_interval and not 0.0 <= value <= 1.0:
    raise ValueError(f'{name} must be in [0, 1], got {value}.')
