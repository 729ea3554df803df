"""Data parallelism over a 1-D ('data',) mesh: batches split on their leading axis, state replicated."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec


def data_mesh(num_devices: int | None = None) -> jax.sharding.Mesh:
    """A ('data',) mesh over the first ``num_devices`` devices of all processes (all by default).

    Auto axis types: the models gather (bilinear warps, deformable sampling), which explicit
    sharding mode would make us annotate op by op.
    """
    devices = jax.devices()
    count = len(devices) if num_devices is None else num_devices
    if not 1 <= count <= len(devices):
        raise ValueError(f"num_devices must be in [1, {len(devices)}]; got {num_devices}.")
    return jax.sharding.Mesh(np.asarray(devices[:count]), ("data",), axis_types=(jax.sharding.AxisType.Auto,))


def shard_batch(batch: Any, mesh: jax.sharding.Mesh) -> Any:
    """Place every array of ``batch`` split along its leading (batch) axis over the mesh.

    The leading size must be divisible by the mesh size. Single process: host arrays are split
    directly; multi-process: each process passes its own slice (``jax.make_array_from_process_local_data``).
    """
    sharding = NamedSharding(mesh, PartitionSpec("data"))

    def place(x):
        x = np.asarray(x) if not isinstance(x, jax.Array) else x
        if x.shape[0] % mesh.size and jax.process_count() == 1:
            raise ValueError(f"batch size {x.shape[0]} must be divisible by the {mesh.size} devices of the mesh.")
        if jax.process_count() > 1:
            return jax.make_array_from_process_local_data(sharding, np.asarray(x))
        return jax.device_put(x, sharding)

    return jax.tree_util.tree_map(place, batch)


def replicate(tree: Any, mesh: jax.sharding.Mesh) -> Any:
    """Place every array of ``tree`` whole on every device of the mesh."""
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))
