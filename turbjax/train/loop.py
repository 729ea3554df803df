"""The generic training loop: jitted steps, progress bar, logging, evaluation, checkpoints, resume.

Experiments supply a pure ``train_step(state, batch) -> (state, metrics)`` and a ``batches(step)``
factory returning the iterator of batches from ``step`` on (so a resumed run sees the same data
as an uninterrupted one); the loop owns everything else.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from tqdm.auto import tqdm

from turbjax.train.checkpoint import Checkpoints
from turbjax.workdir import write_json


@struct.dataclass
class TrainState:
    """What a step changes: the step count, trainable parameters, other model state, optimizer state."""

    step: jnp.ndarray
    params: Any
    model_state: Any
    opt_state: Any


def _mean_metrics(rows: list[dict]) -> dict[str, float]:
    return {name: float(np.mean([float(r[name]) for r in rows])) for name in rows[0]}


def run_training(
    *,
    workdir: str | Path,
    state: TrainState,
    train_step: Callable[[TrainState, Any], tuple[TrainState, dict]],
    batches: Callable[[int], Iterator[Any]],
    num_steps: int,
    log_every: int = 50,
    eval_every: int | None = None,
    evaluate: Callable[[TrainState], dict] | None = None,
    checkpoint_every: int = 500,
    max_to_keep: int = 2,
    progress: bool = True,
) -> tuple[TrainState, dict]:
    """Train until ``num_steps``, resuming from WORKDIR/checkpoints if a checkpoint exists.

    Writes WORKDIR/history.json (training metrics every ``log_every`` steps and evaluations every
    ``eval_every`` steps and at the end, each with its step and wall time) atomically after every
    log. Returns the final state and the history.
    """
    if num_steps < 1 or log_every < 1 or checkpoint_every < 1:
        raise ValueError(
            f"num_steps, log_every and checkpoint_every must be >= 1; got {num_steps}, {log_every}, {checkpoint_every}."
        )
    workdir = Path(workdir)
    checkpoints = Checkpoints(workdir / "checkpoints", max_to_keep=max_to_keep)
    history: dict[str, list] = {"train": [], "eval": []}
    start_step = 0
    if checkpoints.latest_step() is not None:
        state = checkpoints.restore(state)
        start_step = int(state.step)
        previous = workdir / "history.json"
        if previous.exists():
            import json

            saved = json.loads(previous.read_text())
            history = {k: [r for r in saved.get(k, []) if r["step"] <= start_step] for k in ("train", "eval")}
    iterator = batches(start_step)
    pending: list[dict] = []
    clock = time.perf_counter()
    bar = tqdm(total=num_steps, initial=start_step, desc="train", unit="step", disable=not progress)
    step = start_step
    try:
        while step < num_steps:
            state, metrics = train_step(state, next(iterator))
            step += 1
            pending.append(metrics)
            if step % log_every == 0 or step == num_steps:
                row = {"step": step, "seconds": time.perf_counter() - clock, **_mean_metrics(jax.device_get(pending))}
                pending = []
                history["train"].append(row)
                bar.set_postfix({k: f"{v:.4g}" for k, v in row.items() if k == "loss"})
                write_json(workdir / "history.json", history)
            if evaluate is not None and ((eval_every and step % eval_every == 0) or step == num_steps):
                history["eval"].append({"step": step, **evaluate(state)})
                write_json(workdir / "history.json", history)
            if step % checkpoint_every == 0 or step == num_steps:
                checkpoints.save(step, state, force=True)
            bar.update(1)
    finally:
        bar.close()
        checkpoints.close()
    return state, history
