"""Device mesh and shardings from the config.

The mesh has axes ``('data', 'fsdp', 'tensor')``; models annotate logical
axis names (``nn.with_logical_partitioning``) and ``config.sharding.rules``
maps them onto mesh axes, so data parallelism, FSDP and tensor parallelism are
config edits. The global batch is split over ``('data', 'fsdp')``.
"""

import contextlib
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ('data', 'fsdp', 'tensor')
BATCH_AXES = ('data', 'fsdp')


def make_mesh(mesh_config: ml_collections.ConfigDict,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A ``('data', 'fsdp', 'tensor')`` mesh; one axis may be -1 (the rest)."""
  devices = list(devices if devices is not None else jax.devices())
  sizes = [int(mesh_config[axis]) for axis in MESH_AXES]
  if sizes.count(-1) > 1:
    raise ValueError(f'At most one mesh axis may be -1, got mesh {dict(zip(MESH_AXES, sizes))}.')
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if len(devices) % known:
      raise ValueError(
          f'Mesh {dict(zip(MESH_AXES, sizes))}: {len(devices)} devices are not '
          f'divisible by the fixed axes ({known}).')
    sizes[sizes.index(-1)] = len(devices) // known
  if math.prod(sizes) != len(devices):
    raise ValueError(
        f'Mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices, '
        f'but {len(devices)} are available.')
  return jax.make_mesh(tuple(sizes), MESH_AXES, axis_types=(AxisType.Auto,) * 3,
                       devices=devices)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over ``data`` and ``fsdp``; the rest replicated."""
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_shards(mesh: Mesh) -> int:
  return mesh.shape['data'] * mesh.shape['fsdp']


def check_batch_size(name: str, batch_size: int, mesh: Mesh) -> None:
  """The global batch must split evenly over the batch shards and the hosts."""
  shards = batch_shards(mesh)
  for count, what in ((shards, 'batch shards (mesh data x fsdp)'),
                      (jax.process_count(), 'processes')):
    if batch_size % count:
      raise ValueError(
          f'{name}={batch_size} is not divisible by the {count} {what}; '
          f'use a multiple of {count}.')


def logical_shardings(boxed_tree: Any, mesh: Mesh,
                      rules: Sequence[tuple[str, Any]]) -> Any:
  """NamedShardings for a tree of (possibly ``nn.LogicallyPartitioned``) leaves.

  ``boxed_tree`` is typically ``jax.eval_shape(model.init, ...)``; unannotated
  leaves are replicated.
  """
  specs = nn.get_partition_spec(boxed_tree)
  return nn.logical_to_mesh_sharding(specs, mesh, [tuple(rule) for rule in rules])


def with_shardings(boxed_tree: Any, shardings: Any) -> Any:
  """``jax.ShapeDtypeStruct`` leaves of the unboxed ``boxed_tree`` carrying ``shardings``."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      nn.unbox(boxed_tree), shardings)


@contextlib.contextmanager
def activation_layout(mesh: Mesh | None, rules: Sequence[tuple[str, Any]]):
  """Within it, the models' activation constraints (``nn.with_logical_constraint``)
  map their logical axes through ``rules`` onto ``mesh``; outside it, or with
  ``mesh`` None (one device, or inside ``shard_map``), they are no-ops.

  Enter it while tracing a jitted step (it sets the abstract mesh only).
  """
  if mesh is None:
    yield
    return
  with nn.logical_axis_rules([tuple(rule) for rule in rules]), \
      jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
    yield


def bytes_per_device(tree: Any) -> int:
  """Bytes one device holds of ``tree`` (``jax.ShapeDtypeStruct``/arrays with shardings)."""
  total = 0
  for x in jax.tree.leaves(tree):
    shape = x.sharding.shard_shape(x.shape) if getattr(x, 'sharding', None) else x.shape
    total += math.prod(shape) * jnp.dtype(x.dtype).itemsize
  return total


def check_replication(leaves: Sequence[Any], *, what: str,
                      config: ml_collections.ConfigDict) -> None:
  """Refuses a layout that replicates too much of a large model.

  When ``leaves`` (arrays or shape structs with shardings) hold more than
  ``config.large_model_bytes`` in all, at most ``config.max_replicated_fraction``
  of those bytes may be fully replicated over a mesh of several devices.

  Raises:
    ValueError: naming the replicated share and the config keys to change.
  """
  leaves = [x for x in leaves if getattr(x, 'sharding', None) is not None]
  total = sum(math.prod(x.shape) * jnp.dtype(x.dtype).itemsize for x in leaves)
  if not leaves or total <= config.large_model_bytes or len(leaves[0].sharding.device_set) < 2:
    return
  replicated = sum(math.prod(x.shape) * jnp.dtype(x.dtype).itemsize for x in leaves
                   if x.sharding.is_fully_replicated)
  if replicated > config.max_replicated_fraction * total:
    raise ValueError(
        f'{what.capitalize()} ({total / 2**30:.2f} GiB) would be {replicated / total:.0%} '
        f'replicated on every device (limit: sharding.max_replicated_fraction='
        f'{config.max_replicated_fraction}). Shard them with sharding.rules (e.g. '
        "('embed', 'fsdp'), ('mlp', 'tensor')) and a mesh with fsdp/tensor > 1, or raise "
        'sharding.max_replicated_fraction / sharding.large_model_bytes.')
