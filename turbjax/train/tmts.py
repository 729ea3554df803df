"""TMTS training on online satellite-video synthesis: ``python -m experiments.train --config=...tmts.py:tiny``.

Training clips are synthesised on device every step (TMTS seed, sec. 2.3: static scenes through the anisoplanatic
multi-layer satellite simulator): a random crop (and flip / rotation) of a training scene, physical parameters drawn
uniformly from the config's ranges, ``num_frames`` degraded frames. Batch ``n`` depends only on
``fold_in(seed, n)``, so a resumed run sees exactly the data of an uninterrupted one. The held-out test set comes
from other scenes, generated once with a fixed key. The network restores the centre frame; the loss is
``tmts_loss`` (pixel + tilt Charbonnier), and evaluation reports PSNR / SSIM on the Y channel of the output and
of the degraded centre frame (the input the network must beat).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from turbjax.data import embedded_images
from turbjax.losses.restoration import tmts_loss
from turbjax.metrics.image import psnr, ssim
from turbjax.models.detector import count_parameters
from turbjax.models.tmts import TMTS, TMTSConfig, TSSwitches, tmts_config
from turbjax.physics.satellite import (
    SatelliteSettings,
    pupil_sample_spacing,
    required_screen_size,
    satellite_params,
    synthesize_satellite_video,
)
from turbjax.train.loop import run_training
from turbjax.train.sharding import data_mesh, replicate, shard_batch
from turbjax.train.steps import init_state, make_step, merge
from turbjax.workdir import save_figure, write_json

Batch = dict[str, jax.Array]


def model_config(config: ml_collections.ConfigDict) -> TMTSConfig:
    """The network's ``TMTSConfig`` from ``config.model`` (a named size, overrides and the ``use_ts`` switches)."""
    switches = TSSwitches(**dict(config.model.use_ts))
    return tmts_config(config.model.name, num_frames=config.data.num_frames, use_ts=switches,
                       **dict(config.model.overrides))  # fmt: skip


def build_model(cfg: TMTSConfig, seed: int) -> TMTS:
    """A freshly initialised TMTS, built inside ``nnx.jit``: one compiled initialiser instead of one eager
    ``jax.random`` dispatch per parameter shape (about 0.9 s each on CPU, ~38 s for the tiny model)."""
    return nnx.jit(lambda: TMTS(cfg, rngs=nnx.Rngs(seed)))()


def _draw_params(key: jax.Array, physics: ml_collections.ConfigDict):
    """Per-clip ``SatelliteParams`` drawn uniformly from the config ranges (traceable; SI units)."""
    layers = len(physics.altitudes)
    k_r0, k_orbit, k_speed, k_dir, k_noise = jax.random.split(key, 5)
    return satellite_params(
        r0=jax.random.uniform(k_r0, (), minval=physics.r0_range[0], maxval=physics.r0_range[1]),
        orbit_altitude=jax.random.uniform(k_orbit, (), minval=physics.orbit_range[0], maxval=physics.orbit_range[1]),
        wind_speed=jax.random.uniform(k_speed, (layers,), maxval=physics.max_wind_speed),
        wind_direction=jax.random.uniform(k_dir, (layers,), maxval=2.0 * math.pi),
        noise_sigma=jax.random.uniform(k_noise, (), minval=physics.noise_range[0], maxval=physics.noise_range[1]),
        ground_sample_distance=physics.ground_sample_distance,
        aperture=physics.aperture,
        wavelength=physics.wavelength,
        pixel_pitch=physics.pixel_pitch,
        altitudes=tuple(physics.altitudes),
        weights=physics.weights,
        frame_rate=physics.frame_rate,
    )


def simulator_settings(config: ml_collections.ConfigDict) -> SatelliteSettings:
    """``SatelliteSettings`` with a screen large enough for the worst case of the ranges (lowest orbit: the widest
    footprint shifts), checked to resolve the smallest r0 at the highest orbit (coarsest pupil sampling), since
    traced parameters skip the simulator's own concrete checks."""
    physics, size = config.physics, config.data.patch_size
    settings = SatelliteSettings(**dict(config.simulator))

    def at(orbit: float, r0: float):
        return satellite_params(r0, orbit_altitude=orbit, ground_sample_distance=physics.ground_sample_distance,
                                aperture=physics.aperture, wavelength=physics.wavelength,
                                pixel_pitch=physics.pixel_pitch, altitudes=tuple(physics.altitudes),
                                weights=physics.weights, frame_rate=physics.frame_rate)  # fmt: skip

    screen = required_screen_size(at(physics.orbit_range[0], physics.r0_range[0]), (size, size), settings)
    dx = float(pupil_sample_spacing(at(physics.orbit_range[1], physics.r0_range[0]), settings))
    if dx > physics.r0_range[0] / 2:
        raise ValueError(f"simulator.psf_size={settings.psf_size} samples the pupil at {100 * dx:.2f} cm, coarser "
                         f"than r0/2 = {50 * physics.r0_range[0]:.2f} cm; raise psf_size or r0_range[0].")  # fmt: skip
    return dataclasses.replace(settings, screen_size=screen)


def make_generator(
    config: ml_collections.ConfigDict, scenes: np.ndarray, batch_size: int
) -> Callable[[jax.Array], Batch]:
    """``generate(key) -> {"clip" [B,T,S,S,3], "clean" [B,S,S,3], "tilt_only" [B,S,S,3]}``, jitted and vmapped.

    Each example: a random scene of ``scenes`` [N, L, L, 3], a random S x S crop (S = ``data.patch_size``), a random
    flip / quarter turn (``data.augment``), parameters from ``config.physics`` and a satellite video of
    ``data.num_frames`` frames; ``clean`` and ``tilt_only`` are its centre frame.
    """
    settings = simulator_settings(config)
    size, frames, augment = config.data.patch_size, config.data.num_frames, bool(config.data.augment)
    stills = jnp.asarray(scenes)
    span = stills.shape[1] - size

    def one(key: jax.Array) -> Batch:
        k_scene, k_y, k_x, k_flip, k_rot, k_params, k_sim = jax.random.split(key, 7)
        scene = stills[jax.random.randint(k_scene, (), 0, stills.shape[0])]
        y, x = jax.random.randint(k_y, (), 0, span + 1), jax.random.randint(k_x, (), 0, span + 1)
        crop = jax.lax.dynamic_slice(scene, (y, x, 0), (size, size, 3))
        if augment:
            crop = jnp.where(jax.random.bernoulli(k_flip), crop[:, ::-1], crop)
            turns = [lambda a, k=k: jnp.rot90(a, k) for k in range(4)]
            crop = jax.lax.switch(jax.random.randint(k_rot, (), 0, 4), turns, crop)
        video = synthesize_satellite_video(k_sim, crop, _draw_params(k_params, config.physics), settings,
                                           num_frames=frames)  # fmt: skip
        centre = frames // 2
        return {"clip": jnp.clip(video.degraded, 0.0, 1.0), "clean": video.clean[centre],
                "tilt_only": video.tilt_only[centre]}  # fmt: skip

    @jax.jit
    def generate(key: jax.Array) -> Batch:
        return jax.vmap(one)(jax.random.split(key, batch_size))

    return generate


def make_optimizer(optim: ml_collections.ConfigDict, num_steps: int) -> optax.GradientTransformation:
    """Adam (b1, b2) with a cosine decay of the learning rate from ``learning_rate`` to ``end_learning_rate`` over
    ``num_steps`` (after ``warmup_steps`` of linear warm-up), and optional global-norm clipping (``clip_norm``)."""
    schedule = optax.warmup_cosine_decay_schedule(
        0.0 if optim.warmup_steps else optim.learning_rate,
        optim.learning_rate,
        warmup_steps=optim.warmup_steps,
        decay_steps=max(num_steps, optim.warmup_steps + 1),
        end_value=optim.end_learning_rate,
    )
    adam = optax.adam(schedule, b1=optim.b1, b2=optim.b2)
    return optax.chain(optax.clip_by_global_norm(optim.clip_norm), adam) if optim.clip_norm else adam


def make_loss(config: ml_collections.ConfigDict) -> Callable:
    """``loss_fn(module, batch, key) -> (loss, terms)``: ``tmts_loss`` of the restored centre frame."""
    weights = (config.loss.pixel_weight, config.loss.tilt_weight)

    def loss_fn(module: TMTS, batch: Batch, key: jax.Array):
        del key
        return tmts_loss(module(batch["clip"]), batch["clean"], batch["tilt_only"], weights, config.loss.eps)

    return loss_fn


def _restore(graphdef: nnx.GraphDef) -> Callable:
    @jax.jit
    def apply(state, clip: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        out = nnx.merge(graphdef, *state)(clip)
        signature = out.features.get("signature", jnp.zeros(clip.shape[:1] + clip.shape[2:4] + (1,)))
        return jnp.clip(out.image, 0.0, 1.0), out.tilt_field, signature[..., 0]

    return apply


def quality(restored: jax.Array, degraded: jax.Array, clean: jax.Array) -> dict[str, float]:
    """Mean PSNR (dB) / SSIM on the Y channel of the restored and of the degraded centre frames against clean."""
    return {
        "psnr": float(jnp.mean(psnr(restored, clean, y_channel=True))),
        "ssim": float(jnp.mean(ssim(restored, clean, y_channel=True))),
        "psnr_input": float(jnp.mean(psnr(degraded, clean, y_channel=True))),
        "ssim_input": float(jnp.mean(ssim(degraded, clean, y_channel=True))),
    }


def _figures(workdir: Path, apply: Callable, state, test: Batch, config: ml_collections.ConfigDict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from turbjax.signature_plots import signature_figure, yt_profile_figure

    shown = min(config.eval.figure_clips, len(test["clip"]))
    clip = test["clip"][:shown]
    restored, _, signature = (np.asarray(a) for a in apply(state, clip))
    centre = clip.shape[1] // 2
    degraded, clean = np.asarray(clip[:, centre]), np.asarray(test["clean"][:shown])
    figure, axes = plt.subplots(shown, 3, figsize=(7.5, 2.6 * shown), squeeze=False)
    for r in range(shown):
        for c, (name, image) in enumerate((("degraded", degraded), ("restored", restored), ("clean", clean))):
            axes[r, c].imshow(np.clip(image[r], 0, 1))
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
            if r == 0:
                axes[r, c].set_title(name, fontsize=10)
    figure.tight_layout()
    save_figure(workdir / "restored.png", figure)
    if not np.any(signature):  # every use_ts off: the model does not compute S; show the input's own
        from turbjax.models.tmts import window_signatures

        signature = np.asarray(window_signatures(clip, config.model.overrides.get("signature_window")))[:, centre]
    save_figure(workdir / "signature.png", signature_figure(degraded, signature, labels=[f"test clip {i}" for i in
                                                                                        range(shown)]))  # fmt: skip
    # y-t profiles: a longer clip of the first test scene restored by a sliding window (one output per frame).
    long_clip, long_clean = test["yt_clip"][0], test["yt_clean"][0]
    t, window = long_clip.shape[0], clip.shape[1]
    windows = jnp.stack([long_clip[i : i + window] for i in range(t - window + 1)])
    restored_frames = np.concatenate([np.asarray(apply(state, windows[i : i + 1])[0]) for i in range(len(windows))])
    kept = slice(window // 2, t - window // 2)
    clips = {
        "degraded": np.asarray(long_clip[kept]),
        "restored": restored_frames,
        "clean": np.asarray(long_clean[kept]),
    }
    save_figure(workdir / "yt_profile.png", yt_profile_figure(clips))


def test_set(config: ml_collections.ConfigDict) -> Batch:
    """The held-out clips (``eval.num_clips`` of them, from ``data.test_scenes``, fixed key) and one longer clip
    (``eval.yt_frames`` frames) for the y-t profile figure."""
    scenes = embedded_images(config.data.scene_size, tuple(config.data.test_scenes))
    key = jax.random.fold_in(jax.random.key(config.seed), 1_000_003)  # never a training step's key
    chunk = config.eval.batch_size
    generate = make_generator(config, scenes, chunk)
    chunks = [generate(jax.random.fold_in(key, i)) for i in range(math.ceil(config.eval.num_clips / chunk))]
    test = {name: jnp.concatenate([c[name] for c in chunks])[: config.eval.num_clips] for name in chunks[0]}
    long = ml_collections.ConfigDict(config.to_dict())
    long.data.num_frames = config.eval.yt_frames
    yt = make_generator(long, scenes, 1)(jax.random.fold_in(key, 999_999))  # apart from the chunk keys
    frames = jnp.broadcast_to(yt["clean"][:, None], yt["clip"].shape)  # static scene: every clean frame is the centre
    test.update(yt_clip=yt["clip"], yt_clean=frames)
    return test


def train_tmts(config: ml_collections.ConfigDict, workdir: str | Path) -> dict:
    """Train TMTS on online satellite clips, evaluate on held-out scenes, write WORKDIR/results.json and the
    figures restored.png, signature.png, yt_profile.png; re-running resumes from WORKDIR/checkpoints."""
    workdir = Path(workdir)
    start = time.perf_counter()
    mesh = data_mesh(config.train.get("num_devices"))
    batch_size = config.train.batch_size
    if batch_size % mesh.size:
        raise ValueError(f"train.batch_size ({batch_size}) must be divisible by the {mesh.size} devices.")
    if config.data.patch_size > config.data.scene_size:
        raise ValueError(f"data.patch_size ({config.data.patch_size}) must not exceed data.scene_size.")
    cfg = model_config(config)
    model = build_model(cfg, config.seed)
    num_steps = config.train.steps
    tx = make_optimizer(config.optim, num_steps)
    graphdef, state = init_state(model, tx)
    state = replicate(state, mesh)
    step = make_step(graphdef, tx, make_loss(config), seed=config.seed)

    generate = make_generator(config, embedded_images(config.data.scene_size, tuple(config.data.train_scenes)),
                              batch_size)  # fmt: skip
    data_key = jax.random.key(config.seed)

    def batches(first: int):
        n = first
        while True:
            yield shard_batch(generate(jax.random.fold_in(data_key, n)), mesh)
            n += 1

    test = test_set(config)
    apply = _restore(nnx.split(model, nnx.Param, ...)[0])

    def evaluate(train_state) -> dict:
        params = (train_state.params, train_state.model_state)
        restored = jnp.concatenate([apply(params, test["clip"][i : i + config.eval.batch_size])[0]
                                    for i in range(0, len(test["clip"]), config.eval.batch_size)])  # fmt: skip
        return quality(restored, test["clip"][:, test["clip"].shape[1] // 2], test["clean"])

    state, history = run_training(
        workdir=workdir,
        state=state,
        train_step=step,
        batches=batches,
        num_steps=num_steps,
        log_every=config.train.log_every,
        eval_every=config.train.eval_every or None,
        evaluate=evaluate,
        checkpoint_every=config.train.checkpoint_every,
        progress=config.train.progress,
    )
    final = history["eval"][-1] if history["eval"] and history["eval"][-1]["step"] == num_steps else evaluate(state)
    results = {name: final[name] for name in ("psnr", "ssim", "psnr_input", "ssim_input")}
    results.update(
        psnr_gain=results["psnr"] - results["psnr_input"],
        ssim_gain=results["ssim"] - results["ssim_input"],
        steps=int(state.step),
        params=count_parameters(merge(graphdef, state)),
        use_ts=dataclasses.asdict(cfg.use_ts),
        variant=config.variant,
        eval_clips=int(len(test["clip"])),
        seconds=time.perf_counter() - start,
    )
    write_json(workdir / "results.json", results)
    _figures(workdir, apply, (state.params, state.model_state), test, config)
    return results
