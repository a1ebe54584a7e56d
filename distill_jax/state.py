"""``DistillState``: everything a student run updates, as one pytree.

The teacher is not in it (CONTRIBUTING.md rule 2): teachers are separate
arguments of the step and are loaded from their own checkpoint.
"""

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from distill_jax.methods.base import Method


@flax.struct.dataclass
class DistillState:
  """Student training state.

  Attributes:
    step: int32 scalar, the number of updates done.
    params: the student's ``params`` collection.
    model_state: the student's other collections (``{'batch_stats': ...}`` or ``{}``).
    aux_params: the method's learnable connectors (``{}`` if none).
    opt_state: optax state over ``{'student': params, 'aux': aux_params}``.
    method_state: the method's non-trainable state, updated by the step
      (``Method.init_state``; e.g. CRD's memory bank); ``{}`` if none. Like
      ``aux_params`` it is checkpointed with the run and is not part of the
      exported student.
    rng: uint32 ``[2]`` base key; step ``s`` uses ``fold_in(rng, s)``.
  """
  step: jax.Array
  params: Any
  model_state: Any
  aux_params: Any
  opt_state: Any
  method_state: Any
  rng: jax.Array

  @property
  def student_variables(self) -> dict[str, Any]:
    """The student's variables as ``model.apply`` takes them."""
    return {'params': self.params, **self.model_state}


@flax.struct.dataclass
class PeersState:
  """The state of models trained together (``schemes.dml``): one ``DistillState`` each.

  Attributes:
    peers: tuple of ``DistillState``, each with its own params, optimizer
      state and rng; they step together.
  """
  peers: tuple[DistillState, ...]

  @property
  def step(self) -> jax.Array:
    return self.peers[0].step


def init_model(rngs: dict[str, jax.Array], model: nn.Module, sample_images: jax.Array
               ) -> tuple[Any, dict[str, Any], dict[str, Any]]:
  """``(params, other collections, feature shapes)`` of a freshly initialised model.

  ``rngs``: ``{'params': key, 'dropout': key}``. Params keep their
  ``nn.LogicallyPartitioned`` boxes; the features are ``jax.ShapeDtypeStruct``
  (what ``Method.init_aux`` takes).
  """
  variables = dict(model.init(rngs, sample_images, train=False))
  params = variables.pop('params')
  _, features = jax.eval_shape(lambda v: model.apply(v, sample_images, train=False),
                               nn.unbox({'params': params, **variables}))
  return params, variables, features


def init_boxed_state(rng: jax.Array, *, student: nn.Module, method: Method,
                     optimizer: optax.GradientTransformation,
                     sample_images: jax.Array,
                     teacher_features: dict[str, Any] | None,
                     num_train: int) -> DistillState:
  """A fresh state whose params keep their ``nn.LogicallyPartitioned`` boxes.

  Call it under ``jax.eval_shape`` to read the logical partitioning, and
  through ``nn.unbox`` under ``jax.jit(out_shardings=...)`` to create the
  state directly in its shardings.

  Args:
    rng: PRNG key (uint32 [2]).
    student: the student module.
    method: the distillation method (its ``init_aux`` makes connectors).
    optimizer: the optax transformation.
    sample_images: float32 ``[b, H, W, C]``, any small b.
    teacher_features: the teacher's feature shapes (``jax.ShapeDtypeStruct``
      dict) or None.
    num_train: examples in the training split (sizes per-example method
      state such as a memory bank).
  """
  init_rng, dropout_rng, aux_rng, state_rng, method_rng = jax.random.split(rng, 5)
  params, model_state, student_features = init_model(
      {'params': init_rng, 'dropout': dropout_rng}, student, sample_images)
  aux_params = method.init_aux(aux_rng, student_features, teacher_features)
  method_state = method.init_state(method_rng, student_features, teacher_features,
                                   num_train=num_train)
  opt_state = optimizer.init({'student': params, 'aux': aux_params})
  return DistillState(
      step=jnp.zeros((), jnp.int32), params=params, model_state=model_state,
      aux_params=aux_params, opt_state=opt_state, method_state=method_state,
      rng=state_rng)
