"""The ET-Turb simulator demo behind ``python -m experiments.simulate --config=experiments/configs/et_turb.py``."""

from __future__ import annotations

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from turbjax import physics as P
from turbjax import plotting
from turbjax.data import embedded_images
from turbjax.workdir import save_figure, write_json


def settings_from_config(synthesis) -> P.SynthesisSettings:
    """SynthesisSettings from a config's ``synthesis`` block."""
    return P.SynthesisSettings(**dict(synthesis))


def describe(optics: P.Optics, atmosphere: P.Atmosphere, exposure_time) -> dict:
    """Physical parameters and derived quantities of one draw, as plain numbers (SI units)."""
    mean, std = P.blur_width_stats(optics, atmosphere, exposure_time)
    return {
        "wavelength_m": float(optics.wavelength),
        "focal_length_m": float(optics.focal_length),
        "f_number": float(optics.f_number),
        "aperture_m": float(optics.aperture),
        "pixel_pitch_m": float(optics.pixel_pitch),
        "cn2_m-2/3": float(atmosphere.cn2),
        "distance_m": float(atmosphere.distance),
        "height_m": float(atmosphere.height),
        "wind_speed_m/s": float(atmosphere.wind_speed),
        "exposure_time_s": float(exposure_time),
        "fried_parameter_m": float(P.fried_parameter(optics, atmosphere)),
        "isoplanatic_angle_rad": float(P.isoplanatic_angle(optics, atmosphere)),
        "tilt_std_px": float(P.tilt_std_px(optics, atmosphere)),
        "blur_width_mean_px": float(mean),
        "blur_width_std_px": float(std),
    }


def _pick(tree, i):
    return jax.tree_util.tree_map(lambda x: x[i], tree)


def et_turb_figures(config, workdir: str | Path) -> dict:
    """Synthesize Table-1 draws on the embedded scenes and write the figures and JSON.

    Writes ``synthesis_grid.png`` (Fig. 11 style), ``et_mtf.png`` (Fig. 3 style) and
    ``et_turb.json`` (every parameter used, the settings and the timing) into ``workdir``.
    """
    workdir = Path(workdir)
    settings = settings_from_config(config.synthesis)
    scenes = tuple(config.scenes)
    images = embedded_images(config.image_size, scenes)
    n = int(config.num_draws)
    keys = jax.random.split(jax.random.key(config.seed), n)
    sample = jax.vmap(lambda k: P.sample_et_turb_params(k, config.wavelength, config.pixel_pitch))
    optics, atmosphere, exposure = sample(keys)
    frames = jnp.asarray(images[np.arange(n) % len(images)])
    for i in range(n):  # eager range checks on every draw before any heavy compute
        P.check_parameters(_pick(optics, i), _pick(atmosphere, i), exposure[i])
    synth = jax.jit(jax.vmap(lambda k, im, o, a, t: P.synthesize_frame(k, im, o, a, t, settings)))

    rows, seconds = [], []
    batch = int(config.batch_size)
    for start in tqdm(range(0, n, batch), desc="synthesizing", unit="batch"):
        sl = slice(start, min(start + batch, n))
        t0 = time.perf_counter()
        out = jax.block_until_ready(synth(keys[sl], frames[sl], _pick(optics, sl), _pick(atmosphere, sl), exposure[sl]))
        seconds.append(time.perf_counter() - t0)
        for j in range(out.degraded.shape[0]):
            rows.append(
                {
                    name: np.asarray(getattr(out, name)[j])
                    for name in ("clean", "tilt_only", "tilt_field", "blur_only", "degraded")
                }
            )

    draws = [describe(_pick(optics, i), _pick(atmosphere, i), exposure[i]) for i in range(n)]
    labels = [
        f"L={d['distance_m']:.0f} m\nCn2={d['cn2_m-2/3']:.1e}\ntau={1e3 * d['exposure_time_s']:.1f} ms" for d in draws
    ]
    save_figure(workdir / "synthesis_grid.png", plotting.synthesis_grid(rows, labels))

    m = config.mtf
    mtf_optics = P.Optics(config.wavelength, m.focal_length, m.f_number, config.pixel_pitch)
    mtf_atmos = P.Atmosphere(m.cn2, m.distance, m.height, m.wind_speed)
    freq = jnp.linspace(0.0, 0.5, int(m.num_freqs))
    curves = {
        f"tau = {t:g} ms": np.asarray(P.mtf_exposure(freq, mtf_optics, mtf_atmos, t * 1e-3, alpha=settings.alpha))
        for t in m.exposure_times_ms
    }
    se = np.asarray(P.mtf_short_exposure(freq, mtf_optics, mtf_atmos, alpha=settings.alpha))
    le = np.asarray(P.mtf_long_exposure(freq, mtf_optics, mtf_atmos))
    title = (
        f"ET-MTF, L = {m.distance:g} m, f = {1e3 * m.focal_length:g} mm, F/{m.f_number:g}, "
        f"Cn2 = {m.cn2:.0e}, v = {m.wind_speed:g} m/s"
    )
    save_figure(workdir / "et_mtf.png", plotting.mtf_curves(np.asarray(freq), curves, se, le, title))

    report = {
        "config": config.to_dict(),
        "draws": draws,
        "scenes": [scenes[i % len(scenes)] for i in range(n)],
        "seconds_per_batch": seconds,
        "mtf_figure": describe(mtf_optics, mtf_atmos, m.exposure_times_ms[0] * 1e-3),
    }
    write_json(workdir / "et_turb.json", report)
    return report
