"""Train a model: ``python -m experiments.train --config=experiments/configs/detector.py:tiny --workdir=DIR``.

Re-running with the same workdir resumes from the latest checkpoint.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from turbjax.train import distributed

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file (path[:variant]).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, history, results and figures.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint write at INFO
    distributed.initialize()  # multi-host from TURBJAX_* variables (README "Scaling out"); else a no-op
    config = _CONFIG.value
    if config.task == "detector":
        from turbjax.train.detector import train_detector

        results = train_detector(config, _WORKDIR.value)
    elif config.task == "tmts":
        from turbjax.train.tmts import train_tmts

        results = train_tmts(config, _WORKDIR.value)
    else:
        raise ValueError(f"config.task must be 'detector' or 'tmts'; got {config.task!r}.")
    print({k: round(v, 4) if isinstance(v, float) else v for k, v in results.items()})


if __name__ == "__main__":
    app.run(main)
