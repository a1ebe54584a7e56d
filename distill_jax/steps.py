"""Pure step functions of offline distillation, and the pieces other schemes share.

``train_step`` / ``eval_step`` are module-level pure functions; a scheme binds
their static parts (models, method, optimizer, data spec) with
``functools.partial`` and ``compile.compile_steps`` compiles them once with
explicit shardings. Every train step ends in ``update`` (gradients, optimizer,
NaN/Inf guard). A teacher is given as ``teacher_fn(teacher_variables,
images, batch) -> (logits, features)``: one model (``teacher_forward``) or a
combination of several (``schemes.multi_teacher``).
"""

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from distill_jax.data import augment
from distill_jax.data import views
from distill_jax.losses import kl_divergence
from distill_jax.methods.base import Method
from distill_jax.state import DistillState
from distill_jax.state import PeersState

Batch = dict[str, jax.Array]
ModelOutput = tuple[jax.Array, dict[str, jax.Array]]
TeacherFn = Callable[[Any, jax.Array, Batch], ModelOutput]


def teacher_forward(teacher: nn.Module, teacher_variables: Any, images: jax.Array,
                    batch: Batch | None = None) -> ModelOutput:
  """One teacher's ``(logits, features)`` in eval mode, never differentiated."""
  del batch
  return jax.lax.stop_gradient(teacher.apply(teacher_variables, images, train=False))


def forward_train(model: nn.Module, params: Any, model_state: Any, images: jax.Array,
                  dropout_rng: jax.Array) -> tuple[ModelOutput, Any]:
  """``((logits, features), new_model_state)`` of a model in training mode."""
  return model.apply({'params': params, **model_state}, images, train=True,
                     rngs={'dropout': dropout_rng}, mutable=list(model_state))


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Top-1 accuracy of ``logits`` [B, K] against int ``labels`` [B]."""
  return jnp.mean(jnp.argmax(logits, -1) == labels)


def apply_gradients(state: DistillState, grads: dict[str, Any], *,
                    optimizer: optax.GradientTransformation, model_state: Any,
                    method_state: Any) -> DistillState:
  """One optimizer update of ``{'student': params, 'aux': aux_params}``; step + 1."""
  trainable = {'student': state.params, 'aux': state.aux_params}
  updates, opt_state = optimizer.update(grads, state.opt_state, trainable)
  trainable = optax.apply_updates(trainable, updates)
  return state.replace(
      step=state.step + 1, params=trainable['student'], model_state=model_state,
      aux_params=trainable['aux'], opt_state=opt_state, method_state=method_state)


def is_finite_update(loss: jax.Array, grad_norm: jax.Array) -> jax.Array:
  """bool scalar: both the loss and the global gradient norm are finite."""
  return jnp.isfinite(loss) & jnp.isfinite(grad_norm)


def keep_if_finite(finite: jax.Array, new_state: DistillState,
                   state: DistillState) -> DistillState:
  """``new_state`` if ``finite``, else ``state`` (params, optimizer and model
  state all unchanged) with only the step advanced.

  A step with a non-finite loss or gradient thus never writes NaN/Inf into
  the state; the loop applies ``config.train.nan_policy`` (stop or skip) from
  the step's ``nonfinite`` metric.
  """
  kept = state.replace(step=new_state.step)
  return jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, kept)


def mean_over_shards(tree: Any, batch_axes: tuple[str, ...], *, in_order: bool) -> Any:
  """The mean of ``tree`` over the shards of ``batch_axes`` (inside ``jax.shard_map``).

  ``in_order=False``: ``lax.pmean`` (an all-reduce, whose summation order
  depends on how the devices are spread over processes). ``in_order=True``:
  an all-gather, then the same fixed-order sum on every device, so the result
  is bit-identical whatever the process layout, for ``n`` times the memory of
  ``tree`` (``config.sharding.reduce_in_order``).
  """
  if not in_order:
    return jax.lax.pmean(tree, batch_axes)
  return jax.tree.map(lambda x: jnp.mean(jax.lax.all_gather(x, batch_axes), axis=0), tree)


def update(state: DistillState | PeersState, loss_fn: Callable[[Any], Any], *,
           optimizer: optax.GradientTransformation,
           schedule: Callable[[jax.Array], jax.Array],
           batch_axes: tuple[str, ...] | None = None, reduce_in_order: bool = False
           ) -> tuple[DistillState | PeersState, dict[str, jax.Array]]:
  """One guarded optimizer update: the shared tail of every train step.

  ``value_and_grad(loss_fn)`` over the trainable parameters, ``lax.pmean``
  over ``batch_axes`` (inside ``jax.shard_map``), the optimizer update, and
  ``keep_if_finite``: a step whose loss or global gradient norm is NaN/Inf
  leaves every model unchanged (one bad peer drops every peer's update).

  Args:
    state: a ``DistillState``, or a ``PeersState`` (models trained together).
    loss_fn: ``trainable -> (loss, (model_state, method_state, metrics))``,
      ``trainable`` being ``{'student': params, 'aux': aux_params}`` (a tuple
      of them, one per peer, for a ``PeersState``; ``model_state`` and
      ``method_state`` are then tuples too). A ``loss`` entry in ``metrics``
      is what gets logged (default: the differentiated loss).
    optimizer, schedule: the optax transformation and its learning rate.
    batch_axes: mesh axes to average gradients, model state and metrics over
      (None under ``jax.jit``, where XLA inserts the collectives).
    reduce_in_order: average them with ``mean_over_shards(in_order=True)``.

  Returns:
    The new state and metrics plus ``loss``, ``grad_norm``,
    ``learning_rate`` and ``nonfinite`` (1.0 when the update was dropped).
  """
  peers = isinstance(state, PeersState)
  models = state.peers if peers else (state,)
  trainables = tuple({'student': m.params, 'aux': m.aux_params} for m in models)
  (loss, (model_states, method_states, metrics)), grads = jax.value_and_grad(
      lambda t: loss_fn(t if peers else t[0]), has_aux=True)(trainables)
  if not peers:
    model_states, method_states = (model_states,), (method_states,)
  if batch_axes:
    grads, model_states, metrics, loss = mean_over_shards(
        (grads, model_states, metrics, loss), batch_axes, in_order=reduce_in_order)
  grad_norm = optax.tree.norm(grads)
  finite = is_finite_update(loss, grad_norm)
  new = tuple(
      keep_if_finite(finite, apply_gradients(m, g, optimizer=optimizer, model_state=ms,
                                             method_state=jax.lax.stop_gradient(mst)), m)
      for m, g, ms, mst in zip(models, grads, model_states, method_states))
  metrics = {'loss': loss, **metrics, 'grad_norm': grad_norm,
             'learning_rate': schedule(state.step),
             'nonfinite': jnp.logical_not(finite).astype(jnp.float32)}
  return (PeersState(new) if peers else new[0]), metrics


def train_step(state: DistillState, teacher_variables: Any, batch: Batch, *,
               student: nn.Module, teacher_fn: TeacherFn | None, method: Method,
               optimizer: optax.GradientTransformation,
               schedule: Callable[[jax.Array], jax.Array],
               view_kwargs: dict[str, Any], teacher_view: str = 'consistent',
               batch_axes: tuple[str, ...] | None = None, reduce_in_order: bool = False
               ) -> tuple[DistillState, dict[str, jax.Array]]:
  """One update of the student (and the method's connectors) on an image batch.

  Under ``jax.jit`` (``batch_axes=None``) the step sees the global batch and
  XLA inserts the collectives. Inside ``jax.shard_map`` (the explicit
  data-parallel path, ``compile.data_parallel``) it sees this shard's
  batch and ``batch_axes`` names the mesh axes to average gradients, batch
  statistics and metrics over with ``lax.pmean`` (what ``pmap`` code did);
  augmentation draws are then per shard (``fold_in`` of the shard index).

  Args:
    state: the student state (donated by the caller).
    teacher_variables: the frozen teacher's variables (``None`` without one).
    batch: ``image`` uint8 ``[B, H, W, C]``, ``label`` int32 ``[B]``,
      ``index`` int32 ``[B]`` (positions in the split) (global batch, sharded
      over the mesh's batch axes).
    teacher_fn: the teacher (None: the method needs none).
    view_kwargs: ``data.views.make_views`` arguments (mean, std, augment and
      mixing configs).
    teacher_view: what the teacher sees (``data.views.TEACHER_VIEWS``).
    batch_axes, reduce_in_order: as ``update``.

  Returns:
    The new state and scalar metrics (``update``; means over the global
    batch), with ``accuracy``.
  """
  rng = jax.random.fold_in(state.rng, state.step)
  augment_rng, dropout_rng = jax.random.split(rng)
  if batch_axes:
    shard = jax.lax.axis_index(batch_axes)
    augment_rng, dropout_rng = (jax.random.fold_in(augment_rng, shard),
                                jax.random.fold_in(dropout_rng, shard))
  model_batch, teacher_images = views.make_views(
      augment_rng, batch, teacher_view=teacher_view, **view_kwargs)
  teacher_out = None
  if teacher_fn is not None:
    teacher_out = jax.lax.stop_gradient(teacher_fn(teacher_variables, teacher_images, model_batch))

  def loss_fn(trainable):
    out, new_model_state = forward_train(student, trainable['student'], state.model_state,
                                         model_batch['image'], dropout_rng)
    loss, metrics, method_state = method.loss_with_state(
        out, teacher_out, model_batch, trainable['aux'], state.step, state.method_state)
    return loss, (new_model_state, method_state,
                  {**metrics, 'accuracy': accuracy(out[0], batch['label'])})

  return update(state, loss_fn, optimizer=optimizer, schedule=schedule, batch_axes=batch_axes,
                reduce_in_order=reduce_in_order)


def eval_images(batch: Batch, *, mean, std) -> jax.Array:
  """The un-augmented, normalised float32 images ``[B, H, W, C]`` of an eval batch."""
  return augment.normalize(batch['image'], mean, std)


def classification_sums(logits: jax.Array, batch: Batch, prefix: str = '') -> dict[str, jax.Array]:
  """``{prefix}correct``, ``{prefix}correct_top5``, ``{prefix}ce``: sums over ``batch['mask']``.

  Args:
    logits: ``[B, K]`` (or log-probabilities).
    batch: ``label`` int32 ``[B]`` and ``mask`` ``[B]`` (1 = a real example).
  """
  mask = batch['mask'].astype(jnp.float32)
  labels = batch['label']
  top5 = jax.lax.top_k(logits, min(5, logits.shape[-1]))[1]
  return {
      f'{prefix}correct': jnp.sum(mask * (jnp.argmax(logits, -1) == labels)),
      f'{prefix}correct_top5': jnp.sum(mask * jnp.any(top5 == labels[:, None], -1)),
      f'{prefix}ce': jnp.sum(mask * optax.softmax_cross_entropy_with_integer_labels(
          logits.astype(jnp.float32), labels)),
  }


def ensemble_log_probs(logits: list[jax.Array]) -> jax.Array:
  """``log(mean_i softmax(logits_i))``: the probability-averaging ensemble, ``[B, K]``."""
  log_probs = jnp.stack([jax.nn.log_softmax(x.astype(jnp.float32)) for x in logits])
  return jax.nn.logsumexp(log_probs, axis=0) - jnp.log(len(logits))


def ensemble_sums(named_logits: dict[str, jax.Array], batch: Batch) -> dict[str, jax.Array]:
  """``count``, each model's ``classification_sums`` under its prefix (the dict's
  keys: ``''``, ``peer1_``, ``gen2_`` ...) and those of their ``ensemble_``
  (``ensemble_log_probs``); logits ``[B, K]``."""
  sums = {'count': batch['mask'].astype(jnp.float32).sum()}
  for prefix, logits in named_logits.items():
    sums.update(classification_sums(logits, batch, prefix=prefix))
  sums.update(classification_sums(ensemble_log_probs(list(named_logits.values())), batch,
                                  prefix='ensemble_'))
  return sums


def eval_step(state: DistillState, teacher_variables: Any, batch: Batch, *,
              student: nn.Module, teacher_fn: TeacherFn | None, mean, std
              ) -> dict[str, jax.Array]:
  """Sums over the real (``mask``) examples of one padded evaluation batch.

  Returns float32 scalars: ``count``, ``correct``, ``correct_top5``,
  ``ce``; with a teacher also ``teacher_correct``, ``agreement`` (same top-1)
  and ``kl`` (KL(teacher || student) at T=1, nats).
  """
  images = eval_images(batch, mean=mean, std=std)
  mask = batch['mask'].astype(jnp.float32)
  logits = student.apply(state.student_variables, images, train=False)[0]
  sums = {'count': mask.sum(), **classification_sums(logits, batch)}
  if teacher_fn is not None:
    teacher_logits = teacher_fn(teacher_variables, images, batch)[0]
    teacher_prediction = jnp.argmax(teacher_logits, -1)
    sums['teacher_correct'] = jnp.sum(mask * (teacher_prediction == batch['label']))
    sums['agreement'] = jnp.sum(mask * (teacher_prediction == jnp.argmax(logits, -1)))
    sums['kl'] = jnp.sum(mask * kl_divergence(logits, teacher_logits))
  return sums
