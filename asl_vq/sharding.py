"""One mesh for 1 or N devices and 1 or N hosts: batch on `data`, state replicated."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from asl_vq import errors

DATA_AXIS = "data"


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 1-D `data` mesh over `devices` (default: every device of every
  process; inference passes `jax.local_devices()`)."""
  if devices is None:
    return jax.make_mesh(
        (jax.device_count(),),
        (DATA_AXIS,),
        axis_types=(jax.sharding.AxisType.Auto,),
    )
  return Mesh(
      np.asarray(devices),
      (DATA_AXIS,),
      axis_types=(jax.sharding.AxisType.Auto,),
  )


def data_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_shardings(
    mesh: Mesh, keys: Sequence[str]
) -> dict[str, NamedSharding]:
  """{key: `data_sharding(mesh)`}: a batch's `keys` split over the mesh's
  `data` axis (a jit-ed step's `in_shardings` for its batch)."""
  return {k: data_sharding(mesh) for k in keys}


def attention_layout(mesh: Mesh) -> dict[str, int]:
  """How the Squeezeformer's attention splits a batch sharded over `mesh`
  into passes (`asl_vq.models.squeezeformer.RelativeSelfAttention`): the
  `sequences_per_pass` and `batch_devices` keyword arguments of the models'
  `from_config`.

  2 sequences a pass (cache-sized [2, H, T, T] scores: faster there, see
  `RelativeSelfAttention`) when `mesh` is JAX's one device and a CPU, else
  0 (one pass). Only then: the passes split each device's share of the
  batch, and a mesh need not span `jax.device_count()` (inference uses the
  local devices), so several devices keep one pass. Any choice gives the
  same values to float rounding; this one is what the attention chose for
  itself before its callers did, so runs keep their numbers bit for bit.
  """
  single_cpu = (
      mesh.size == 1
      and jax.device_count() == 1
      and jax.default_backend() == "cpu"
  )
  return dict(
      sequences_per_pass=2 if single_cpu else 0, batch_devices=mesh.size
  )


def check_batch_size(global_batch_size: int, mesh: Mesh) -> None:
  if global_batch_size % mesh.size:
    raise errors.UserError(
        f"the global batch size {global_batch_size} does not split evenly "
        f"over {mesh.size} devices; choose a multiple of {mesh.size}"
    )


def to_global(
    local_batch: Mapping[str, np.ndarray], mesh: Mesh, keys: tuple[str, ...]
) -> dict[str, jax.Array]:
  """Assembles each process's slice into global arrays sharded on `data`."""
  sharding = data_sharding(mesh)
  return {
      k: jax.make_array_from_process_local_data(sharding, local_batch[k])
      for k in keys
  }


def gather(x: Any) -> Any:
  """A global (possibly multi-host) array as one numpy array on every host."""
  if jax.process_count() == 1:
    return jax.device_get(x)
  return multihost_utils.process_allgather(x, tiled=True)


def local_value(x: jax.Array) -> np.ndarray:
  """A replicated array's value, read from this process's own copy."""
  return np.asarray(x.addressable_data(0))
