"""The satellite demo behind ``python -m experiments.simulate --config=experiments/configs/satellite.py``.

Static embedded scenes are degraded by the anisoplanatic satellite simulator
(``turbjax.physics.satellite``, TMTS section 2.3.2) with parameters drawn per clip from the
config's ranges; each clip's turbulence signature (seed eq. 4) is compared with the tilt the
simulator actually applied. Every number comes from the config.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from turbjax import physics as P
from turbjax import plotting, signature_plots
from turbjax.data import embedded_images
from turbjax.physics.satellite import SatelliteParams, SatelliteSettings, pupil_sample_spacing, required_screen_size
from turbjax.physics.signature import signature_terms
from turbjax.physics.tilt import Z_TILT_CONSTANT
from turbjax.workdir import save_figure, write_json


def draw_params(key: jax.Array, physics, num_clips: int) -> list[SatelliteParams]:
    """Per-clip :class:`SatelliteParams` drawn uniformly from the ranges of a config's ``physics`` block.

    r0 (m) from ``r0_range`` (or ``r0_draws`` when given), orbit altitude (m) from ``orbit_range``,
    per-layer wind speed in [0, ``max_wind_speed``] m/s with a uniform direction, sensor noise sigma
    from ``noise_range``; the optics, layers and frame rate are fixed by the block. Values outside
    the seed's ranges are refused by the simulator.
    """
    num_layers = len(physics.altitudes)
    k_r0, k_orbit, k_speed, k_dir, k_noise = jax.random.split(key, 5)
    if physics.r0_draws is None:
        r0 = np.asarray(jax.random.uniform(k_r0, (num_clips,), minval=physics.r0_range[0], maxval=physics.r0_range[1]))
    else:
        if len(physics.r0_draws) != num_clips:
            raise ValueError(f"physics.r0_draws must hold num_clips = {num_clips} values; got {len(physics.r0_draws)}.")
        r0 = np.asarray(physics.r0_draws, np.float64)
    orbit = np.asarray(
        jax.random.uniform(k_orbit, (num_clips,), minval=physics.orbit_range[0], maxval=physics.orbit_range[1])
    )
    speed = np.asarray(jax.random.uniform(k_speed, (num_clips, num_layers), maxval=physics.max_wind_speed))
    direction = np.asarray(jax.random.uniform(k_dir, (num_clips, num_layers), maxval=2.0 * math.pi))
    noise = np.asarray(
        jax.random.uniform(k_noise, (num_clips,), minval=physics.noise_range[0], maxval=physics.noise_range[1])
    )
    outer_scale = math.inf if physics.outer_scale is None else float(physics.outer_scale)
    return [
        P.satellite_params(
            float(r0[i]),
            orbit_altitude=float(orbit[i]),
            ground_sample_distance=physics.ground_sample_distance,
            aperture=physics.aperture,
            wavelength=physics.wavelength,
            pixel_pitch=physics.pixel_pitch,
            wind_speed=speed[i].tolist(),
            wind_direction=direction[i].tolist(),
            altitudes=tuple(physics.altitudes),
            weights=physics.weights,
            outer_scale=outer_scale,
            frame_rate=physics.frame_rate,
            noise_sigma=float(noise[i]),
        )
        for i in range(num_clips)
    ]


def settings_for(simulator, params: list[SatelliteParams], image_shape: tuple[int, int]) -> SatelliteSettings:
    """SatelliteSettings from a config's ``simulator`` block, with the screen side (pupil samples) that
    holds every clip's footprints, so that all clips share one compiled program."""
    settings = SatelliteSettings(**dict(simulator))
    screen = max(required_screen_size(p, image_shape, settings) for p in params)
    return dataclasses.replace(settings, screen_size=screen)


def theory_tilt_variance_px2(params: SatelliteParams) -> float:
    """Kolmogorov per-axis Z-tilt variance of the whole aperture, px^2: 0.1822 lambda^2 D^(-1/3)
    r0^(-5/3) / ifov^2 (infinite screens; the simulator's finite, subharmonic screens give ~0.9 of it)."""
    optics = params.optics
    rad2 = (
        Z_TILT_CONSTANT * optics.wavelength**2 * optics.aperture ** (-1.0 / 3.0) * params.atmosphere.r0 ** (-5.0 / 3.0)
    )
    return float(rad2 / optics.ifov**2)


def describe(params: SatelliteParams, settings: SatelliteSettings) -> dict:
    """Physical parameters of one clip and derived quantities, as plain numbers (SI units, px)."""
    atmosphere, optics = params.atmosphere, params.optics
    ifov = float(optics.ifov)
    theta0 = float(P.layer_isoplanatic_angle(atmosphere))
    return {
        "r0_m": float(atmosphere.r0),
        "layer_altitudes_m": np.asarray(atmosphere.altitude).tolist(),
        "layer_weights": np.asarray(atmosphere.weight).tolist(),
        "layer_r0_m": np.asarray(P.layer_fried_parameters(atmosphere)).tolist(),
        "layer_wind_m/s": np.asarray(atmosphere.wind).tolist(),
        "outer_scale_m": float(atmosphere.outer_scale),
        "orbit_altitude_m": float(params.orbit_altitude),
        "ground_sample_distance_m": float(params.ground_sample_distance),
        "ifov_rad": ifov,
        "aperture_m": float(optics.aperture),
        "focal_length_m": float(optics.focal_length),
        "f_number": float(optics.f_number),
        "wavelength_m": float(optics.wavelength),
        "pixel_pitch_m": float(optics.pixel_pitch),
        "frame_interval_s": float(params.frame_interval),
        "noise_sigma": float(params.noise_sigma),
        "isoplanatic_angle_rad": theta0,
        "isoplanatic_angle_px": theta0 / ifov,
        "pupil_sample_m": float(pupil_sample_spacing(params, settings)),
        "theory_tilt_variance_px2": theory_tilt_variance_px2(params),
    }


def signature_stats(video: P.Degradation, signature) -> tuple[dict, dict[str, np.ndarray]]:
    """Signature of the tilt-only and degraded clips against the tilt the simulator applied.

    The truth is the per-pixel temporal variance (ddof = 1, as the signature's sigma_I^2) of the
    simulator's ``tilt_field`` over the same frames, averaged over the two axes: the per-axis tilt
    variance in px^2 that S estimates. Medians are over textured pixels (|grad I|^2 >=
    ``signature.min_gradient_sq`` of each clip's temporal mean). Returns (numbers, maps [H, W]).
    """
    tilt = np.asarray(video.tilt_field, np.float64)
    true_map = np.mean(np.var(tilt, axis=0, ddof=1), axis=-1)
    stats, maps = {}, {"true_tilt_variance": true_map}
    stats["true_tilt_variance_mean_px2"] = float(np.mean(true_map))
    stats["tilt_rms_px"] = float(np.sqrt(np.mean(tilt**2)))
    stats["blur_width_mean_px"] = float(np.mean(np.asarray(video.blur_width)))
    for name in ("tilt_only", "degraded"):
        variance, gradient_sq = (np.asarray(x, np.float64) for x in signature_terms(getattr(video, name)))
        s_map = variance / (gradient_sq + signature.eps)
        textured = gradient_sq >= signature.min_gradient_sq
        maps[name] = s_map
        median_s = float(np.median(s_map[textured])) if textured.any() else math.nan
        true_median = float(np.median(true_map[textured])) if textured.any() else math.nan
        stats[name] = {
            "textured_fraction": float(np.mean(textured)),
            "median_signature_px2": median_s,
            "true_tilt_variance_median_px2": true_median,
            "ratio_signature_to_truth": median_s / true_median if true_median > 0 else math.nan,
        }
    return stats, maps


def _label(d: dict) -> str:
    orbit_km, theta0_px = d["orbit_altitude_m"] / 1e3, d["isoplanatic_angle_px"]
    return f"r0={100 * d['r0_m']:.1f} cm\nH={orbit_km:.0f} km\ntheta0={theta0_px:.1f} px"


def satellite_figures(config, workdir: str | Path) -> dict:
    """Simulate ``config.num_clips`` satellite clips and write the figures and JSON into ``workdir``.

    Writes ``satellite_grid.png`` (clean | tilt | blur | degraded, one row per clip, frame
    ``config.frame_index``), ``signature_<i>.png`` (TMTS Fig. 2 style: S of the tilt-only and of the
    degraded clip beside the true per-pixel tilt variance, px^2), ``yt_profile_<i>.png`` (Fig. 12
    style: clean, tilt-only and degraded) and ``satellite.json`` (config, settings, per-clip
    parameters, signature statistics and timings). Returns the JSON's content.
    """
    workdir = Path(workdir)
    size, frames, n = int(config.image_size), int(config.num_frames), int(config.num_clips)
    scenes = tuple(config.scenes)
    images = embedded_images(size, scenes)
    key_params, key_clips = jax.random.split(jax.random.key(config.seed))
    params = draw_params(key_params, config.physics, n)
    settings = settings_for(config.simulator, params, (size, size))
    keys = jax.random.split(key_clips, n)
    t = int(config.frame_index)

    clips, rows, labels = [], [], []
    for i in tqdm(range(n), desc="satellite clips", unit="clip"):
        still = jnp.asarray(images[i % len(images)])
        start = time.perf_counter()
        video = jax.block_until_ready(
            P.synthesize_satellite_video(keys[i], still, params[i], settings, num_frames=frames)
        )
        seconds = time.perf_counter() - start
        stats, maps = signature_stats(video, config.signature)
        info = describe(params[i], settings)
        clips.append({"scene": scenes[i % len(scenes)], "parameters": info, "signature": stats, "seconds": seconds})
        rows.append(
            {
                name: np.asarray(getattr(video, name)[t])
                for name in ("clean", "tilt_only", "tilt_field", "blur_only", "degraded")
            }
        )
        labels.append(_label(info))
        figure = signature_plots.signature_figure(
            np.stack([np.asarray(video.tilt_only[t]), np.asarray(video.degraded[t])]),
            np.stack([maps["tilt_only"], maps["degraded"]]),
            references=np.stack([maps["true_tilt_variance"]] * 2),
            labels=["tilt-only", "degraded"],
            reference_title="True tilt variance (px$^2$)",
        )
        save_figure(workdir / f"signature_{i}.png", figure)
        profiles = {
            name.replace("_", "-"): np.asarray(getattr(video, name)) for name in ("clean", "tilt_only", "degraded")
        }
        save_figure(workdir / f"yt_profile_{i}.png", signature_plots.yt_profile_figure(profiles, config.yt_column, t))
    save_figure(workdir / "satellite_grid.png", plotting.synthesis_grid(rows, labels))

    report = {
        "config": config.to_dict(),
        "settings": dataclasses.asdict(settings),
        "image": f"{frames}x{size}x{size}x3",
        "clips": clips,
        "figures": ["satellite_grid.png"]
        + [f"{kind}_{i}.png" for i in range(n) for kind in ("signature", "yt_profile")],
    }
    write_json(workdir / "satellite.json", report)
    return report
