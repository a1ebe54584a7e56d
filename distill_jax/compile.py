"""The one compile path of every task and scheme: state layout, AOT compile, memory report.

A task (``distill_jax.tasks``) or a training scheme (``distill_jax.schemes``)
defines a boxed state initialiser and pure step functions; ``compile_steps``
turns them into what the loop runs (``Compiled``)::

    train_fn(state, teacher_variables, batch) -> (state, metrics)   # state donated
    eval_fn(state, teacher_variables, batch) -> eval sums

The state is laid out from its logical axes (``config.sharding.rules``) and
created directly in its shardings; the train step is compiled ahead of time
with explicit in/out shardings and donation (it can never retrace); the
replication check refuses layouts that replicate too much of a large model;
``sharding.mode=shard_map`` turns the step into an explicit data-parallel
``jax.shard_map`` (``data_parallel``).
"""

import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import ml_collections

from distill_jax import sharding
from distill_jax.methods.base import MissingFeatureError
from distill_jax.teacher_check import TeacherSource

SHARDING_MODES = ('auto', 'shard_map')
SHARD_MAP_SCHEMES = ('offline', 'multi_teacher')


@dataclasses.dataclass
class Compiled:
  """Steps ready to run.

  Attributes:
    teacher_variables: second argument of both step functions.
    abstract_state: the state's ``jax.ShapeDtypeStruct`` tree with shardings
      (the restore target of checkpoints).
    init_fn: rng -> a fresh state, created in its shardings.
    train_fn: the train step, compiled ahead of time (``jax.stages.Compiled``:
      it can never retrace or recompile).
    eval_fn: the jitted evaluation step.
    num_params: trained model parameters (all peers / heads included).
    memory: per-device bytes: ``state``, ``params``, ``opt_state``,
      ``teachers`` (from the shardings) and the compiled step's
      ``memory_analysis()`` (``step_arguments``, ``step_outputs``,
      ``step_alias`` (donated), ``step_temp``, ``step_code``).
    batch_sharding: the sharding of every batch array (split over the
      mesh's batch axes).
    teacher_sources: where the loaded teachers came from
      (``teacher_check.TeacherSource``; () = no loaded teacher).
  """
  teacher_variables: Any
  abstract_state: Any
  init_fn: Callable[[jax.Array], Any]
  train_fn: Callable[..., Any]
  eval_fn: Callable[..., Any]
  num_params: int
  memory: dict[str, int]
  batch_sharding: Any
  teacher_sources: tuple[TeacherSource, ...] = ()


def compile_steps(config: ml_collections.ConfigDict, mesh: Any, *,
                  boxed_init: Callable[[jax.Array], Any],
                  train_step: Callable[..., Any], eval_step: Callable[..., Any],
                  teacher_variables: Any, abstract_batch: dict[str, jax.ShapeDtypeStruct],
                  model_names: dict[str, str],
                  teacher_sources: tuple[TeacherSource, ...] = ()) -> Compiled:
  """Lays out the state from its logical axes and compiles the two steps.

  Args:
    config: the run's config (``sharding``, ``scheme.name``, ``method.name``).
    mesh: the device mesh.
    boxed_init: rng -> a fresh state whose params keep their
      ``nn.LogicallyPartitioned`` boxes (traced with ``jax.eval_shape`` here).
    train_step: ``(state, teacher_variables, batch) -> (state, metrics)``;
      with ``sharding.mode=shard_map`` it must take ``batch_axes=`` (the mesh
      axes to ``lax.pmean`` over).
    eval_step: ``(state, teacher_variables, batch) -> sums``.
    teacher_variables: already placed in their shardings (or None).
    abstract_batch: the global train batch's shapes and dtypes (no sharding).
    model_names: role -> model name, to name the model when a method asks
      for a feature it lacks (``MissingFeatureError.role``).
    teacher_sources: where the loaded teachers came from (``Compiled``).
  """
  rules = config.sharding.rules
  try:
    boxed_state = jax.eval_shape(boxed_init, jax.random.PRNGKey(0))
  except MissingFeatureError as e:
    raise ValueError(f'config.{e.role}: model {model_names.get(e.role, "?")}: {e}') from e
  state_shardings = sharding.logical_shardings(boxed_state, mesh, rules)
  abstract_state = sharding.with_shardings(boxed_state, state_shardings)
  replicated = sharding.replicated(mesh)
  teacher_shardings = jax.tree.map(lambda x: x.sharding, teacher_variables)
  params = [x for path, x in jax.tree_util.tree_leaves_with_path(abstract_state)
            if any(getattr(k, 'name', None) == 'params' for k in path)]
  sharding.check_replication(params, what='the trained params', config=config.sharding)
  sharding.check_replication(jax.tree.leaves(teacher_variables), what='the teachers',
                             config=config.sharding)
  if config.sharding.mode == 'shard_map':
    train_step = data_parallel(train_step, config, mesh, abstract_state)
  batch_sharding = sharding.batch_sharding(mesh)
  train_fn = jax.jit(
      train_step, in_shardings=(state_shardings, teacher_shardings, batch_sharding),
      out_shardings=(state_shardings, replicated), donate_argnums=0)
  abstract_batch = {k: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=batch_sharding)
                    for k, x in abstract_batch.items()}
  abstract_teachers = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), teacher_variables)
  executable = train_fn.lower(abstract_state, abstract_teachers, abstract_batch).compile()
  eval_fn = jit_replicated(eval_step, mesh)
  init_fn = jax.jit(lambda rng: nn.unbox(boxed_init(rng)), out_shardings=state_shardings)
  memory = {
      'state': sharding.bytes_per_device(abstract_state),
      'params': sharding.bytes_per_device(params),
      'opt_state': sharding.bytes_per_device(
          [x.opt_state for x in _distill_states(abstract_state)]),
      'teachers': sharding.bytes_per_device(abstract_teachers),
      **step_memory(executable)}
  return Compiled(teacher_variables, abstract_state, init_fn, executable, eval_fn,
                  sum(x.size for x in params), memory, batch_sharding, teacher_sources)


def jit_replicated(fn: Callable[..., Any], mesh: Any) -> Callable[..., Any]:
  """``fn`` jitted with replicated outputs on ``mesh`` (eval sums every host reads)."""
  return jax.jit(fn, out_shardings=sharding.replicated(mesh))


def placer(target: Any) -> Callable[[jax.Array], jax.Array]:
  """Puts (global) arrays into the sharding ``target``, on one or several hosts."""
  return jax.jit(lambda x: x, out_shardings=target)


def _distill_states(state: Any) -> list[Any]:
  """The ``DistillState`` (or every peer's) inside a scheme's state."""
  return list(state.peers) if hasattr(state, 'peers') else [state]


def step_memory(executable: Any) -> dict[str, int]:
  """A compiled step's ``memory_analysis()`` in bytes (empty where XLA gives none)."""
  analysis = executable.memory_analysis()
  if analysis is None:
    return {}
  return {'step_arguments': analysis.argument_size_in_bytes,
          'step_outputs': analysis.output_size_in_bytes,
          'step_alias': analysis.alias_size_in_bytes,
          'step_temp': analysis.temp_size_in_bytes,
          'step_code': analysis.generated_code_size_in_bytes}


def check_sharding_mode(config: ml_collections.ConfigDict) -> None:
  if config.sharding.mode not in SHARDING_MODES:
    raise ValueError(f'sharding.mode={config.sharding.mode!r}; choose one of '
                     f'{", ".join(SHARDING_MODES)}.')
  if config.sharding.reduce_in_order and config.sharding.mode != 'shard_map':
    raise ValueError('sharding.reduce_in_order=True is a sharding.mode=shard_map option (under '
                     "'auto' XLA chooses the collectives).")


def data_parallel(train_step: Callable[..., Any], config: ml_collections.ConfigDict,
                  mesh: Any, abstract_state: Any) -> Callable[..., Any]:
  """``train_step`` as an explicit data-parallel ``jax.shard_map`` (the pmap-style path).

  The state and teachers are replicated, the batch is split over
  ``sharding.BATCH_AXES``, and the step averages with ``lax.pmean``
  (``steps.update(batch_axes=...)``; in a fixed order with
  ``sharding.reduce_in_order``). Batch normalisation then uses each
  shard's statistics (as ``pmap`` without a cross-replica axis name).

  Raises:
    ValueError: the scheme or method cannot run this way, or the state is not
      fully replicated (use mode 'auto' for FSDP / tensor parallelism).
  """
  if config.scheme.name not in SHARD_MAP_SCHEMES:
    raise ValueError(f'sharding.mode=shard_map runs the {", ".join(SHARD_MAP_SCHEMES)} schemes; '
                     f'scheme {config.scheme.name!r} needs sharding.mode=auto.')
  if jax.tree.leaves(abstract_state.method_state):
    raise ValueError(f'sharding.mode=shard_map: method {config.method.name!r} keeps per-example '
                     'state (a memory bank) that shards would update apart; use sharding.mode=auto.')
  sharded = [x for x in jax.tree.leaves(abstract_state) if not x.sharding.is_fully_replicated]
  if sharded:
    raise ValueError('sharding.mode=shard_map is data-parallel only, but sharding.rules shard '
                     f'{len(sharded)} state arrays (FSDP / tensor parallel): use sharding.mode=auto.')
  spec = jax.sharding.PartitionSpec
  return jax.shard_map(
      functools.partial(train_step, batch_axes=sharding.BATCH_AXES,
                        reduce_in_order=config.sharding.reduce_in_order), mesh=mesh,
      in_specs=(spec(), spec(), spec(sharding.BATCH_AXES)), out_specs=(spec(), spec()),
      check_vma=False)
