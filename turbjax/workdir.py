"""Atomic writes into an experiment's working directory (nothing half-written is left behind)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def _atomic(path: Path, write) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist"):
        return np.asarray(value).tolist()
    return value


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` (dicts, lists, numbers, arrays) as indented JSON, atomically."""
    text = json.dumps(_jsonable(data), indent=2, sort_keys=True).encode()
    return _atomic(Path(path), lambda handle: handle.write(text))


def save_figure(path: str | os.PathLike, figure) -> Path:
    """Save a matplotlib figure as PNG, atomically, and close it."""
    import matplotlib.pyplot as plt

    try:
        return _atomic(Path(path), lambda handle: figure.savefig(handle, format="png", dpi=110, bbox_inches="tight"))
    finally:
        plt.close(figure)


def write_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> Path:
    """Save arrays as an uncompressed .npz, atomically (a killed writer leaves no partial file)."""
    return _atomic(Path(path), lambda handle: np.savez(handle, **arrays))
