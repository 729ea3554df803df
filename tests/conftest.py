"""Test setup: 8 virtual CPU devices (for sharding tests) before JAX initialises, and a persistent
compilation cache shared by the session's workers (and the notebook kernels they start), so a program
compiled by one test (e.g. the same train step before and after a resume) is not compiled again."""

import os
import tempfile

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), f"turbjax-test-jax-cache-{os.getuid()}")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
