"""Running the project's entry points the way a user's CPU runtime does: a separate process with one
CPU device (not the 8 virtual devices of tests/conftest.py) and the tests' persistent compilation cache.

The end-to-end tests of `experiments.distill` / `experiments.train` and the notebooks that run the same
micro configurations (colab/03, colab/04) execute in this same environment and share an xdist group
(``--dist loadgroup``): whichever runs second finds every program in the compilation cache.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI_TIMEOUT_S = 1800
# The tests' programs are small and run a few times each, so compiling dominates: XLA's unoptimised CPU
# backend compiles them ~1.5x faster (measured) and keeps float semantics (no fast math at any level).
TEST_XLA_FLAGS = "--xla_backend_optimization_level=0"


def one_device_env() -> dict[str, str]:
    """The test process's environment (compilation cache included) with one CPU device, figures to files."""
    return dict(os.environ, XLA_FLAGS=TEST_XLA_FLAGS, MPLBACKEND="Agg")


def run_cli(module: str, config: str, workdir: Path, *overrides: str) -> subprocess.CompletedProcess:
    """``python -m MODULE --config=CONFIG --workdir=WORKDIR [--config.x=y ...]`` from the repository root;
    a non-zero exit fails with the tail of its output."""
    command = [sys.executable, "-m", module, f"--config={config}", f"--workdir={workdir}", *overrides]
    done = subprocess.run(
        command, cwd=ROOT, env=one_device_env(), capture_output=True, text=True, timeout=CLI_TIMEOUT_S
    )
    if done.returncode:
        output = f"{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
        raise AssertionError(f"{' '.join(command[1:])} exited {done.returncode}:\n{output}")
    return done
