"""Training on several machines: JAX's multi-process runtime, global meshes and batches, per-process data.

Beyond one machine JAX runs one Python process per host (multi-controller): every process runs the
same program, owns its local devices and feeds them its own share of the data; ``jit`` over a mesh of
*all* devices then runs one SPMD program across hosts, with gradients all-reduced by XLA. This module
holds what a trainer needs for that and nothing more:

- ``initialize``: connect the processes (``jax.distributed.initialize``) from arguments or environment
  variables, before anything touches a JAX device; a no-op when a single process is configured, so
  the same script runs on a laptop and on a pod.
- ``global_mesh``, ``process_batch_slice``, ``host_local_to_global``: the ('data',) mesh over every
  process's devices, the rows of the global batch this process loads, and the global ``jax.Array``
  assembled from each process's rows.
- ``process_shard_options``, ``shard_dataset``: grain sharding by process index, with every process
  given the same number of examples (processes must step in lockstep: one that runs out of data
  first leaves the others blocked in a collective).
- ``assert_shared_directory``: orbax multi-process checkpoints need one directory every process sees.

Checkpoints need nothing else: ``turbjax.train.checkpoint.Checkpoints`` (an orbax ``CheckpointManager``)
is multi-process aware. Every process must call ``save(step, state)`` with the same step and its
globally sharded state; each writes the shards it owns, and process 0 (orbax's default primary host)
writes the metadata and commits the step after a barrier. ``restore(like)`` reads into the shardings
of ``like``, so a checkpoint written by 2 processes restores on 1 and vice versa.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grain
import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

ENV_MODE = "TURBJAX_DISTRIBUTED"
ENV_COORDINATOR_ADDRESS = "TURBJAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "TURBJAX_NUM_PROCESSES"
ENV_PROCESS_ID = "TURBJAX_PROCESS_ID"
ENV_LOCAL_DEVICE_IDS = "TURBJAX_LOCAL_DEVICE_IDS"
MODES = ("", "auto", "off")

# What this module passed to jax.distributed.initialize (None: not called by us), for idempotence.
_initialized_with: dict[str, Any] | None = None


def _env_int(name: str) -> int | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer; got {raw!r}.") from None


def _env_device_ids(name: str) -> list[int] | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        return [int(part) for part in raw.split(",")]
    except ValueError:
        raise ValueError(
            f"environment variable {name} must be comma-separated integers (e.g. '0,1'); got {raw!r}."
        ) from None


def check_coordinator_address(address: str) -> str:
    """``address`` if it is ``host:port`` (IPv6 hosts in brackets, ``[::1]:1234``); ValueError otherwise."""
    if not isinstance(address, str) or ":" not in address or any(c.isspace() for c in address):
        raise ValueError(f"coordinator_address must be 'host:port' (e.g. '10.0.0.1:1234'); got {address!r}.")
    host, port = address.rsplit(":", 1)
    if host.startswith("[") != host.endswith("]") or host in ("", "[]") or (":" in host and not host.startswith("[")):
        raise ValueError(
            f"coordinator_address must be 'host:port' with a non-empty host (IPv6 in brackets, '[::1]:1234'); "
            f"got {address!r}."
        )
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"coordinator_address port must be an integer in [1, 65535]; got {address!r}.")
    return address


def _check_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer; got {value!r}.")
    return int(value)


def _check_ids(local_device_ids: int | Sequence[int] | None) -> list[int] | None:
    if local_device_ids is None:
        return None
    ids = [local_device_ids] if isinstance(local_device_ids, (int, np.integer)) else list(local_device_ids)
    ids = [_check_int("local_device_ids", i) for i in ids]
    if not ids or min(ids) < 0 or len(set(ids)) != len(ids):
        raise ValueError(f"local_device_ids must be distinct integers >= 0, at least one; got {local_device_ids!r}.")
    return ids


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    local_device_ids: int | Sequence[int] | None = None,
    *,
    initialization_timeout: int = 300,
) -> bool:
    """Connect this process to the others of a multi-process run; True if the run is multi-process.

    Call it first thing in a main, before any JAX computation or ``jax.devices()``: JAX fixes the
    device set when its backend starts. Each value comes from its argument, else from an environment
    variable (so launch scripts need not change the command line):

    =====================  ==============================  ==================================================
    argument               environment variable            meaning
    =====================  ==============================  ==================================================
    coordinator_address    TURBJAX_COORDINATOR_ADDRESS     ``host:port`` of process 0, reachable by all
    num_processes          TURBJAX_NUM_PROCESSES           number of processes, >= 1
    process_id             TURBJAX_PROCESS_ID              this process, in [0, num_processes)
    local_device_ids       TURBJAX_LOCAL_DEVICE_IDS        devices this process uses (GPU), e.g. ``0,1``
    =====================  ==============================  ==================================================

    ``TURBJAX_DISTRIBUTED`` selects the mode:

    - unset: explicit. Nothing given means a single process and this is a no-op (returns False);
      otherwise address, count and id must all be given (a partial setup is a ValueError rather than
      a run that silently trains alone). ``num_processes == 1`` is also a no-op.
    - ``auto``: let JAX detect the cluster (Cloud TPU pod slices, SLURM, Open MPI) for whatever is
      not given: ``jax.distributed.initialize()``. Opt-in, because detection on a machine that
      merely has SLURM variables set would make a one-process script wait for peers that never come.
    - ``off``: never initialize (run one process even inside a cluster allocation).

    Inputs are validated before JAX is called. Calling again after a successful call returns True
    without reconnecting (RuntimeError if the new values contradict the running setup). For CPU
    processes the gloo collectives are selected if the JAX build defaults to none, since cross-process
    CPU collectives need them. ``initialization_timeout`` (seconds) bounds the wait for the peers.
    """
    global _initialized_with
    mode = os.environ.get(ENV_MODE, "").strip().lower()
    if mode not in MODES:
        raise ValueError(f"environment variable {ENV_MODE} must be one of 'auto', 'off' or unset; got {mode!r}.")
    if mode == "off":
        return jax.distributed.is_initialized()
    address = coordinator_address
    if address is None:
        address = os.environ.get(ENV_COORDINATOR_ADDRESS, "").strip() or None
    count = num_processes if num_processes is not None else _env_int(ENV_NUM_PROCESSES)
    index = process_id if process_id is not None else _env_int(ENV_PROCESS_ID)
    ids = _check_ids(local_device_ids if local_device_ids is not None else _env_device_ids(ENV_LOCAL_DEVICE_IDS))
    if address is not None:
        check_coordinator_address(address)
    if count is not None and _check_int("num_processes", count) < 1:
        raise ValueError(f"num_processes must be >= 1; got {count}.")
    if index is not None:
        index = _check_int("process_id", index)
        upper = f"{count - 1}" if count is not None else "num_processes - 1"
        if index < 0 or (count is not None and index >= count):
            raise ValueError(f"process_id must be in [0, {upper}]; got {index}.")
    if _check_int("initialization_timeout", initialization_timeout) < 1:
        raise ValueError(f"initialization_timeout must be >= 1 second; got {initialization_timeout}.")
    request = {"coordinator_address": address, "num_processes": count, "process_id": index, "local_device_ids": ids}

    if jax.distributed.is_initialized():
        running = {"num_processes": jax.process_count(), "process_id": jax.process_index()}
        if _initialized_with is not None:
            running = {**_initialized_with, **running}
        clashes = {k: (v, running[k]) for k, v in request.items() if v is not None and running.get(k, v) != v}
        if clashes:
            detail = ", ".join(f"{k}={v!r} (running: {r!r})" for k, (v, r) in clashes.items())
            raise RuntimeError(f"JAX distributed is already initialized with other values: {detail}.")
        return True

    if mode != "auto":
        if all(v is None for v in request.values()) or count == 1:
            return False
        missing = [
            f"{name} ({env})"
            for name, env, value in (
                ("coordinator_address", ENV_COORDINATOR_ADDRESS, address),
                ("num_processes", ENV_NUM_PROCESSES, count),
                ("process_id", ENV_PROCESS_ID, index),
            )
            if value is None
        ]
        if missing:
            raise ValueError(
                f"a multi-process run needs coordinator_address, num_processes and process_id; missing "
                f"{', '.join(missing)}. Give them as arguments or environment variables, or set {ENV_MODE}=auto "
                "to let JAX detect a TPU pod / SLURM / Open MPI cluster."
            )

    collectives = getattr(jax.config, "jax_cpu_collectives_implementation", "gloo")
    if collectives in (None, "", "none"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    given = {k: v for k, v in request.items() if v is not None}
    try:
        jax.distributed.initialize(**given, initialization_timeout=initialization_timeout)
    except ValueError as error:
        if mode == "auto":
            raise RuntimeError(
                f"{ENV_MODE}=auto but JAX could not detect a cluster (Cloud TPU, SLURM, Open MPI) to fill in what "
                f"was not given ({error}). Set {ENV_COORDINATOR_ADDRESS}, {ENV_NUM_PROCESSES} and "
                f"{ENV_PROCESS_ID}, or unset {ENV_MODE} for a single process."
            ) from error
        raise
    _initialized_with = {**given, "num_processes": jax.process_count(), "process_id": jax.process_index()}
    return True


def global_mesh(axis_name: str = "data") -> jax.sharding.Mesh:
    """A 1-D mesh over the devices of all processes, grouped by process.

    Devices are ordered by process index (stable, so each process keeps JAX's local order): the
    shards a process owns are then one contiguous block of rows, namely ``process_batch_slice``, and
    a global batch assembled from the processes' slices has the rows of the single-process batch in
    the same order.
    """
    devices = sorted(jax.devices(), key=lambda d: d.process_index)
    return jax.sharding.Mesh(np.asarray(devices), (axis_name,), axis_types=(jax.sharding.AxisType.Auto,))


def process_batch_slice(
    global_batch_size: int, *, process_index: int | None = None, process_count: int | None = None
) -> tuple[int, int]:
    """``(start, stop)``: the rows of a global batch that this process loads (JAX's index and count by default).

    Every process loads the same number of rows, so the global batch must divide by the process count.
    With ``global_mesh`` these rows are exactly the shards the process's devices hold.
    """
    index = jax.process_index() if process_index is None else process_index
    count = jax.process_count() if process_count is None else process_count
    if _check_int("global_batch_size", global_batch_size) < 1:
        raise ValueError(f"global_batch_size must be >= 1; got {global_batch_size}.")
    if _check_int("process_count", count) < 1 or not 0 <= _check_int("process_index", index) < count:
        raise ValueError(
            f"process_index must be in [0, process_count - 1] with process_count >= 1; got {index}, {count}."
        )
    if global_batch_size % count:
        raise ValueError(
            f"global_batch_size ({global_batch_size}) must be divisible by the number of processes ({count})."
        )
    local = global_batch_size // count
    return index * local, (index + 1) * local


def host_local_to_global(local_batch: Any, mesh: jax.sharding.Mesh, axis_name: str = "data") -> Any:
    """Global ``jax.Array``s split on the leading axis over ``mesh`` from each process's own rows.

    Every process calls this with its slice (same shapes on all processes, leading size divisible by
    its number of devices in the mesh); the result has leading size local * processes and is the
    input of a jitted step on the global mesh. No data moves between hosts: each process places its
    rows on its own devices (``jax.make_array_from_process_local_data``). On one process it is a
    plain sharded ``device_put``.
    """
    sharding = NamedSharding(mesh, PartitionSpec(axis_name))
    local_devices = sum(d.process_index == jax.process_index() for d in mesh.devices.flat)
    if local_devices == 0:
        raise ValueError(f"the mesh has no device of process {jax.process_index()}; use global_mesh().")

    def place(x):
        x = np.asarray(x)
        if x.ndim == 0 or x.shape[0] % local_devices:
            raise ValueError(
                f"each process's batch must lead with a size divisible by its {local_devices} devices in the mesh; "
                f"got shape {x.shape}."
            )
        return jax.make_array_from_process_local_data(sharding, x)

    return jax.tree_util.tree_map(place, local_batch)


def process_shard_options(drop_remainder: bool = True) -> grain.sharding.ShardOptions:
    """grain's shard of this process: ``ShardByJaxProcess`` (index ``jax.process_index()`` of
    ``jax.process_count()``), for ``grain.DataLoader``/``IndexSampler``, ``shard_dataset`` and
    ``turbjax.data.make_pipeline(config, shard_options=...)``.

    ``drop_remainder`` defaults to True, unlike grain's: processes must take the same number of steps,
    or the one with more data waits in a collective for peers that have finished.
    """
    return grain.sharding.ShardByJaxProcess(drop_remainder=drop_remainder)


def shard_dataset(
    dataset: grain.MapDataset, shard_options: grain.sharding.ShardOptions | None = None
) -> grain.MapDataset:
    """This process's examples of ``dataset``: every ``shard_count``-th from ``shard_index`` (strided).

    Strided rather than contiguous: when the dataset is shuffled (with one seed on every process)
    before sharding, global batch ``s`` assembled from the processes' local batches ``s`` holds the
    same examples as batch ``s`` of a single process, so results do not depend on the process count.
    With ``drop_remainder`` (the default of ``process_shard_options``) the last ``len % shard_count``
    examples are dropped, so all shards have the same length.
    """
    options = process_shard_options() if shard_options is None else shard_options
    size = len(dataset)
    usable = size - size % options.shard_count if options.drop_remainder else size
    if usable < options.shard_count:
        raise ValueError(f"a dataset of {size} examples cannot give each of {options.shard_count} processes one.")
    return dataset[:usable][options.shard_index :: options.shard_count]


def assert_shared_directory(directory: str | Path) -> Path:
    """``directory`` (created) after checking that every process sees the same one; returns its absolute path.

    Multi-process orbax checkpoints are written jointly: each process writes its shards into the
    step directory that process 0 creates and later commits. On per-host local disks the other
    processes' shards would be missing (or the save would stall), so check once before training.
    Process 0 writes a random token into the directory, and every process must read it back.
    """
    from jax.experimental import multihost_utils

    path = Path(directory).absolute()
    if jax.process_count() == 1:
        path.mkdir(parents=True, exist_ok=True)
        return path
    token_file = path / ".turbjax-shared-check"
    token = np.int32(secrets.randbits(31)) if jax.process_index() == 0 else np.int32(0)
    token = int(multihost_utils.broadcast_one_to_all(token))
    if jax.process_index() == 0:
        path.mkdir(parents=True, exist_ok=True)
        token_file.write_text(str(token))
    multihost_utils.sync_global_devices(f"turbjax-shared-write-{token}")
    seen = token_file.read_text().strip() if token_file.exists() else None
    ok = multihost_utils.process_allgather(np.int32(seen == str(token)))
    multihost_utils.sync_global_devices(f"turbjax-shared-read-{token}")
    if jax.process_index() == 0:
        token_file.unlink(missing_ok=True)
    if not np.all(ok):
        missing = [int(i) for i in np.flatnonzero(np.asarray(ok) == 0)]
        raise RuntimeError(
            f"{path} is not shared by all processes (processes {missing} do not see process 0's files); "
            "multi-process checkpoints need a shared filesystem (NFS, Lustre, GCS FUSE ...)."
        )
    return path
