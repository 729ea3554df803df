"""Inverse problems through the simulators: ``python -m experiments.invert --config=experiments/configs/invert.py
--workdir=DIR`` writes DIR/results.json (``true`` and ``recovered`` parameters per case) and DIR/inversion.png."""

from absl import app, flags
from ml_collections import config_flags

from turbjax.inverse_demo import run_inversion

_CONFIG = config_flags.DEFINE_config_file(
    "config", "experiments/configs/invert.py", "Inverse-problem config (path[:variant])."
)
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/turbjax_invert", "Directory for results.json and inversion.png.")


def main(argv):
    del argv
    report = run_inversion(_CONFIG.value, _WORKDIR.value)
    worst = max(max(case["relative_error"].values()) for case in report["cases"])
    cases = len(report["cases"])
    print(f"wrote results.json and inversion.png ({cases} cases, worst error {100 * worst:.2f}%) to {_WORKDIR.value}")


if __name__ == "__main__":
    app.run(main)
