"""Timing and memory helpers for ``python -m experiments.benchmark`` (medians, ratios, tables)."""

from __future__ import annotations

import resource
import statistics
import time
import tracemalloc
from collections.abc import Callable, Sequence
from typing import Any

import jax


def time_calls(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls of ``fn`` after ``warmup`` calls (JAX results awaited)."""
    for _ in range(warmup):
        jax.block_until_ready(fn())
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        seconds.append(time.perf_counter() - start)
    return seconds


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def xla_memory_bytes(jitted, *args) -> dict[str, int]:
    """Peak-relevant sizes of a jitted function's compiled program (arguments, outputs, temporaries)."""
    analysis = jitted.lower(*args).compile().memory_analysis()
    if analysis is None:
        return {}
    sizes = {
        name: int(getattr(analysis, f"{name}_size_in_bytes", 0)) for name in ("argument", "output", "temp", "alias")
    }
    sizes["total"] = sizes["argument"] + sizes["output"] + sizes["temp"] - sizes["alias"]
    return sizes


def traced_peak_bytes(fn: Callable[[], Any]) -> tuple[Any, int]:
    """Run ``fn`` once under tracemalloc (sees NumPy allocations); returns (result, peak bytes)."""
    tracemalloc.start()
    try:
        result = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, int(peak)


def process_peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def format_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """A plain-text table of ``rows`` (dicts) in the order of ``columns``."""

    def cell(value):
        return f"{value:.3g}" if isinstance(value, float) else str(value)

    widths = [max(len(c), *(len(cell(r.get(c, ""))) for r in rows)) for c in columns]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        lines.append("  ".join(cell(row.get(c, "")).ljust(w) for c, w in zip(columns, widths, strict=True)))
    return "\n".join(lines)
