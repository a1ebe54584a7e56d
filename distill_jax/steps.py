"""Pure step functions: one training update and one evaluation batch.

Both are module-level pure functions; ``train.py`` binds the static parts
(models, method, optimizer, data spec) with ``functools.partial`` and compiles
them once with ``jax.jit`` and explicit shardings.
"""

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from distill_jax.data import augment
from distill_jax.losses import kl_divergence
from distill_jax.methods.base import Method
from distill_jax.state import DistillState

Batch = dict[str, jax.Array]


def prepare_images(rng: jax.Array | None, images: jax.Array, *, mean, std,
                   augment_config: ml_collections.ConfigDict | None) -> jax.Array:
  """uint8 ``[B, H, W, C]`` -> normalized float32, augmented when ``rng`` is given."""
  if rng is not None:
    images = augment.augment(rng, images, augment_config)
  return augment.normalize(images, mean, std)


def teacher_forward(teacher: nn.Module | None, teacher_variables: Any,
                    images: jax.Array):
  """The teacher's ``(logits, features)`` in eval mode, never differentiated."""
  if teacher is None:
    return None
  return jax.lax.stop_gradient(teacher.apply(teacher_variables, images, train=False))


def train_step(state: DistillState, teacher_variables: Any, batch: Batch, *,
               student: nn.Module, teacher: nn.Module | None, method: Method,
               optimizer: optax.GradientTransformation,
               schedule: Callable[[jax.Array], jax.Array], mean, std,
               augment_config: ml_collections.ConfigDict
               ) -> tuple[DistillState, dict[str, jax.Array]]:
  """One update of the student (and the method's connectors).

  Args:
    state: the student state (donated by the caller).
    teacher_variables: the frozen teacher's variables (``None`` without one).
    batch: ``image`` uint8 ``[B, H, W, C]``, ``label`` int32 ``[B]``,
      ``index`` int32 ``[B]`` (positions in the split) (global batch, sharded
      over the mesh's batch axes).

  Returns:
    The new state and scalar metrics (means over the global batch).
  """
  rng = jax.random.fold_in(state.rng, state.step)
  augment_rng, dropout_rng = jax.random.split(rng)
  images = prepare_images(augment_rng, batch['image'], mean=mean, std=std,
                          augment_config=augment_config)
  teacher_out = teacher_forward(teacher, teacher_variables, images)
  model_batch = {**batch, 'image': images}

  def loss_fn(trainable):
    (logits, features), new_model_state = student.apply(
        {'params': trainable['student'], **state.model_state}, images, train=True,
        rngs={'dropout': dropout_rng}, mutable=list(state.model_state))
    loss, metrics, method_state = method.loss_with_state(
        (logits, features), teacher_out, model_batch, trainable['aux'],
        state.step, state.method_state)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == batch['label'])
    return loss, (new_model_state, jax.lax.stop_gradient(method_state),
                  {**metrics, 'accuracy': accuracy})

  trainable = {'student': state.params, 'aux': state.aux_params}
  (loss, (model_state, method_state, metrics)), grads = jax.value_and_grad(
      loss_fn, has_aux=True)(trainable)
  updates, opt_state = optimizer.update(grads, state.opt_state, trainable)
  trainable = optax.apply_updates(trainable, updates)
  new_state = state.replace(
      step=state.step + 1, params=trainable['student'], model_state=model_state,
      aux_params=trainable['aux'], opt_state=opt_state, method_state=method_state)
  metrics = {**metrics, 'loss': loss, 'grad_norm': optax.tree.norm(grads),
             'learning_rate': schedule(state.step)}
  return new_state, metrics


def eval_step(student_variables: Any, teacher_variables: Any, batch: Batch, *,
              student: nn.Module, teacher: nn.Module | None, mean, std
              ) -> dict[str, jax.Array]:
  """Sums over the real (``mask``) examples of one padded evaluation batch.

  Returns float32 scalars: ``count``, ``correct``, ``correct_top5``,
  ``ce``; with a teacher also ``teacher_correct``, ``agreement`` (same top-1)
  and ``kl`` (KL(teacher || student) at T=1, nats).
  """
  images = prepare_images(None, batch['image'], mean=mean, std=std, augment_config=None)
  mask = batch['mask'].astype(jnp.float32)
  labels = batch['label']
  logits = student.apply(student_variables, images, train=False)[0]
  top5 = jax.lax.top_k(logits, min(5, logits.shape[-1]))[1]
  prediction = jnp.argmax(logits, -1)
  sums = {
      'count': mask.sum(),
      'correct': jnp.sum(mask * (prediction == labels)),
      'correct_top5': jnp.sum(mask * jnp.any(top5 == labels[:, None], -1)),
      'ce': jnp.sum(mask * optax.softmax_cross_entropy_with_integer_labels(logits, labels)),
  }
  if teacher is not None:
    teacher_logits = teacher_forward(teacher, teacher_variables, images)[0]
    teacher_prediction = jnp.argmax(teacher_logits, -1)
    sums['teacher_correct'] = jnp.sum(mask * (teacher_prediction == labels))
    sums['agreement'] = jnp.sum(mask * (teacher_prediction == prediction))
    sums['kl'] = jnp.sum(mask * kl_divergence(logits, teacher_logits))
  return sums
