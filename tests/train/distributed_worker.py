"""One process of the multi-process training test (tests/train/test_distributed.py).

``python -m tests.train.distributed_worker OUT.npz CHECKPOINT_DIR [--restore OTHER_CHECKPOINT_DIR]``,
run from the repository root, once per JAX process with the TURBJAX_* variables of
``turbjax.train.distributed.initialize`` in the environment (none: a single process). It trains a tiny
MLP with adam for a few data-parallel steps on the global mesh, each process reading its grain shard
of one shuffled dataset, evaluates on a global batch fed through ``process_batch_slice``, saves an
orbax checkpoint (every process calls save), restores it, and writes the losses and parameters to
OUT.npz. ``--restore`` also restores a checkpoint written by another run (another process count)
into this run's shardings.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import numpy as np

STEPS = 3
GLOBAL_BATCH = 8
NUM_EXAMPLES = 32
FEATURES = 4
HIDDEN = 16


def example(index: int) -> dict[str, np.ndarray]:
    """Example ``index`` of the regression data set: a function of the index alone."""
    x = np.random.default_rng((7, int(index))).normal(size=FEATURES).astype(np.float32)
    return {"x": x, "y": np.sin(x).sum(keepdims=True).astype(np.float32)}


def _leaves(tree) -> dict[str, np.ndarray]:
    import jax

    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in flat}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out")
    parser.add_argument("checkpoints")
    parser.add_argument("--restore", default=None)
    args = parser.parse_args(argv)

    from turbjax.train import distributed

    multi = distributed.initialize(initialization_timeout=120)
    assert distributed.initialize() == multi  # idempotent

    import grain
    import jax
    import optax
    from flax import nnx

    from turbjax.train.checkpoint import Checkpoints
    from turbjax.train.sharding import replicate
    from turbjax.train.steps import init_state, make_step

    if multi:  # a second call contradicting the running setup is refused
        try:
            distributed.initialize(process_id=1 - jax.process_index())
        except RuntimeError as error:
            assert "already initialized" in str(error), error
        else:
            raise AssertionError("initialize accepted a process_id contradicting the running one")

    class MLP(nnx.Module):
        def __init__(self, rngs: nnx.Rngs):
            self.hidden = nnx.Linear(FEATURES, HIDDEN, rngs=rngs)
            self.out = nnx.Linear(HIDDEN, 1, rngs=rngs)

        def __call__(self, x):
            return self.out(jax.numpy.tanh(self.hidden(x)))

    def loss_fn(module, batch, key):
        del key
        mse = jax.numpy.mean((module(batch["x"]) - batch["y"]) ** 2)
        return mse, {"mse": mse}

    mesh = distributed.global_mesh()
    tx = optax.adam(1e-2)
    graphdef, state = init_state(MLP(nnx.Rngs(0)), tx)
    state = replicate(state, mesh)
    step = make_step(graphdef, tx, loss_fn)

    # One global shuffle (same seed everywhere), then this process's strided shard: global batch s
    # holds the same examples whatever the number of processes.
    data = distributed.shard_dataset(grain.MapDataset.range(NUM_EXAMPLES).shuffle(seed=3))
    data = data.map(example).batch(GLOBAL_BATCH // jax.process_count(), drop_remainder=True)
    batches = iter(data.to_iter_dataset())
    losses = []
    for _ in range(STEPS):
        state, metrics = step(state, distributed.host_local_to_global(next(batches), mesh))
        losses.append(float(metrics["loss"]))

    start, stop = distributed.process_batch_slice(GLOBAL_BATCH)
    rows = [example(NUM_EXAMPLES + i) for i in range(start, stop)]
    evaluation = distributed.host_local_to_global({k: np.stack([r[k] for r in rows]) for k in rows[0]}, mesh)
    evaluate = jax.jit(lambda params, batch: loss_fn(nnx.merge(graphdef, params, state.model_state), batch, None)[0])
    eval_loss = float(evaluate(state.params, evaluation))

    # The checkpoint holds the replicated state and the evaluation batch, whose shards live on
    # different processes: each process writes its own.
    saved = {"state": state, "eval_batch": evaluation}
    directory = distributed.assert_shared_directory(args.checkpoints)
    checkpoints = Checkpoints(directory)
    checkpoints.save(STEPS, saved, force=True)
    checkpoints.close()
    checkpoints = Checkpoints(directory)
    restored = checkpoints.restore(saved)
    checkpoints.close()
    same_batch = jax.jit(lambda a, b: jax.numpy.stack([jax.numpy.array_equal(a[k], b[k]) for k in sorted(a)]).all())(
        restored["eval_batch"], evaluation
    )
    out = {
        "losses": np.asarray(losses),
        "eval_loss": np.asarray(eval_loss),
        "process_count": np.asarray(jax.process_count()),
        "device_count": np.asarray(jax.device_count()),
        "local_device_count": np.asarray(jax.local_device_count()),
        "restored_eval_batch_equal": np.asarray(same_batch),
        **_leaves({"final": {"step": state.step, "params": state.params}}),
        **_leaves({"restored": {"step": restored["state"].step, "params": restored["state"].params}}),
    }
    if args.restore:
        other = Checkpoints(args.restore)
        out.update(_leaves({"other": other.restore(saved)}))
        other.close()
    np.savez(args.out, **out)


if __name__ == "__main__":
    main()
