"""Test setup: 8 virtual CPU devices (for sharding tests) before JAX initialises, and a persistent
compilation cache shared by the session's workers (and the notebook kernels they start), so a program
compiled by one test (e.g. the same train step before and after a resume) is not compiled again."""

import os
import tempfile

from tests.one_device import TEST_XLA_FLAGS

# The 8 virtual devices run their collectives on threads of 2 shared cores: under load (the other xdist
# worker, a notebook kernel) a rendezvous can wait longer than XLA's default 40 s, which aborts the process.
_FLAGS = (
    f" {TEST_XLA_FLAGS}"
    " --xla_force_host_platform_device_count=8"
    " --xla_cpu_collective_call_terminate_timeout_seconds=1200"
    " --xla_cpu_collective_timeout_seconds=1800"
)
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + _FLAGS).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), f"turbjax-test-jax-cache-{os.getuid()}")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
