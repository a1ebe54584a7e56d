"""Building models from config and loading trained teachers from their runs."""

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from distill_jax import checkpoint
from distill_jax import registry
from distill_jax import sharding


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
  """
  module: nn.Module
  variables: Any
  features: dict[str, Any]
  description: str


def load_trained(workdir: str, model_config: ml_collections.ConfigDict, *,
                 num_classes: int, sample_images: jax.Array, mesh: Any,
                 rules: Any, role: str) -> LoadedModel:
  """Loads the latest checkpoint of the run in ``workdir`` as an eval-mode model.

  Raises:
    FileNotFoundError: ``workdir`` is not a run or has no checkpoint.
    ValueError: the checkpoint does not fit ``model_config`` (shapes listed).
  """
  module = build_model(model_config, num_classes, role)
  boxed = jax.eval_shape(functools.partial(module.init, train=False),
                         jax.random.PRNGKey(0), sample_images)
  abstract = sharding.with_shardings(boxed, sharding.logical_shardings(boxed, mesh, rules))
  description = f'{model_config.model!r} {model_config.kwargs.to_dict()}'
  variables = checkpoint.load_teacher(workdir, abstract, description)
  features = jax.eval_shape(lambda v: module.apply(v, sample_images, train=False),
                            variables)[1]
  return LoadedModel(module, variables, features, f'{description} from {workdir}')
