"""JDATT joint distillation: ``python -m experiments.distill --config=experiments/configs/jdatt.py:tiny --workdir=DIR``.

Trains the teachers (reused from the workdir when already trained), then separate and joint
distillation of the students, and writes DIR/results.json, table3.png and map_vs_time.png.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from turbjax.train import distributed
from turbjax.train.jdatt import run_jdatt

_CONFIG = config_flags.DEFINE_config_file("config", None, "JDATT config file (path[:variant]).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, results and figures.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax and TFDS log every write at INFO
    distributed.initialize()  # multi-host from TURBJAX_* variables (README "Scaling out"); else a no-op
    run_jdatt(_CONFIG.value, _WORKDIR.value)
    print(f"wrote results.json, table3.png and map_vs_time.png to {_WORKDIR.value}")


if __name__ == "__main__":
    app.run(main)
