"""JDATT end to end: teachers, separate (stage-wise) and joint distillation, evaluation, Table 3.

Every stage is a ``run_training`` in its own WORKDIR sub-folder (teacher_restorer, teacher_detector,
separate_restorer, separate_detector, joint), so a re-run resumes each from its checkpoint and
reuses finished stages (teachers are trained once per workdir).
"""

from __future__ import annotations

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from turbjax.losses import DetectionLossWeights, detection_loss
from turbjax.losses.jdatt import JdattWeights, jdatt_loss, teacher_outputs
from turbjax.losses.restoration import charbonnier_loss
from turbjax.metrics.detection import evaluate
from turbjax.metrics.image import psnr, ssim
from turbjax.models import Detector, count_parameters, detector_config
from turbjax.models.jdatt import build_joint_student
from turbjax.models.restorers import Restorer, restorer_config
from turbjax.train.detector import detr_targets, to_detections
from turbjax.train.loop import run_training
from turbjax.train.optim import make_optimizer
from turbjax.train.sharding import data_mesh, replicate, shard_batch
from turbjax.train.steps import epoch_batches, freeze_except, init_state, make_step, merge
from turbjax.workdir import save_figure, write_json


def jdatt_data(config: ml_collections.ConfigDict, split: str) -> dict[str, np.ndarray]:
    """Degraded windows [N, T, S, S, 3], clean centre frames, padded pixel boxes of one split."""
    from turbjax.data.detection_scenes import DETECTION_CLASSES, detection_dataset

    data = config.data
    count = data.num_train if split == "train" else data.num_test
    scenes = detection_dataset(
        count,
        size=data.image_size,
        num_frames=data.num_frames,
        seed=config.seed,
        split=split,
        max_objects=data.max_objects,
        degrade=True,
        progress=True,
    )
    return {
        "clip": scenes["degraded"].astype(np.float32),
        "clean": scenes["clean"].astype(np.float32),
        "boxes": scenes["boxes"][:, : data.max_objects].astype(np.float32),
        "labels": np.maximum(scenes["labels"][:, : data.max_objects], 0).astype(np.int32),
        "num_boxes": scenes["num_boxes"].astype(np.int32),
        "class_names": np.asarray(DETECTION_CLASSES),
    }


def _weights(config) -> JdattWeights:
    w, det = config.weights, config.detection_loss
    return JdattWeights(
        charbonnier=w.charbonnier, detection=w.detection, cwd=w.cwd, mgd=w.mgd, kl=w.kl, tau_cwd=w.tau_cwd,
        tau_kl=w.tau_kl, mgd_alpha=w.mgd_alpha, mask_ratio=w.mask_ratio, charbonnier_eps=w.charbonnier_eps,
        detection_weights=DetectionLossWeights(labels=det.labels, l1=det.l1, giou=det.giou),
    )  # fmt: skip


class _Stage:
    """One training run: its model graph, state, step and batches, sharded data-parallel."""

    def __init__(self, name, workdir, model, tx, loss_fn, batches, mesh, config, extra=(), log=None):
        self.name, self.workdir, self.mesh, self.config = name, Path(workdir) / name, mesh, config
        self.graphdef, state = init_state(model, tx)
        self.state = replicate(state, mesh)
        self.step = make_step(self.graphdef, tx, loss_fn, seed=config.seed, log=log)
        self.batches, self.extra = batches, extra

    def run(self, num_steps: int) -> nnx.Module:
        def sharded(start):
            for batch in self.batches(start):
                yield shard_batch(batch, self.mesh)

        print(f"[jdatt] stage {self.name}: {num_steps} steps")
        self.state, self.history = run_training(
            workdir=self.workdir,
            state=self.state,
            train_step=lambda s, b: self.step(s, b, *self.extra),
            batches=sharded,
            num_steps=num_steps,
            log_every=self.config.train.log_every,
            checkpoint_every=self.config.train.checkpoint_every,
        )
        return merge(self.graphdef, self.state)


def _restore_batched(restorer, clips: np.ndarray, batch_size: int = 32) -> np.ndarray:
    graphdef, state = nnx.split(restorer)
    apply = jax.jit(lambda s, x: jnp.clip(nnx.merge(graphdef, s)(x).image, 0.0, 1.0))
    return np.concatenate(
        [np.asarray(apply(state, jnp.asarray(clips[i : i + batch_size]))) for i in range(0, len(clips), batch_size)]
    )


def evaluate_models(restorer, detector, test: dict, top_k: int = 100, timing_repeats: int = 20) -> dict:
    """PSNR / SSIM (Y and RGB) of the restored test frames, mAP of the detector on them, and the
    median ms per frame of restorer + detector (jitted, batch 1)."""
    restored = _restore_batched(restorer, test["clip"])
    clean = jnp.asarray(test["clean"])
    out = {
        "psnr": float(jnp.mean(psnr(jnp.asarray(restored), clean, y_channel=True))),
        "ssim": float(jnp.mean(ssim(jnp.asarray(restored), clean, y_channel=True))),
        "psnr_rgb": float(jnp.mean(psnr(jnp.asarray(restored), clean))),
        "ssim_rgb": float(jnp.mean(ssim(jnp.asarray(restored), clean))),
    }
    d_graph, d_state = nnx.split(detector)
    detect = jax.jit(lambda s, x: nnx.merge(d_graph, s)(x))
    predictions = []
    for i in range(0, len(restored), 32):
        chunk = jnp.asarray(restored[i : i + 32])
        predictions += to_detections(detect(d_state, chunk), chunk.shape[1:3], top_k)
    gt = [{"boxes": test["boxes"][i, : test["num_boxes"][i]], "labels": test["labels"][i, : test["num_boxes"][i]]}
          for i in range(len(restored))]  # fmt: skip
    metrics = evaluate(gt, predictions, max_detections=top_k)
    out.update({name: metrics[name] for name in ("map", "ap50", "ap75")})
    r_graph, r_state = nnx.split(restorer)
    pipeline = jax.jit(lambda rs, ds, x: nnx.merge(d_graph, ds)(jnp.clip(nnx.merge(r_graph, rs)(x).image, 0, 1)).logits)
    one = jnp.asarray(test["clip"][:1])
    jax.block_until_ready(pipeline(r_state, d_state, one))
    seconds = []
    for _ in range(timing_repeats):
        start = time.perf_counter()
        jax.block_until_ready(pipeline(r_state, d_state, one))
        seconds.append(time.perf_counter() - start)
    out["ms_per_frame"] = 1e3 * float(np.median(seconds))
    out["params_restorer"] = count_parameters(restorer)
    out["params_detector"] = count_parameters(detector)
    return out


def run_jdatt(config: ml_collections.ConfigDict, workdir: str | Path) -> dict:
    """Teachers, separate and joint distillation on the embedded turbulence detection data; writes
    WORKDIR/results.json, table3.png and map_vs_time.png, and returns the results."""
    workdir = Path(workdir)
    mesh = data_mesh(config.train.get("num_devices"))
    if config.train.batch_size % mesh.size:
        raise ValueError(f"train.batch_size ({config.train.batch_size}) must be divisible by {mesh.size} devices.")
    size, frames = config.data.image_size, config.data.num_frames
    train, test = jdatt_data(config, "train"), jdatt_data(config, "test")
    num_classes = len(train.pop("class_names"))
    test.pop("class_names")
    weights = _weights(config)
    taps = {"restorer": tuple(config.taps.restorer), "detector": tuple(config.taps.detector)}
    rngs = nnx.Rngs(config.seed)
    steps = config.train.steps

    def restorer(name):
        return Restorer(restorer_config(name, num_frames=frames, **dict(config.restorer_overrides)), rngs=rngs)

    def detector(name):
        return Detector(detector_config(name, num_classes, **dict(config.detector_overrides)), rngs=rngs)

    def tx(num):
        return make_optimizer(config.optim, num)

    to_targets = lambda b: detr_targets(b, size)  # noqa: E731
    window_batches = epoch_batches(train, config.train.batch_size, config.seed, flip=config.train.flip,
                                   transform=to_targets)  # fmt: skip

    # 1. Teachers: restorer on (window -> clean), detector on the teacher-restored frames.
    def restorer_only(module, batch, key):
        loss, terms = charbonnier_loss(module(batch["clip"]).image, batch["clean"], weights.charbonnier_eps)
        return loss, terms

    t_restorer = _Stage(
        "teacher_restorer", workdir, restorer(config.models.teacher_restorer), tx(steps.teacher_restorer),
        restorer_only, window_batches, mesh, config,
    ).run(steps.teacher_restorer)  # fmt: skip
    restored_train = _restore_batched(t_restorer, train["clip"])

    def detector_only(module, batch, key):
        return detection_loss(module(batch["image"]), batch["targets"], weights=weights.detection_weights)

    image_batches = epoch_batches(
        {"image": restored_train, "boxes": train["boxes"], "labels": train["labels"], "num_boxes": train["num_boxes"]},
        config.train.batch_size, config.seed, flip=config.train.flip, transform=to_targets,
    )  # fmt: skip
    t_detector = _Stage(
        "teacher_detector", workdir, detector(config.models.teacher_detector), tx(steps.teacher_detector),
        detector_only, image_batches, mesh, config,
    ).run(steps.teacher_detector)  # fmt: skip

    tr_graph, tr_state = nnx.split(t_restorer)
    td_graph, td_state = nnx.split(t_detector)

    def distill_loss(mode):
        def loss_fn(student, batch, key, tr_s, td_s):
            teacher = teacher_outputs(nnx.merge(tr_graph, tr_s), nnx.merge(td_graph, td_s), batch["clip"], taps)
            return jdatt_loss(student, teacher, batch, key, taps=taps, weights=weights, mode=mode)

        return loss_fn

    teachers = (replicate(tr_state, mesh), replicate(td_state, mesh))
    clip_shape = (frames, size, size, 3)

    def student():
        return build_joint_student(restorer(config.models.student_restorer), detector(config.models.student_detector),
                                   t_restorer, t_detector, taps, clip_shape, rngs=rngs)  # fmt: skip

    log = ("charbonnier", "detection", "cwd", "mgd", "kl")

    def stage(name, model, mode, num, trainable):
        base = tx(num)
        _, params, _ = nnx.split(model, nnx.Param, ...)
        opt = base if trainable is None else freeze_except(base, params, trainable)
        names = tuple(n for n in log if mode == "joint" or (mode == "restorer") == (n in ("charbonnier",))
                      or n in ("cwd", "mgd"))  # fmt: skip
        return _Stage(name, workdir, model, opt, distill_loss(mode), window_batches, mesh, config, teachers, names)

    # 2. Separate: student restorer alone, then the student detector on its frozen outputs.
    def restorer_side(path):
        return path[0] == "restorer" or (path[0] in ("mgd", "cwd_align") and path[1].startswith("restorer__"))

    separate = student()
    stage_r = stage("separate_restorer", separate, "restorer", steps.separate_restorer, restorer_side)
    separate = stage_r.run(steps.separate_restorer)
    stage_d = stage("separate_detector", separate, "detector", steps.separate_detector, lambda p: not restorer_side(p))
    separate = stage_d.run(steps.separate_detector)

    # 3. Joint: one objective, one optimizer, the same total number of steps.
    joint = stage("joint", student(), "joint", steps.joint, None).run(steps.joint)

    print("[jdatt] evaluating on the held-out clips")
    results = {}
    for name, (r, d) in tqdm(
        {"teacher": (t_restorer, t_detector), "separate": (separate.restorer, separate.detector),
         "joint": (joint.restorer, joint.detector)}.items(), desc="evaluate", unit="model",
    ):  # fmt: skip
        results[name] = evaluate_models(r, d, test, top_k=config.train.top_k)
    degraded = jnp.asarray(test["clip"][:, frames // 2])
    results["degraded_input"] = {
        "psnr": float(jnp.mean(psnr(degraded, jnp.asarray(test["clean"]), y_channel=True))),
        "ssim": float(jnp.mean(ssim(degraded, jnp.asarray(test["clean"]), y_channel=True))),
    }
    write_json(workdir / "results.json", results)
    table = format_table3(results)
    print(table)
    _table_figure(table, workdir / "table3.png")
    _map_vs_time_figure(results, workdir / "map_vs_time.png")
    return results


TABLE_ROWS = (("teacher", "Teachers (restorer + detector)"), ("separate", "Separate distillation (students)"),
              ("joint", "Joint distillation (JDATT)"))  # fmt: skip


def format_table3(results: dict) -> str:
    """A text table like the seed's Table 3."""
    lines = [f"{'method':36s} {'params (M) R+D':>16s} {'PSNR':>6s} {'SSIM':>6s} {'mAP':>6s} {'ms/frame':>9s}"]
    if "degraded_input" in results:
        d = results["degraded_input"]
        lines.append(f"{'Degraded input':36s} {'':>16s} {d['psnr']:6.2f} {d['ssim']:6.3f} {'':>6s} {'':>9s}")
    for key, label in TABLE_ROWS:
        r = results[key]
        params = f"{r['params_restorer'] / 1e6:.2f}+{r['params_detector'] / 1e6:.2f}"
        lines.append(
            f"{label:36s} {params:>16s} {r['psnr']:6.2f} {r['ssim']:6.3f} {r['map']:6.3f} {r['ms_per_frame']:9.2f}"
        )
    return "\n".join(lines)


def _table_figure(table: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure = plt.figure(figsize=(9, 1.6))
    figure.text(0.01, 0.5, table, family="monospace", fontsize=9, va="center")
    save_figure(path, figure)


def _map_vs_time_figure(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 3.6))
    for key, label in TABLE_ROWS:
        r = results[key]
        size = 40 + 60 * (r["params_restorer"] + r["params_detector"]) / 1e6
        axis.scatter(r["ms_per_frame"], r["map"], s=size, label=label)
    axis.set_xlabel("restorer + detector time per frame (ms, this machine)")
    axis.set_ylabel("mAP@[.5:.95] on restored frames")
    axis.set_title("accuracy vs inference time (marker size ~ parameters)")
    axis.legend(fontsize=7)
    save_figure(path, figure)
