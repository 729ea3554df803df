"""Benchmarks: ``python -m experiments.benchmark --config=experiments/configs/benchmark.py:simulator [--workdir=DIR]``.

Prints a table and writes ``DIR/benchmark_<name>.json``.
"""

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

from experiments.baselines import numpy_et_turb
from turbjax import benchmarking as B
from turbjax import physics as P
from turbjax.data import build_dataset, dataset_dir, embedded_images, make_pipeline, open_split
from turbjax.data.builder import directory_bytes
from turbjax.demos import settings_from_config
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


BENCHMARKS = {"simulator": simulator, "video": video, "pipeline": pipeline, "detector": detector}


def main(argv):
    del argv
    config = _CONFIG.value
    report = BENCHMARKS[config.name](config)
    path = write_json(f"{_WORKDIR.value}/benchmark_{config.name}.json", report)
    print(f"wrote {path}")


if __name__ == "__main__":
    app.run(main)
