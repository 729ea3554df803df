"""Simulate turbulence: ``python -m experiments.simulate --config=experiments/configs/et_turb.py --workdir=DIR``."""

from absl import app, flags
from ml_collections import config_flags

from turbjax.demos import et_turb_figures

_CONFIG = config_flags.DEFINE_config_file("config", None, "Simulation config file (path[:variant]).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for figures and JSON.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    report = et_turb_figures(_CONFIG.value, _WORKDIR.value)
    print(f"wrote synthesis_grid.png, et_mtf.png and et_turb.json ({len(report['draws'])} draws) to {_WORKDIR.value}")


if __name__ == "__main__":
    app.run(main)
