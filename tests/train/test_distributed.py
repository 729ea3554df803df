"""Multi-process training: initialize's validation, per-process data, and 2 processes x 2 CPU devices
training, checkpointing and restoring like 1 process with 1 device."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grain
import jax
import numpy as np
import pytest

from turbjax.data.pipeline import make_pipeline, records_dataset
from turbjax.train import distributed

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 300  # seconds for a whole run (all its processes); a run takes ~10 s on 2 cores


@pytest.fixture
def clean_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith("TURBJAX_"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_single_process_is_a_no_op(clean_env):
    assert distributed.initialize() is False
    assert distributed.initialize(num_processes=1) is False
    clean_env.setenv("TURBJAX_DISTRIBUTED", "off")
    clean_env.setenv("TURBJAX_NUM_PROCESSES", "4")
    assert distributed.initialize() is False


@pytest.mark.parametrize(
    ("kwargs", "env", "match"),
    [
        ({"coordinator_address": "localhost", "num_processes": 2, "process_id": 0}, {}, "must be 'host:port'"),
        ({"coordinator_address": "host:0", "num_processes": 2, "process_id": 0}, {}, r"port .* \[1, 65535\]"),
        ({"coordinator_address": "::1:80", "num_processes": 2, "process_id": 0}, {}, "IPv6 in brackets"),
        ({"coordinator_address": "h:1", "num_processes": 0, "process_id": 0}, {}, "num_processes must be >= 1"),
        ({"coordinator_address": "h:1", "num_processes": 2, "process_id": 2}, {}, r"process_id must be in \[0, 1\]"),
        ({"coordinator_address": "h:1", "num_processes": 2, "process_id": -1}, {}, r"process_id must be in \[0, 1\]"),
        ({"coordinator_address": "h:1", "num_processes": 2}, {}, r"missing process_id \(TURBJAX_PROCESS_ID\)"),
        ({"local_device_ids": [0, 0]}, {}, "local_device_ids must be distinct"),
        ({}, {"TURBJAX_NUM_PROCESSES": "two"}, "TURBJAX_NUM_PROCESSES must be an integer"),
        ({}, {"TURBJAX_DISTRIBUTED": "yes"}, "TURBJAX_DISTRIBUTED must be one of"),
        ({"num_processes": 2, "process_id": 1}, {}, r"missing coordinator_address \(TURBJAX_COORDINATOR_ADDRESS\)"),
    ],
)
def test_bad_setup_names_the_parameter_before_calling_jax(clean_env, kwargs, env, match):
    for name, value in env.items():
        clean_env.setenv(name, value)
    with pytest.raises(ValueError, match=match):
        distributed.initialize(**kwargs)


def test_process_batch_slices_partition_the_global_batch():
    assert [distributed.process_batch_slice(8, process_index=p, process_count=2) for p in (0, 1)] == [(0, 4), (4, 8)]
    assert distributed.process_batch_slice(6) == (0, 6)
    with pytest.raises(ValueError, match=r"global_batch_size \(9\) must be divisible by the number of processes \(2\)"):
        distributed.process_batch_slice(9, process_index=0, process_count=2)


def test_shard_dataset_gives_equal_strided_shards():
    data = grain.MapDataset.range(11)
    shards = [
        list(distributed.shard_dataset(data, grain.sharding.ShardOptions(p, 3, drop_remainder=True))) for p in (0, 1, 2)
    ]
    assert shards == [[0, 3, 6], [1, 4, 7], [2, 5, 8]]
    uneven = [len(distributed.shard_dataset(data, grain.sharding.ShardOptions(p, 3))) for p in (0, 1, 2)]
    assert uneven == [4, 4, 3]
    assert list(distributed.shard_dataset(data)) == list(range(11))  # one process: everything
    options = distributed.process_shard_options()
    assert (options.shard_index, options.shard_count, options.drop_remainder) == (0, 1, True)


def test_host_local_to_global_on_one_process():
    mesh = distributed.global_mesh()
    batch = {"x": np.arange(2 * mesh.size, dtype=np.float32).reshape(mesh.size, 2)}
    out = distributed.host_local_to_global(batch, mesh)
    assert out["x"].sharding.spec == jax.sharding.PartitionSpec("data")
    np.testing.assert_array_equal(np.asarray(out["x"]), batch["x"])
    with pytest.raises(ValueError, match="divisible by its"):
        distributed.host_local_to_global({"x": np.zeros((mesh.size + 1, 2))}, mesh)


def test_records_pipeline_shards_have_equal_sizes():
    import ml_collections

    config = ml_collections.ConfigDict(
        {"half_window": 0, "fields": ("example_id", "centre"), "crop_size": None, "shuffle": False, "seed": 0}
    )
    config.num_epochs = 1
    source = [None] * 5  # 5 one-frame clips: only the length is read here
    sizes = [len(records_dataset(config, source, 1, 2, process_index=p, process_count=2)) for p in (0, 1)]
    assert sizes == [2, 2]  # 5 samples: the fifth is dropped so both processes take the same steps
    with pytest.raises(ValueError, match="either shard_options or process_index"):
        make_pipeline(config, process_index=0, shard_options=grain.sharding.ShardOptions(0, 2))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices: int, **extra: str) -> dict[str, str]:
    """The child's environment, set explicitly: CPU only, ``devices`` host devices, gloo CPU
    collectives; without pytest's XLA_FLAGS, compilation cache, TURBJAX_* or proxy variables
    (gRPC would route the loopback coordinator through a proxy)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TURBJAX_", "JAX_", "XLA_")) and not k.lower().endswith("_proxy")
    }
    env.update(
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo",
        PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
        **extra,
    )
    return env


def _run(runs: list[tuple[list[str], dict[str, str]]], logs: Path) -> None:
    """Run the worker processes of one job together; fail (killing them all) if one fails or the
    job exceeds TIMEOUT, so a hung collective cannot hang the test session."""
    logs.mkdir(parents=True, exist_ok=True)
    procs, files = [], []
    try:
        for i, (args, env) in enumerate(runs):
            files.append(open(logs / f"worker{i}.log", "wb"))  # closed in finally
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "tests.train.distributed_worker", *args],
                    cwd=ROOT,
                    env=env,
                    stdout=files[-1],
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group: killed with its children
                )
            )
        deadline = time.monotonic() + TIMEOUT
        while any(p.poll() is None for p in procs):
            if any(p.returncode not in (None, 0) for p in procs) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        for f in files:
            f.close()
    failed = [(i, p.returncode) for i, p in enumerate(procs) if p.returncode != 0]
    if failed:
        tails = "\n".join(
            f"--- worker {i} (exit {code}):\n" + (logs / f"worker{i}.log").read_text(errors="replace")[-3000:]
            for i, code in failed
        )
        pytest.fail(f"workers failed or timed out after {TIMEOUT} s:\n{tails}")


@pytest.mark.multiprocess
def test_two_processes_train_and_checkpoint_like_one(tmp_path):
    port = _free_port()
    address = f"127.0.0.1:{port}"
    multi = tmp_path / "checkpoints-2x2"
    _run(
        [
            (
                [str(tmp_path / f"process{i}.npz"), str(multi)],
                _env(
                    2,
                    TURBJAX_COORDINATOR_ADDRESS=address,
                    TURBJAX_NUM_PROCESSES="2",
                    TURBJAX_PROCESS_ID=str(i),
                    JAX_COORDINATOR_BIND_ADDRESS=address,  # loopback only
                ),
            )
            for i in (0, 1)
        ],
        tmp_path / "logs-2x2",
    )
    _run(
        [([str(tmp_path / "single.npz"), str(tmp_path / "checkpoints-1x1"), "--restore", str(multi)], _env(1))],
        tmp_path / "logs-1x1",
    )
    p0, p1, single = (dict(np.load(tmp_path / f"{n}.npz")) for n in ("process0", "process1", "single"))
    assert (int(p0["process_count"]), int(p0["device_count"]), int(p0["local_device_count"])) == (2, 4, 2)
    assert (int(single["process_count"]), int(single["device_count"])) == (1, 1)
    # Both processes hold the same replicated values, bit for bit.
    for name in p0:
        np.testing.assert_array_equal(p0[name], p1[name], err_msg=name)
    # Against one device, only float32 summation order differs (partial sums over 2 rows per device,
    # then an all-reduce): ~1e-7 relative after 3 adam steps; rtol 1e-5 leaves a 100x margin, and
    # atol 1e-6 covers parameters near zero. Any data or gradient mistake moves the loss by >1e-2.
    params = [k for k in p0 if k.startswith("['final']['params']")]
    assert len(params) == 4
    np.testing.assert_allclose(p0["losses"], single["losses"], rtol=1e-5)
    np.testing.assert_allclose(p0["eval_loss"], single["eval_loss"], rtol=1e-5)
    for name in params:
        np.testing.assert_allclose(p0[name], single[name], rtol=1e-5, atol=1e-6, err_msg=name)
        restored = name.replace("['final']", "['restored']")
        np.testing.assert_array_equal(p0[restored], p0[name], err_msg=restored)
        # The 2-process checkpoint restored by the single process (another topology): exact.
        other = name.replace("['final']['params']", "['other']['state'].params")
        np.testing.assert_array_equal(single[other], p0[name], err_msg=other)
    assert int(p0["['restored']['step']"]) == int(single["['other']['state'].step"]) == 3
    # The evaluation batch was sharded over both processes; each wrote its own shards.
    assert bool(p0["restored_eval_batch_equal"]) and bool(p1["restored_eval_batch_equal"])
    from tests.train.distributed_worker import GLOBAL_BATCH, NUM_EXAMPLES, example

    rows = [example(NUM_EXAMPLES + i) for i in range(GLOBAL_BATCH)]
    np.testing.assert_array_equal(single["['other']['eval_batch']['x']"], np.stack([r["x"] for r in rows]))
