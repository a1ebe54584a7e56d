"""Building models from config and loading trained teachers from their runs."""

import dataclasses
import functools
import json
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from distill_jax import checkpoint
from distill_jax import metrics
from distill_jax import registry
from distill_jax import sharding
from distill_jax.teacher_check import TeacherSource


def build_model(model_config: ml_collections.ConfigDict, num_classes: int,
                role: str) -> nn.Module:
  """``registry.get('models', name)(num_classes=..., dtype=..., **kwargs)``.

  ``role`` names the config entry in errors (``'student'``, ``'teacher'``...).
  """
  cls = registry.get('models', model_config.model)
  kwargs = model_config.kwargs.to_dict()
  try:
    return cls(num_classes=num_classes, dtype=jnp.dtype(model_config.dtype), **kwargs)
  except TypeError as e:
    raise ValueError(
        f'config.{role}: model {model_config.model!r} does not accept the '
        f'arguments {kwargs}: {e}') from e


def saved_model_config(workdir: str, requested: ml_collections.ConfigDict | None = None,
                       role: str = 'teacher') -> ml_collections.ConfigDict:
  """The model config (model, kwargs, dtype) of the run in ``workdir``.

  ``requested`` (e.g. ``config.teacher``): its ``model``, when set, must be
  the one the run trained; its ``dtype`` is kept (a teacher may run in bf16).
  """
  saved = checkpoint.read_config(workdir)['student']
  model = ml_collections.ConfigDict({'model': saved['model'], 'kwargs': saved['kwargs'],
                                     'dtype': saved.get('dtype', 'float32')})
  if requested is None:
    return model
  if requested.model and (requested.model, requested.kwargs.to_dict()) != (
      saved['model'], saved['kwargs']):
    raise ValueError(
        f'config.{role} asks for model {requested.model!r} {requested.kwargs.to_dict()}, '
        f'but the run in {workdir!r} trained {saved["model"]!r} {saved["kwargs"]}. '
        f'Leave config.{role}.model empty to use the saved one.')
  model.dtype = requested.dtype
  return model


@dataclasses.dataclass(frozen=True)
class LoadedModel:
  """A trained model from its run's workdir.

  Attributes:
    module: the Flax module.
    variables: its variables, placed in their shardings.
    features: its feature dict as ``jax.ShapeDtypeStruct`` (for ``init_aux``).
    description: how errors and logs name it.
    source: where it came from (checkpoint step, SHA-256, recorded accuracy).
  """
  module: nn.Module
  variables: Any
  features: dict[str, Any]
  description: str
  source: TeacherSource


def recorded_eval(workdir: str, config: ml_collections.ConfigDict | None,
                  role: str) -> dict[str, Any]:
  """The final eval of the run in ``workdir`` (its ``results.json``), after the
  checks of a teacher run against the student's ``config`` (None: no checks);
  empty when that eval is not of the newest checkpoint or of this data.

  Raises:
    ValueError: the run never finished (unless ``teacher.allow_unfinished``),
      or it trained on another data set (unless ``teacher.allow_other_data``).
  """
  path = os.path.join(workdir, checkpoint.RESULTS_FILE)
  results = {}
  if os.path.exists(path):
    with open(path) as f:
      try:
        results = json.load(f)
      except json.JSONDecodeError as e:
        raise ValueError(f'config.{role}: {path} is damaged (not JSON: {e}).') from None
  if config is None:
    return results.get('eval', {})
  step = checkpoint.latest_step(workdir)
  if 'eval' not in results or results.get('steps') != step:
    if not config.teacher.allow_unfinished:
      raise ValueError(
          f'config.{role}: the run in {workdir!r} never finished (no final eval of its '
          f'newest checkpoint, step {step}, in {checkpoint.RESULTS_FILE}). Finish it by '
          'rerunning its own command, or set teacher.allow_unfinished=True to distill from '
          'that step.')
    metrics.log(f'config.{role}: the run in {workdir} is unfinished; using its newest '
                'checkpoint (teacher.allow_unfinished=True).')
    results = {}  # Its eval, if any, is of another step.
  trained_on = checkpoint.read_config(workdir).get('data', {}).get('name')
  if trained_on != config.data.name:
    if not config.teacher.allow_other_data:
      raise ValueError(
          f'config.{role}: the run in {workdir!r} trained on data.name={trained_on!r}, this '
          f'run on {config.data.name!r}: another data set, and maybe other input shapes. Set '
          'teacher.allow_other_data=True to distill across data sets.')
    metrics.log(f'config.{role}: the run in {workdir} trained on {trained_on!r}, not '
                f'{config.data.name!r} (teacher.allow_other_data=True).')
    results = {}  # Its eval is of other data.
  return results.get('eval', {})


def load_trained(workdir: str, model_config: ml_collections.ConfigDict, *,
                 num_classes: int, sample_images: jax.Array, mesh: Any,
                 rules: Any, role: str,
                 config: ml_collections.ConfigDict | None = None) -> LoadedModel:
  """Loads the newest verified checkpoint of the run in ``workdir`` as an eval-mode model.

  ``config``: the run that distills from it; its teacher run is checked first
  (``recorded_eval``). None: a model of the caller's own run (no checks).

  Raises:
    FileNotFoundError: ``workdir`` is not a run or has no checkpoint.
    ValueError: the checkpoint does not fit ``model_config`` (shapes listed),
      or the run fails ``recorded_eval``'s checks.
    checkpoint.CheckpointError: none of its checkpoints verifies.
  """
  recorded = recorded_eval(workdir, config, role)
  module = build_model(model_config, num_classes, role)
  boxed = jax.eval_shape(functools.partial(module.init, train=False),
                         jax.random.PRNGKey(0), sample_images)
  abstract = sharding.with_shardings(boxed, sharding.logical_shardings(boxed, mesh, rules))
  description = f'{model_config.model!r} {model_config.kwargs.to_dict()}'
  loaded = checkpoint.load_teacher(workdir, abstract, description)
  saved = loaded.checkpoint
  metrics.log(f'{role}: {saved.path} (step {saved.step}, '
              + (f'sha256 {saved.sha256[:12]})' if saved.sha256 else 'unverified)'))
  features = jax.eval_shape(lambda v: module.apply(v, sample_images, train=False),
                            loaded.variables)[1]
  source = TeacherSource(os.path.abspath(workdir), saved.step, saved.sha256,
                         recorded.get('accuracy'))
  return LoadedModel(module, loaded.variables, features, f'{description} from {workdir}',
                     source)
