"""Benchmarks: ``python -m experiments.benchmark --config=experiments/configs/benchmark.py:simulator [--workdir=DIR]``.

Prints a table and writes ``DIR/benchmark_<name>.json``. Names: ``simulator``, ``video``, ``pipeline``, ``detector``,
``satellite``, ``tmts`` (see experiments/configs/benchmark.py).
"""

import dataclasses
import functools
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags
from tqdm.auto import tqdm

from experiments.baselines import numpy_et_turb, numpy_satellite
from turbjax import benchmarking as B
from turbjax import physics as P
from turbjax.data import build_dataset, dataset_dir, embedded_images, make_pipeline, open_split
from turbjax.data.builder import directory_bytes
from turbjax.demos import settings_from_config
from turbjax.physics import satellite as SA
from turbjax.physics import screens as S
from turbjax.workdir import write_json

_CONFIG = config_flags.DEFINE_config_file("config", None, "Benchmark config (path:variant).")
_WORKDIR = flags.DEFINE_string("workdir", ".", "Directory for the JSON report.")
flags.mark_flags_as_required(["config"])


def simulator(config) -> dict:
    settings = settings_from_config(config.synthesis)
    n, size = config.batch_size, config.image_size
    scenes = embedded_images(size)
    images = jnp.asarray(scenes[np.arange(n) % len(scenes)])
    keys = jax.random.split(jax.random.key(config.seed), n)
    optics, atmos, tau = jax.vmap(lambda k: P.sample_et_turb_params(k, config.wavelength, config.pixel_pitch))(keys)
    synth = jax.jit(jax.vmap(lambda k, im, o, a, t: P.synthesize_frame(k, im, o, a, t, settings)))
    args = (keys, images, optics, atmos, tau)
    seconds = B.time_calls(lambda: synth(*args), config.repeats, config.warmup)
    memory = B.xla_memory_bytes(synth, *args)
    # Where the time goes: the two stages alone, on the same batch.
    tilt = jax.jit(
        jax.vmap(
            lambda k, o, a: P.tilt_field(
                k, (size, size), o, a, wave=settings.wave, embed_factor=settings.tilt_embed_factor
            )
        )
    )
    tilt_seconds = B.time_calls(lambda: tilt(keys, optics, atmos), config.repeats, config.warmup)
    widths = jnp.full((n, size, size), 2.5)
    stacked = jnp.concatenate([images, images], axis=-1)
    blur = jax.jit(
        jax.vmap(
            lambda im, w, o, a, t: P.spatially_varying_blur(
                im, w * (1.0 + 0.2 * im[..., 0]), o, a, t, num_psfs=settings.num_psfs, pad=settings.blur_pad
            )
        )
    )
    blur_seconds = B.time_calls(lambda: blur(stacked, widths, optics, atmos, tau), config.repeats, config.warmup)

    rng = np.random.default_rng(config.seed)
    base_seconds, base_peak = [], 0
    for i in tqdm(range(config.baseline_frames), desc="numpy baseline", unit="frame"):
        o, a = jax.tree_util.tree_map(lambda x, i=i: float(x[i]), (optics, atmos))
        call = (rng, np.asarray(images[i], np.float64), o.wavelength, o.focal_length, o.f_number, o.pixel_pitch)
        call += (a.cn2, a.distance, a.wind_speed, float(tau[i]), settings.num_psfs, settings.blur_pad)
        start = B.time_calls(lambda call=call: numpy_et_turb.synthesize_frame(*call), 1, 0)[0]
        _, peak = B.traced_peak_bytes(lambda call=call: numpy_et_turb.synthesize_frame(*call))
        base_seconds.append(start)
        base_peak = max(base_peak, peak)

    turbjax_ms = 1e3 * B.median(seconds) / n
    numpy_ms = 1e3 * B.median(base_seconds)
    stage_rows = [
        dict(implementation="  of which tilt_field", ms_per_frame=1e3 * B.median(tilt_seconds) / n),
        dict(
            implementation=f"  of which blur ({settings.num_psfs} PSFs, 6 ch)",
            ms_per_frame=1e3 * B.median(blur_seconds) / n,
        ),
    ]
    rows = [
        dict(
            implementation=f"turbjax (jit+vmap, batch {n})",
            ms_per_frame=turbjax_ms,
            peak_mib=memory.get("total", 0) / 2**20,
            memory_source="XLA program (args+out+temp)",
        ),
        dict(
            implementation="NumPy/SciPy baseline (per frame)",
            ms_per_frame=numpy_ms,
            peak_mib=base_peak / 2**20,
            memory_source="tracemalloc peak",
        ),
    ]
    rows[1:1] = stage_rows
    print(B.format_table(rows, ("implementation", "ms_per_frame", "peak_mib", "memory_source")))
    print(f"speed-up (NumPy / turbjax): {numpy_ms / turbjax_ms:.1f}x")
    return dict(
        frame=f"{size}x{size}x3",
        batch_size=n,
        turbjax_seconds_per_batch=seconds,
        numpy_seconds_per_frame=base_seconds,
        turbjax_ms_per_frame=turbjax_ms,
        tilt_field_ms_per_frame=stage_rows[0]["ms_per_frame"],
        blur_ms_per_frame=stage_rows[1]["ms_per_frame"],
        numpy_ms_per_frame=numpy_ms,
        speedup=numpy_ms / turbjax_ms,
        turbjax_xla_memory_bytes=memory,
        numpy_tracemalloc_peak_bytes=base_peak,
        process_peak_rss_bytes=B.process_peak_rss_bytes(),
        settings=config.synthesis.to_dict(),
        devices=[str(d) for d in jax.devices()],
        machine=platform.platform(),
    )


def _clip_seconds(config, image, optics, atmos, tau, settings, key) -> tuple[float, float, int]:
    """Median seconds of one jitted synthesize_video call, its drift over the clip and canvas margin (px)."""
    t = config.num_frames
    drift = float(P.frame_drift_px(optics, atmos, config.fps)) * (t - 1)
    max_drift = int(32 * np.ceil(drift / 32))  # static canvas margin covering this clip's drift
    clip = jax.jit(
        lambda k: P.synthesize_video(
            k, image, optics, atmos, tau, config.fps, num_frames=t, max_drift_px=max_drift, settings=settings
        )
    )
    return B.median(B.time_calls(lambda: clip(key), config.repeats, config.warmup)), drift, max_drift


def video(config) -> dict:
    """Frames/s of one frozen-flow clip against synthesizing its frames one by one.

    Two winds for the same Table-1 draw: as drawn, and ``config.slow_wind_speed``: the canvas a
    clip needs grows with its total drift, so frozen-flow reuse pays when the drift is small.
    """
    settings = settings_from_config(config.synthesis)
    t, size = config.num_frames, config.image_size
    image = jnp.asarray(embedded_images(size, ("astronaut",))[0])
    key = jax.random.key(config.seed)
    optics, atmos, tau = P.sample_et_turb_params(key, config.wavelength, config.pixel_pitch)
    frames = jax.jit(jax.vmap(lambda k: P.synthesize_frame(k, image, optics, atmos, tau, settings)))
    keys = jax.random.split(key, t)
    frames_s = B.median(B.time_calls(lambda: frames(keys), config.repeats, config.warmup))
    slow = atmos.replace(wind_speed=jnp.float32(config.slow_wind_speed))
    clips = {
        "drawn": _clip_seconds(config, image, optics, atmos, tau, settings, key),
        "slow": _clip_seconds(config, image, optics, slow, tau, settings, key),
    }
    rows = [
        dict(
            method=f"synthesize_video (T={t}, wind {float(a.wind_speed):.1f} m/s, drift {clips[name][1]:.0f} px)",
            frames_per_s=t / clips[name][0],
            ms_per_frame=1e3 * clips[name][0] / t,
            ratio_vs_per_frame=frames_s / clips[name][0],
        )
        for name, a in (("drawn", atmos), ("slow", slow))
    ]
    rows.append(
        dict(
            method="synthesize_frame x T (no frozen-flow reuse)",
            frames_per_s=t / frames_s,
            ms_per_frame=1e3 * frames_s / t,
            ratio_vs_per_frame=1.0,
        )
    )
    print(B.format_table(rows, ("method", "frames_per_s", "ms_per_frame", "ratio_vs_per_frame")))
    return dict(
        frames=t,
        frame=f"{size}x{size}x3",
        per_frame_frames_per_s=t / frames_s,
        clips={
            name: dict(drift_px=drift, max_drift_px=margin, video_frames_per_s=t / seconds, ratio=frames_s / seconds)
            for name, (seconds, drift, margin) in clips.items()
        },
        slow_wind_speed=config.slow_wind_speed,
        parameters={k: float(v) for k, v in {**optics.__dict__, **atmos.__dict__, "exposure_time": tau}.items()},
    )


def pipeline(config) -> dict:
    """Dataset build time and size on disk, records/s through the grain read path, online samples/s."""
    data_dir = Path(_WORKDIR.value) / "tfds"
    dataset = config.pipeline.dataset
    fresh = not (dataset_dir(dataset, data_dir) / "dataset_info.json").exists()
    start = time.perf_counter()
    path = build_dataset(dataset, data_dir)
    build_s = time.perf_counter() - start
    examples = dataset.num_train + dataset.num_test
    size = directory_bytes(path)
    source = open_split(path, "train")
    order = np.random.default_rng(config.seed).permutation(len(source))
    read_s = B.time_calls(lambda: [source[int(i)] for i in order], config.repeats, config.warmup)
    records_config = config.pipeline.copy_and_resolve_references()
    records_config.data_dir = str(data_dir)
    batches = make_pipeline(records_config)
    batch_s = B.time_calls(lambda: next(batches), config.repeats * 4, config.warmup)
    online_config = records_config.copy_and_resolve_references()
    online_config.mode = "online"
    online = make_pipeline(online_config)
    online_s = B.time_calls(lambda: next(online), config.repeats, config.warmup)
    batch = records_config.batch_size
    rows = [
        dict(
            path="records: random-access decode (tfds data source)", per_s=len(order) / B.median(read_s), unit="records"
        ),
        dict(path="records: grain pipeline (window, crop, batch)", per_s=batch / B.median(batch_s), unit="samples"),
        dict(path="online: synthesize on device", per_s=batch / B.median(online_s), unit="samples"),
    ]
    print(B.format_table(rows, ("path", "per_s", "unit")))
    build_note = f"{build_s:.1f} s" if fresh else "(already built; delete it to time the build)"
    mib = size / 2**20
    print(f"dataset {path}: {examples} clips, build {build_note}, {mib:.1f} MiB, {mib / examples:.2f} MiB/clip")
    return dict(
        dataset=str(path),
        clips=examples,
        clip=f"{dataset.video.num_frames}x{dataset.video.image_size}x{dataset.video.image_size}x3",
        build_seconds=build_s if fresh else None,
        size_bytes=size,
        bytes_per_clip=size / examples,
        records_per_s=len(order) / B.median(read_s),
        pipeline_samples_per_s=batch / B.median(batch_s),
        online_samples_per_s=batch / B.median(online_s),
        batch=dict(size=batch, crop=records_config.crop_size, window=2 * records_config.half_window + 1),
        devices=jax.local_device_count(),
    )


def detector(config) -> dict:
    """Parameters and forward ms/image of every detector variant (jitted, batch ``config.batch_size``)."""
    from flax import nnx

    from turbjax.models import Detector, count_parameters, detector_config
    from turbjax.train.detector import _predict

    images = jnp.asarray(embedded_images(config.image_size)[: config.batch_size])
    rows = []
    for variant in config.variants:
        model = Detector(detector_config(variant, config.num_classes), rngs=nnx.Rngs(0))
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        forward = functools.partial(_predict, graphdef, params, rest, images)
        seconds = B.time_calls(forward, config.repeats, config.warmup)
        rows.append(
            dict(
                variant=variant,
                parameters_m=count_parameters(model) / 1e6,
                ms_per_image=1e3 * B.median(seconds) / len(images),
            )
        )
    print(B.format_table(rows, ("variant", "parameters_m", "ms_per_image")))
    return dict(
        rows=rows,
        image=f"{config.image_size}x{config.image_size}x3",
        batch=len(images),
        num_classes=config.num_classes,
        devices=jax.local_device_count(),
        machine=platform.platform(),
    )


def _aotools_rows_per_s(config) -> float | None:
    """add_row() calls per second of aotools' infinite von Karman screen, or None without aotools."""
    try:
        from aotools.turbulence.infinitephasescreen import PhaseScreenVonKarman
    except ImportError:
        return None
    ar = config.ar
    screen = PhaseScreenVonKarman(ar.screen_size, ar.dx, ar.r0, ar.outer_scale, random_seed=config.seed)
    seconds = B.time_calls(screen.add_row, ar.aotools_rows, config.warmup)
    return 1.0 / B.median(seconds)


def satellite(config) -> dict:
    """Anisoplanatic satellite frames and AR phase screens against NumPy / aotools, in the same run.

    Frames: median ms per frame of ``synthesize_satellite_video`` (jitted clip of ``num_frames``
    frames: layer screens, AR step, per-pixel tilt, grid^2 Fourier-optics PSFs, blended blur, warp,
    noise), and of its PSF + blend stage alone, beside the same PSFs and blend computed with
    NumPy/SciPy (``experiments.baselines.numpy_satellite``) on the same pupil phases.
    Screens: AR steps per second of ``ar_screen_step`` (jitted, Fourier state only) and of
    ``ar_screen_run`` (scan, emitting the n x n screen each step), beside aotools'
    ``PhaseScreenVonKarman.add_row`` (one new row per call) when aotools is installed.
    """
    sat, size, t = config.satellite, config.image_size, config.num_frames
    image = jnp.asarray(embedded_images(size, ("astronaut",))[0])
    params = P.satellite_params(
        sat.r0,
        orbit_altitude=sat.orbit_altitude,
        ground_sample_distance=sat.ground_sample_distance,
        wind_speed=tuple(sat.wind_speed),
        wind_direction=tuple(sat.wind_direction),
        weights=sat.weights,
        noise_sigma=sat.noise_sigma,
    )
    settings = SA.SatelliteSettings(**dict(config.simulator))
    settings = dataclasses.replace(settings, screen_size=SA.required_screen_size(params, (size, size), settings))
    key = jax.random.key(config.seed)
    clip = jax.jit(lambda k: P.synthesize_satellite_video(k, image, params, settings, num_frames=t).degraded)
    frame_ms = 1e3 * B.median(B.time_calls(lambda: clip(key), config.repeats, config.warmup)) / t

    # PSF + blend stage on the same pupil phases for turbjax and NumPy (tilt-only and clean: 6 channels).
    g, k, n_w = settings.grid, settings.psf_size, settings.pupil_window
    dx = SA.pupil_sample_spacing(params, settings)
    mask = S.circular_pupil(n_w, params.optics.aperture / dx)
    phase_of = jax.jit(jax.vmap(lambda kk: P.phase_screen(kk, n_w, dx, params.atmosphere.r0)))
    phases = phase_of(jax.random.split(key, g * g))
    wy, wx = SA.blend_weights(size, g), SA.blend_weights(size, g)
    six = jnp.concatenate([image, image[::-1]], axis=-1)

    @jax.jit
    def stage(phases, images):
        psfs = jax.vmap(lambda p: SA.pupil_psf(p, mask, settings))(S.remove_piston_tilt(phases, mask))
        return SA._blur_blend(jnp.moveaxis(images, -1, 0), psfs, wy, wx, k // 2)

    stage_ms = 1e3 * B.median(B.time_calls(lambda: stage(phases, six), config.repeats, config.warmup))
    np_phases, np_mask, np_six = (np.asarray(x, np.float64) for x in (phases, mask, six))
    base_seconds = []
    for _ in tqdm(range(config.baseline_frames), desc="numpy PSFs + blend", unit="frame"):
        start = time.perf_counter()
        reference = numpy_satellite.psfs_and_blend(np_phases, np_mask, np_six, k, settings.oversample, g)
        base_seconds.append(time.perf_counter() - start)
    numpy_ms = 1e3 * B.median(base_seconds)
    max_diff = float(np.max(np.abs(np.moveaxis(np.asarray(stage(phases, six)), 0, -1) - reference)))

    # AR phase screens: one step of dt = dx / v moves the pattern by one sample, as add_row does.
    ar = config.ar
    state = P.ar_screen_init(
        key, ar.screen_size, ar.dx, ar.r0, ar.outer_scale, velocity=(0.0, ar.wind_speed), dt=ar.dt, alpha=ar.alpha
    )
    step = jax.jit(P.ar_screen_step)
    step_per_s = 1.0 / B.median(B.time_calls(lambda: step(key, state), config.repeats * 10, config.warmup))
    run = jax.jit(lambda kk, s: P.ar_screen_run(kk, s, ar.scan_steps)[1])
    run_per_s = ar.scan_steps / B.median(B.time_calls(lambda: run(key, state), config.repeats, config.warmup))
    aotools_per_s = _aotools_rows_per_s(config)

    j = g * g
    n_s = ar.screen_size
    rows = [
        dict(
            item=f"turbjax frame {size}^2 ({j} PSFs, screens, tilt, warp; jit)",
            value=frame_ms,
            unit="ms/frame",
            numpy_over_turbjax=numpy_ms / frame_ms,
        ),
        dict(
            item=f"turbjax {j} PSFs + blend, 6 ch (jit)",
            value=stage_ms,
            unit="ms/frame",
            numpy_over_turbjax=numpy_ms / stage_ms,
        ),
        dict(item=f"NumPy/SciPy {j} PSFs + blend, 6 ch", value=numpy_ms, unit="ms/frame", numpy_over_turbjax=1.0),
        dict(item=f"turbjax ar_screen_step {n_s}^2 (jit, state only)", value=step_per_s, unit="steps/s"),
        dict(item=f"turbjax ar_screen_run {n_s}^2 (scan, screen per step)", value=run_per_s, unit="steps/s"),
        dict(
            item=f"aotools PhaseScreenVonKarman.add_row {n_s}^2",
            value=aotools_per_s if aotools_per_s is not None else "aotools not installed",
            unit="steps/s",
        ),
    ]
    if aotools_per_s is not None:
        for row in rows[3:5]:
            row["turbjax_over_aotools"] = row["value"] / aotools_per_s
    print(B.format_table(rows, ("item", "value", "unit", "numpy_over_turbjax", "turbjax_over_aotools")))
    print(f"max |turbjax - NumPy| of the PSF + blend stage: {max_diff:.2e}")
    return dict(
        frame=f"{size}x{size}x3",
        frames_per_clip=t,
        turbjax_ms_per_frame=frame_ms,
        turbjax_psf_blend_ms_per_frame=stage_ms,
        numpy_psf_blend_ms_per_frame=numpy_ms,
        numpy_seconds_per_frame=base_seconds,
        ratio_numpy_over_turbjax_frame=numpy_ms / frame_ms,
        ratio_numpy_over_turbjax_psf_blend=numpy_ms / stage_ms,
        psf_blend_max_abs_diff=max_diff,
        psfs_per_frame=j,
        settings=dataclasses.asdict(settings),
        parameters=config.satellite.to_dict(),
        ar=dict(
            config.ar.to_dict(),
            turbjax_step_per_s=step_per_s,
            turbjax_run_steps_per_s=run_per_s,
            aotools_add_row_per_s=aotools_per_s,
            aotools="installed" if aotools_per_s is not None else "aotools not installed",
        ),
        devices=[str(d) for d in jax.devices()],
        machine=platform.platform(),
    )


def _flops(fn, *args) -> float:
    """XLA's FLOP count of ``fn`` on (abstract) ``args``, from the lowered HLO (nothing is compiled or allocated)."""
    cost = jax.jit(fn).lower(*args).cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost["flops"])


def tmts(config) -> dict:
    """TMTS parameters and FLOPs at the paper configuration beside the seed's Table 6, and ms per restored frame.

    FLOPs: XLA's HLO cost analysis counts a ``lax.scan`` body once whatever its trip count, so the count of the
    whole network (one T-frame clip) is completed with (T - 1) times the count of one step of the recurrence
    (forward and backward sequences together), measured on a one-frame recurrence. Abstract parameters
    (``nnx.eval_shape``): nothing of the paper-size model is allocated for the counts.
    """
    from flax import nnx

    from turbjax.models.tmts import STRIDE, TMTS, TSSwitches, module_parameters, tmts_config

    counts = {}
    for label, switches in (("with_ts", TSSwitches()), ("without_ts", TSSwitches.off())):
        cfg = tmts_config("paper", num_frames=config.num_frames, use_ts=switches)
        abstract = nnx.eval_shape(lambda cfg=cfg: TMTS(cfg, rngs=nnx.Rngs(0)))
        graphdef, state = nnx.split(abstract)
        size, t = config.flops_size, config.num_frames
        clip = jax.ShapeDtypeStruct((1, t, size, size, 3), jnp.float32)
        full = _flops(lambda s, x, g=graphdef: nnx.merge(g, s)(x).image, state, clip)
        h = size // STRIDE
        d = cfg.deep_channels
        f3 = jax.ShapeDtypeStruct((1, 1, h, h, d), jnp.float32)
        flows = jax.ShapeDtypeStruct((1, 2, 0, h, h, 2), jnp.float32)
        sig = jax.ShapeDtypeStruct((1, 1, h, h, 1), jnp.float32) if switches.any else None
        step = _flops(lambda s, a, b, c, g=graphdef: nnx.merge(g, s)._recurrence(a, b, c), state, f3, flows, sig)
        counts[label] = dict(
            params=module_parameters(abstract)["total"],
            modules=module_parameters(abstract),
            gflops=(full + (t - 1) * step) / 1e9,
            gflops_hlo_scan_once=full / 1e9,
        )
    rows = [
        dict(model="TMTS (seed Table 6)", params_m=config.seed_params / 1e6, gflops=config.seed_gflops),
        dict(model="turbjax TMTS, use_ts on", params_m=counts["with_ts"]["params"] / 1e6,
             gflops=counts["with_ts"]["gflops"]),
        dict(model="turbjax TMTS, use_ts off", params_m=counts["without_ts"]["params"] / 1e6,
             gflops=counts["without_ts"]["gflops"]),
    ]  # fmt: skip
    print(B.format_table(rows, ("model", "params_m", "gflops")))

    timing = {}
    for variant, size, repeats in (("paper", config.paper_size, config.paper_repeats),
                                   ("tiny", config.tiny_size, config.repeats)):  # fmt: skip
        cfg = tmts_config(variant, num_frames=config.num_frames)
        model = nnx.jit(lambda cfg=cfg: TMTS(cfg, rngs=nnx.Rngs(0)))()
        graphdef, state = nnx.split(model)
        clip = jax.random.uniform(jax.random.key(config.seed), (config.batch_size, config.num_frames, size, size, 3))
        forward = jax.jit(lambda s, x, g=graphdef: nnx.merge(g, s)(x).image)
        seconds = B.time_calls(lambda f=forward, s=state, x=clip: f(s, x), repeats, config.warmup)
        timing[variant] = dict(
            params=module_parameters(model)["total"],
            shape=[config.batch_size, config.num_frames, size, size, 3],
            ms_per_frame=1e3 * B.median(seconds) / config.batch_size,
            calls=repeats,
        )
    print(B.format_table([dict(variant=k, **{n: v[n] for n in ("params", "ms_per_frame")}) for k, v in timing.items()],
                         ("variant", "params", "ms_per_frame")))  # fmt: skip
    return dict(
        paper=dict(counts["with_ts"], ms_per_frame=timing["paper"]["ms_per_frame"]),
        paper_without_ts=counts["without_ts"],
        tiny=dict(params=timing["tiny"]["params"], ms_per_frame=timing["tiny"]["ms_per_frame"]),
        seed_table6=dict(params=config.seed_params, gflops=config.seed_gflops),
        timing=timing,
        flops_input=[1, config.num_frames, config.flops_size, config.flops_size, 3],
        devices=jax.local_device_count(),
        machine=platform.platform(),
    )


BENCHMARKS = {
    "simulator": simulator,
    "video": video,
    "pipeline": pipeline,
    "detector": detector,
    "satellite": satellite,
    "tmts": tmts,
}


def main(argv):
    del argv
    config = _CONFIG.value
    report = BENCHMARKS[config.name](config)
    path = write_json(f"{_WORKDIR.value}/benchmark_{config.name}.json", report)
    print(f"wrote {path}")


if __name__ == "__main__":
    app.run(main)
