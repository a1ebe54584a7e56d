"""What every training scheme receives and returns.

The classification task (``distill_jax.tasks.classification``) makes a
``Context`` (data facts, mesh, method, student, optimizer, the batch's
shapes) and hands it to the scheme named
``config.scheme.name``. The scheme loads its teachers, defines the state it
trains and its pure step functions, and returns them compiled
(``compile_scheme``, i.e. ``distill_jax.compile.compile_steps``):
``compile.Compiled`` is all the loop needs. The step signatures are the same
for every scheme::

    train_fn(state, teacher_variables, batch) -> (state, metrics)   # state donated
    eval_fn(state, teacher_variables, batch) -> eval sums

``teacher_variables`` is whatever the scheme loads (one teacher's variables,
a tuple of them, or None); ``metrics`` holds at least ``loss``.
"""

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import ml_collections
import optax

from distill_jax import compile as compile_lib
from distill_jax.data import DatasetSpec
from distill_jax.methods.base import Method


@dataclasses.dataclass(frozen=True)
class Context:
  """The parts of a run that do not depend on the scheme.

  Attributes:
    config: the run's config.
    mesh: the device mesh.
    spec: the data set's facts (classes, image shape, mean/std).
    num_train: examples in the training split.
    steps_per_epoch: updates per pass over the training split.
    total_steps: updates of the whole run.
    method: the distillation method.
    student: the student module (``config.student``).
    optimizer: the optax transformation (one state per trained model).
    schedule: step -> learning rate.
    sample_images: float32 ``[1, H, W, C]`` zeros, for shape inference.
    abstract_batch: the global train batch's ``jax.ShapeDtypeStruct`` dict.
  """
  config: ml_collections.ConfigDict
  mesh: Any
  spec: DatasetSpec
  num_train: int
  steps_per_epoch: int
  total_steps: int
  method: Method
  student: nn.Module
  optimizer: optax.GradientTransformation
  schedule: Callable[[jax.Array], jax.Array]
  sample_images: jax.Array
  abstract_batch: dict[str, jax.ShapeDtypeStruct]

  @property
  def view_kwargs(self) -> dict[str, Any]:
    """Keyword arguments of ``data.views.make_views`` / ``augmented_view``."""
    return dict(mean=self.spec.mean, std=self.spec.std,
                augment_config=self.config.data.augment,
                mixing_config=self.config.data.mixing)


def compile_scheme(context: Context, **kwargs) -> compile_lib.Compiled:
  """``compile.compile_steps`` on the context's config, mesh and batch shapes.

  ``kwargs``: ``boxed_init``, ``train_step``, ``eval_step``,
  ``teacher_variables``, ``teacher_sources``, ``model_names`` (see ``compile_steps``).
  """
  return compile_lib.compile_steps(context.config, context.mesh,
                                   abstract_batch=context.abstract_batch, **kwargs)
