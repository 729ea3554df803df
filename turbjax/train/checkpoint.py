"""Orbax checkpoints of a training state: save every N steps, resume from the latest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp


class Checkpoints:
    """A thin CheckpointManager: ``save(step, state)``, ``latest_step()``, ``restore(like)``.

    Orbax writes each step into a temporary directory and renames it when complete, so a run
    killed mid-save resumes from the previous complete step.
    """

    def __init__(self, directory: str | Path, max_to_keep: int = 2):
        self.manager = ocp.CheckpointManager(
            Path(directory).absolute(), options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, *, force: bool = False) -> None:
        self.manager.save(step, args=ocp.args.StandardSave(state), force=force)

    def restore(self, like: Any, step: int | None = None) -> Any:
        """The state saved at ``step`` (latest by default), with the structure and shardings of ``like``."""
        step = self.latest_step() if step is None else step
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, like)
        return self.manager.restore(step, args=ocp.args.StandardRestore(abstract))

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
