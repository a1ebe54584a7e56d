"""``dml``: deep mutual learning (Zhang et al., 2018), peers taught by each other online.

Peer 0 is ``config.student``; ``config.scheme.peers`` names the others' models
(``()`` = one more copy of the student). In one pure step every peer ``i``
gets ``mean_{j != i} method.loss(out_i, stop_gradient(out_j))``: with ``kd``
that is DML's ``CE + KL(p_j || p_i)`` (at the method's temperature and
weights); any logit method, and feature/relation methods whose connectors fit
the pair, work the same way. Connectors and method state are kept per
(peer, other peer) pair. Each peer has its own optimizer state; all see the
same augmented batch. The state (``PeersState``) checkpoints every peer.

Evaluation reports peer 0 as the student (``accuracy``), every other peer
(``peer<i>_accuracy``) and the peers' ensemble (``ensemble_accuracy``, the
probability average).
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from distill_jax import compile as compile_lib
from distill_jax import state as state_lib
from distill_jax import steps
from distill_jax.data import views
from distill_jax.methods.base import Method
from distill_jax.registry import register
from distill_jax.schemes import base
from distill_jax.schemes import teachers


def _pair(j: int) -> str:
  return f'peer{j}'


def init_peers(rng: jax.Array, *, peers: tuple[nn.Module, ...], method: Method,
               optimizer: optax.GradientTransformation, sample_images: jax.Array,
               num_train: int) -> state_lib.PeersState:
  """Fresh, boxed peers; peer ``i``'s aux params/method state are keyed ``peer<j>``."""
  keys = jax.random.split(rng, len(peers))
  models = []
  for key, peer in zip(keys, peers):
    init_rng, dropout_rng, state_rng = jax.random.split(key, 3)
    models.append((*state_lib.init_model({'params': init_rng, 'dropout': dropout_rng},
                                         peer, sample_images), state_rng))
  states = []
  for i, (params, model_state, features, state_rng) in enumerate(models):
    aux_params, method_state = {}, {}
    for j, other in enumerate(models):
      if j != i:
        aux_rng, method_rng = jax.random.split(jax.random.fold_in(state_rng, j))
        aux_params[_pair(j)] = method.init_aux(aux_rng, features, other[2])
        method_state[_pair(j)] = method.init_state(method_rng, features, other[2],
                                                   num_train=num_train)
    states.append(state_lib.DistillState(
        step=jnp.zeros((), jnp.int32), params=params, model_state=model_state,
        aux_params=aux_params, opt_state=optimizer.init({'student': params, 'aux': aux_params}),
        method_state=method_state, rng=state_rng))
  return state_lib.PeersState(tuple(states))


def train_step(state: state_lib.PeersState, teacher_variables: Any, batch: steps.Batch, *,
               peers: tuple[nn.Module, ...], method: Method,
               optimizer: optax.GradientTransformation, schedule,
               view_kwargs: dict[str, Any]) -> tuple[state_lib.PeersState, dict[str, jax.Array]]:
  """One update of every peer; targets are the other peers' stop-gradient outputs.

  Returns the new state and metrics: ``loss`` (mean over peers),
  ``accuracy`` (peer 0), ``peer<i>_loss``, ``peer<i>_accuracy`` and
  ``nonfinite`` (1.0: a NaN/Inf loss or gradient; no peer was updated).
  """
  del teacher_variables
  step = state.step
  rng = jax.random.fold_in(state.peers[0].rng, step)
  augment_rng, dropout_rng = jax.random.split(rng)
  model_batch = views.augmented_view(augment_rng, batch, **view_kwargs)

  def loss_fn(trainables):
    outputs, model_states = [], []
    for i, (peer, peer_state) in enumerate(zip(peers, state.peers)):
      out, model_state = steps.forward_train(
          peer, trainables[i]['student'], peer_state.model_state, model_batch['image'],
          jax.random.fold_in(dropout_rng, i))
      outputs.append(out)
      model_states.append(model_state)
    targets = [jax.lax.stop_gradient(out) for out in outputs]
    total, method_states, metrics = 0.0, [], {}
    for i, peer_state in enumerate(state.peers):
      losses, new_states = [], {}
      for j in range(len(peers)):
        if j != i:
          loss, _, new_states[_pair(j)] = method.loss_with_state(
              outputs[i], targets[j], model_batch, trainables[i]['aux'][_pair(j)], step,
              peer_state.method_state[_pair(j)])
          losses.append(loss)
      peer_loss = sum(losses) / len(losses)
      total = total + peer_loss
      method_states.append(new_states)
      metrics[f'peer{i}_loss'] = peer_loss
      metrics[f'peer{i}_accuracy'] = steps.accuracy(outputs[i][0], batch['label'])
    metrics.update(loss=total / len(peers), accuracy=metrics['peer0_accuracy'])
    return total, (tuple(model_states), tuple(method_states), metrics)

  return steps.update(state, loss_fn, optimizer=optimizer, schedule=schedule)


def eval_step(state: state_lib.PeersState, teacher_variables: Any, batch: steps.Batch, *,
              peers: tuple[nn.Module, ...], mean, std) -> dict[str, jax.Array]:
  """Sums for peer 0 (no prefix), ``peer<i>_`` and the ``ensemble_``."""
  del teacher_variables
  images = steps.eval_images(batch, mean=mean, std=std)
  return steps.ensemble_sums(
      {f'peer{i}_' if i else '': peer.apply(p.student_variables, images, train=False)[0]
       for i, (peer, p) in enumerate(zip(peers, state.peers))}, batch)


def peer_models(context: base.Context) -> tuple[nn.Module, ...]:
  """``(config.student, *scheme.peers)`` built, checked to share the class count."""
  config = context.config
  names = tuple(config.scheme.peers) or (config.student.model,)
  others = []
  for i, name in enumerate(names, start=1):
    model_config = ml_collections.ConfigDict(
        {'model': name, 'dtype': config.student.dtype,
         'kwargs': config.student.kwargs.to_dict() if name == config.student.model else {}})
    others.append(teachers.build_model(model_config, context.spec.num_classes,
                                       f'scheme.peers[{i - 1}]'))
  peers = (context.student, *others)
  out_sizes = []
  for peer in peers:
    variables = jax.eval_shape(
        lambda p=peer: p.init(jax.random.PRNGKey(0), context.sample_images, train=False))
    out_sizes.append(jax.eval_shape(
        lambda v, p=peer: p.apply(nn.unbox(v), context.sample_images, train=False),
        variables)[0].shape[-1])
  if len(set(out_sizes)) != 1:
    raise ValueError(f'dml peers must predict the same classes; their logits have '
                     f'{out_sizes} classes (peers: {config.student.model}, {", ".join(names)}).')
  return peers


@register('schemes', 'dml')
def build(context: base.Context) -> compile_lib.Compiled:
  """Deep mutual learning of ``config.student`` and ``config.scheme.peers``."""
  config, method = context.config, context.method
  if config.teacher.workdir:
    raise ValueError('scheme dml trains its peers from each other; leave '
                     'config.teacher.workdir empty.')
  peers = peer_models(context)
  boxed_init = functools.partial(
      init_peers, peers=peers, method=method, optimizer=context.optimizer,
      sample_images=context.sample_images, num_train=context.num_train)
  train_fn = functools.partial(
      train_step, peers=peers, method=method, optimizer=context.optimizer,
      schedule=context.schedule, view_kwargs=context.view_kwargs)
  eval_fn = functools.partial(eval_step, peers=peers, mean=context.spec.mean,
                              std=context.spec.std)
  return base.compile_scheme(
      context, boxed_init=boxed_init, train_step=train_fn, eval_step=eval_fn,
      teacher_variables=None,
      model_names={'student': repr(config.student.model), 'teacher': 'a dml peer'})
