"""Simulate turbulence: ``python -m experiments.simulate --config=experiments/configs/et_turb.py --workdir=DIR``.

Figure variants write synthesis_grid.png, et_mtf.png and et_turb.json; dataset variants
(``:dataset``, ``:dataset_small``, ``:dataset_full``) build the ET-Turb video dataset.
``--config=experiments/configs/satellite.py`` (mode 'satellite') writes satellite clips' grid,
signature maps, y-t profiles and satellite.json.
"""

from absl import app, flags
from ml_collections import config_flags

from turbjax.data.builder import build_and_report
from turbjax.demos import et_turb_figures
from turbjax.satellite_demo import satellite_figures

_CONFIG = config_flags.DEFINE_config_file("config", None, "Simulation config file (path[:variant]).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for figures, JSON and (by default) the dataset.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    config = _CONFIG.value
    if config.get("mode") == "dataset":
        report = build_and_report(config.dataset, _WORKDIR.value)
        print(
            f"dataset {report['path']}: {report['splits']} in {report['build_seconds']:.1f} s, "
            f"{report['size_bytes'] / 2**20:.1f} MiB ({report['bytes_per_example'] / 2**20:.2f} MiB/example)"
        )
        return
    if config.get("mode") == "satellite":
        report = satellite_figures(config, _WORKDIR.value)
        figures = len(report["figures"]) - 1
        print(f"wrote satellite_grid.png, {figures} signature / y-t figures and satellite.json to {_WORKDIR.value}")
        return
    report = et_turb_figures(config, _WORKDIR.value)
    print(f"wrote synthesis_grid.png, et_mtf.png and et_turb.json ({len(report['draws'])} draws) to {_WORKDIR.value}")


if __name__ == "__main__":
    app.run(main)
