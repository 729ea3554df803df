"""Generic pure train steps over NNX modules, epoch-ordered batches, and parameter freezing."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from turbjax.train.loop import TrainState


def init_state(model: nnx.Module, tx: optax.GradientTransformation) -> tuple[nnx.GraphDef, TrainState]:
    """Split ``model`` into its static graph and a TrainState (parameters, other state, optimizer)."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    return graphdef, TrainState(
        step=jnp.zeros((), jnp.int32), params=params, model_state=rest, opt_state=tx.init(params)
    )


def merge(graphdef: nnx.GraphDef, state: TrainState) -> nnx.Module:
    """The module of a TrainState (for evaluation code outside jit)."""
    return nnx.merge(graphdef, state.params, state.model_state)


def make_step(
    graphdef: nnx.GraphDef,
    tx: optax.GradientTransformation,
    loss_fn: Callable[..., tuple[jax.Array, dict]],
    *,
    seed: int = 0,
    log: Iterable[str] | None = None,
) -> Callable:
    """``step(state, batch, *extra) -> (state, metrics)``, jitted.

    ``loss_fn(module, batch, key, *extra) -> (loss, terms)``; ``key`` is fold_in(seed, step), so a
    resumed run draws the same randomness. ``extra`` carries frozen inputs such as teacher
    parameters (no gradient is taken with respect to them). ``log`` selects the logged terms
    (all by default) besides the loss and the gradient norm.
    """
    base = jax.random.key(seed)

    @jax.jit
    def step(state: TrainState, batch, *extra):
        key = jax.random.fold_in(base, state.step)

        def objective(params):
            return loss_fn(nnx.merge(graphdef, params, state.model_state), batch, key, *extra)

        (loss, terms), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        names = terms.keys() if log is None else log
        metrics = {name: terms[name] for name in names}
        metrics["loss"], metrics["grad_norm"] = loss, optax.tree.norm(grads)
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return step


def freeze_except(tx: optax.GradientTransformation, params: Any, trainable: Callable[[tuple[str, ...]], bool]):
    """``tx`` on the parameters whose path (tuple of keys) ``trainable`` accepts; zero updates (no
    weight decay either) for the rest."""

    def label(path, _):
        keys = tuple(str(getattr(p, "key", getattr(p, "name", p))) for p in path)
        return "train" if trainable(keys) else "frozen"

    labels = jax.tree_util.tree_map_with_path(label, params)
    return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)


def flip_example_batch(batch: Mapping[str, np.ndarray], mirror: np.ndarray, box_keys=("boxes",)) -> dict:
    """Mirror the selected examples left-right: image-like arrays ([B, ..., H, W, C]) along W, and
    pixel xyxy boxes [B, M, 4] of a frame of width W."""
    out = dict(batch)
    width = None
    for name, value in batch.items():
        if name not in box_keys and value.ndim >= 4:
            width = value.shape[-2]
            m = mirror.reshape((-1,) + (1,) * (value.ndim - 1))
            out[name] = np.where(m, value[..., ::-1, :], value)
    for name in box_keys:
        if name in batch and width is not None:
            boxes = batch[name].copy()
            m = mirror[:, None]
            x0 = np.where(m, width - boxes[..., 2], boxes[..., 0])
            x1 = np.where(m, width - boxes[..., 0], boxes[..., 2])
            boxes[..., 0], boxes[..., 2] = x0, x1
            out[name] = boxes
    return out


def epoch_batches(
    arrays: Mapping[str, np.ndarray],
    batch_size: int,
    seed: int,
    *,
    flip: bool = False,
    transform: Callable[[dict], Any] | None = None,
) -> Callable[[int], Iterable[Any]]:
    """``batches(step)`` for ``run_training``: epoch e is a permutation drawn from (seed, e) and batch
    i of it depends only on (seed, step), so a resumed run reads the same batches. ``flip``
    mirrors half of the examples at random (see ``flip_example_batch``); ``transform`` maps the
    batch dict (e.g. to DETR targets) before it is yielded."""
    n = len(next(iter(arrays.values())))
    if batch_size > n:
        raise ValueError(f"batch_size ({batch_size}) must not exceed the number of training examples ({n}).")
    per_epoch = n // batch_size

    def batches(start: int):
        step = start
        while True:
            epoch, i = divmod(step, per_epoch)
            order = np.random.default_rng((seed, epoch)).permutation(n)[i * batch_size : (i + 1) * batch_size]
            batch = {name: value[order] for name, value in arrays.items()}
            if flip:
                mirror = np.random.default_rng((seed, epoch, i, 1)).uniform(size=batch_size) < 0.5
                batch = flip_example_batch(batch, mirror)
            yield transform(batch) if transform else batch
            step += 1

    return batches
