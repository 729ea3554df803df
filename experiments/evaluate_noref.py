"""No-reference quality: ``python -m experiments.evaluate_noref --config=experiments/configs/noref.py --workdir=DIR``.

Scores input (and restored) frames with NIQE and BRISQUE, prints a TMTS Table 5-style table and writes DIR/noref.json;
``--config.input_dir=FRAMES --config.restored_dir=OUT`` scores folders, without them the embedded scenes are degraded.
"""

from absl import app, flags
from ml_collections import config_flags

from turbjax.metrics.noref_report import noref_report

_CONFIG = config_flags.DEFINE_config_file("config", None, "No-reference evaluation config file (path[:variant]).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for noref.json.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    report = noref_report(_CONFIG.value, _WORKDIR.value)
    print(report["table"])
    print(f"wrote {_WORKDIR.value}/noref.json")


if __name__ == "__main__":
    app.run(main)
