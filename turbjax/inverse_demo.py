"""The inverse-problem experiment (``experiments/invert.py``): cases, figure, results.json.

Every case simulates an observation with known parameters on an embedded scene, starts the fit a
factor ``config.init_factor`` away and records the truth, the start, the recovered values, their
relative errors and the loss and parameter trajectories (``turbjax.physics.inverse``).
"""

from __future__ import annotations

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from turbjax.data.samples import embedded_images
from turbjax.physics import inverse
from turbjax.physics.optics import Atmosphere, Optics
from turbjax.physics.satellite import SatelliteSettings, satellite_params
from turbjax.physics.synth import SynthesisSettings
from turbjax.workdir import save_figure, write_json

# Direction of the factor-away start: too strong turbulence, too short exposure, too small r0.
_START_DIRECTION = {"cn2": 1.0, "exposure_time": -1.0, "wind_speed": 1.0, "r0": -1.0}


def start_values(
    truth: dict[str, float],
    factor: float,
    bounds: dict[str, tuple[float, float]],
    factors: dict[str, float] | None = None,
) -> dict[str, float]:
    """The truth moved by ``factor`` (or ``factors[name]``; up or down per parameter, see _START_DIRECTION),
    inside the bounds."""
    factors = factors or {}
    start = {name: value * factors.get(name, factor) ** _START_DIRECTION[name] for name, value in truth.items()}
    return inverse.clip_to_bounds(start, bounds)


def et_turb_problem(config, size: int):
    """(clean still [H, W, 3], make_simulator(num_frames), truth, bounds) of the ET-Turb cases."""
    cfg = config.et_turb
    clean = jnp.asarray(embedded_images(size, (config.scene,))[0], jnp.float32)
    optics = Optics(
        wavelength=cfg.wavelength, focal_length=cfg.focal_length, f_number=cfg.f_number, pixel_pitch=cfg.pixel_pitch
    )
    atmosphere = Atmosphere(
        cn2=cfg.truth.cn2, distance=cfg.distance, height=cfg.height, wind_speed=cfg.truth.wind_speed
    )
    settings = SynthesisSettings(alpha=1.0, blur_pad=cfg.blur_pad)

    def make_simulator(num_frames: int) -> inverse.Simulator:
        return inverse.et_turb_simulator(
            clean,
            optics,
            atmosphere,
            cfg.truth.exposure_time,
            num_frames=num_frames,
            fps=cfg.fps,
            wind_direction=cfg.wind_direction,
            max_drift_px=cfg.max_drift_px,
            settings=settings,
        )

    return clean, optics, atmosphere, make_simulator


def satellite_problem(config):
    """(clean still, make_simulator(num_frames)) of the satellite cases."""
    cfg = config.satellite
    clean = jnp.asarray(embedded_images(cfg.size, (config.scene,))[0], jnp.float32)
    params = satellite_params(
        r0=cfg.r0, orbit_altitude=cfg.orbit_altitude, wind_speed=cfg.wind_speed, noise_sigma=cfg.noise_sigma
    )
    settings = SatelliteSettings(grid=cfg.grid, psf_size=cfg.psf_size, oversample=cfg.oversample)

    def make_simulator(num_frames: int) -> inverse.Simulator:
        return inverse.satellite_simulator(clean, params, settings, num_frames=num_frames)

    return clean, make_simulator


def run_case(name: str, make_simulator, clean, truth: dict, bounds: dict, frames: int, key_known: bool, config) -> dict:
    """Simulate the observation (key from config.seed), fit, and report the case."""
    observation_key = jax.random.key(config.seed)
    true_params = {k: jnp.asarray(v, jnp.float32) for k, v in truth.items()}
    observed = make_simulator(frames)(observation_key, true_params).degraded
    init = start_values(truth, config.init_factor, bounds, {"wind_speed": config.et_turb.wind_init_factor})
    fit = config.fit
    began = time.perf_counter()
    result = inverse.recover(
        make_simulator,
        observed,
        clean,
        init,
        bounds,
        key=observation_key if key_known else None,
        seed=config.seed,
        num_keys=fit.num_keys,
        sim_frames=fit.sim_frames,
        steps=fit.steps,
        method=fit.method,
        progress=config.progress,
        grid_points=0 if key_known else fit.grid_points,
        grid_span=fit.grid_span,
        num_starts=fit.num_starts,
        num_bands=fit.num_bands,
        band_range=tuple(fit.band_range),
    )
    seconds = time.perf_counter() - began
    errors = inverse.relative_errors(result.params, truth)
    print(
        f"{name}: "
        + ", ".join(f"{k} {truth[k]:.4g} -> {result.params[k]:.4g} ({100 * errors[k]:.2f}%)" for k in truth)
        + f" in {result.steps} steps, {seconds:.0f} s"
    )
    return dict(
        name=name,
        key_known=key_known,
        frames=frames,
        size=int(observed.shape[1]),
        true=truth,
        init=init,
        recovered=result.params,
        relative_error=errors,
        steps=result.steps,
        converged=result.converged,
        seconds=seconds,
        loss=result.loss.tolist(),
        trajectory={k: v.tolist() for k, v in result.trajectory.items()},
    )


def run_inversion(config, workdir: str | Path) -> dict:
    """All cases of ``config`` (experiments/configs/invert.py); writes results.json and inversion.png."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = config.et_turb
    names = ("cn2", "exposure_time") + (("wind_speed",) if cfg.fit_wind else ())
    truth = {name: float(cfg.truth[name]) for name in names}
    bounds = {name: tuple(cfg.bounds[name]) for name in names}
    clean, optics, atmosphere, make_et = et_turb_problem(config, config.size)
    cases = [run_case("et_turb key known", make_et, clean, truth, bounds, config.known_key_frames, True, config)]
    unknown_names = ("cn2", "exposure_time")  # the wind only shows in the pixels' motion (key-known case)
    unknown_truth = {name: truth[name] for name in unknown_names}
    unknown_bounds = {name: bounds[name] for name in unknown_names}
    for frames in config.unknown_key_frames:
        cases.append(
            run_case(
                f"et_turb key unknown, {frames} frames",
                make_et,
                clean,
                unknown_truth,
                unknown_bounds,
                frames,
                False,
                config,
            )
        )
    sat = config.satellite
    sat_clean, make_sat = satellite_problem(config)
    sat_truth, sat_bounds = {"r0": float(sat.r0)}, {"r0": tuple(sat.bounds)}
    cases.append(run_case("satellite key known", make_sat, sat_clean, sat_truth, sat_bounds, 4, True, config))
    cases.append(
        run_case(
            f"satellite key unknown, {config.satellite_unknown_frames} frames",
            make_sat,
            sat_clean,
            sat_truth,
            sat_bounds,
            config.satellite_unknown_frames,
            False,
            config,
        )
    )
    # Blind start: what the turbulence signature of the longest ET-Turb clip says about Cn2.
    frames = max(config.unknown_key_frames)
    observed = make_et(frames)(jax.random.key(config.seed), {k: jnp.asarray(v) for k, v in unknown_truth.items()})
    signature = inverse.signature_cn2(observed.degraded, optics, cfg.distance)
    report = dict(
        variant=config.variant,
        cases=cases,
        signature_start=dict(frames=frames, true=truth["cn2"], cn2=signature, ratio=signature / truth["cn2"]),
        devices=[str(d) for d in jax.devices()],
    )
    write_json(workdir / "results.json", report)
    save_figure(workdir / "inversion.png", inversion_figure(cases))
    return report


def inversion_figure(cases: list[dict]):
    """Loss (log) and parameter / truth trajectories of every case, plus the error against clip length."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(15, 4))
    for case in cases:
        axes[0].semilogy(np.maximum(case["loss"], 1e-16), label=case["name"])
        for name, values in case["trajectory"].items():
            axes[1].semilogy(np.asarray(values) / case["true"][name], label=f"{case['name']}: {name}")
    axes[0].set(xlabel="step", ylabel="loss", title="objective")
    axes[1].axhline(1.0, color="k", lw=0.8)
    axes[1].set(xlabel="step", ylabel="value / truth", title="parameters")
    axes[0].legend(fontsize=6)
    axes[1].legend(fontsize=5)
    sweep = [c for c in cases if c["name"].startswith("et_turb key unknown")]
    for name in ("cn2", "exposure_time"):
        if sweep:
            axes[2].loglog(
                [c["frames"] for c in sweep],
                [100 * max(c["relative_error"][name], 1e-6) for c in sweep],
                "o-",
                label=name,
            )
    axes[2].set(xlabel="observed frames", ylabel="relative error, %", title="key unknown: error vs clip length")
    axes[2].legend()
    figure.tight_layout()
    return figure
