"""Detector training: state, the pure train step, predictions as COCO-style detections, mAP."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from turbjax.losses import DetectionLossWeights, cxcywh_to_xyxy, detection_loss
from turbjax.metrics.detection import evaluate
from turbjax.models import Detector, DetectorOutput
from turbjax.train.loop import TrainState
from turbjax.train.steps import epoch_batches, init_state, make_step


def make_train_step(
    graphdef: nnx.GraphDef,
    tx: optax.GradientTransformation,
    weights: DetectionLossWeights = DetectionLossWeights(),
    alpha: float = 0.25,
    gamma: float = 2.0,
    seed: int = 0,
    classification: str = "iou_aware",
):
    """``step(state, batch) -> (state, metrics)``, jitted; batch: ``image`` [B,H,W,3] and DETR
    ``targets`` (``labels`` [B,M], ``boxes`` [B,M,4] normalised cxcywh, ``num_boxes`` [B]).

    Shard the batch over a ('data',) mesh and replicate the state: the loss normaliser (the
    number of boxes) and the mean over the batch are global, so the sharded step computes the
    same update as one device.
    """

    def loss_fn(module, batch, key):
        output = module(batch["image"])
        return detection_loss(
            output, batch["targets"], weights=weights, alpha=alpha, gamma=gamma, classification=classification
        )

    return make_step(graphdef, tx, loss_fn, seed=seed, log=("loss_labels", "loss_l1", "loss_giou"))


@functools.partial(jax.jit, static_argnums=(0,))
def _predict(graphdef, params, model_state, images) -> DetectorOutput:
    return nnx.merge(graphdef, params, model_state)(images)


def to_detections(output: DetectorOutput, image_hw: tuple[int, int], top_k: int = 100) -> list[dict]:
    """Per image, the ``top_k`` (query, class) pairs by sigmoid score: boxes xyxy px, scores, labels.

    Sigmoid logits score every class of every query independently, so one query may yield
    detections of several classes (as in Deformable DETR's post-processing).
    """
    logits = np.asarray(output.logits, np.float32)
    boxes = np.asarray(cxcywh_to_xyxy(output.boxes), np.float32) * np.array(
        [image_hw[1], image_hw[0], image_hw[1], image_hw[0]], np.float32
    )
    b, q, k = logits.shape
    scores = 1.0 / (1.0 + np.exp(-logits.reshape(b, q * k)))
    keep = min(top_k, q * k)
    top = np.argsort(-scores, axis=1, kind="stable")[:, :keep]
    return [
        {"boxes": boxes[i, top[i] // k], "scores": scores[i, top[i]], "labels": (top[i] % k).astype(np.int32)}
        for i in range(b)
    ]


def evaluate_detector(
    graphdef: nnx.GraphDef,
    state: TrainState,
    images: np.ndarray,
    ground_truth: Sequence[dict],
    batch_size: int = 16,
    top_k: int = 100,
) -> dict:
    """COCO mAP / AP50 / AP75 of the model on ``images`` [N,H,W,3] against ``ground_truth``
    (per image ``boxes`` [M,4] xyxy px and ``labels`` [M])."""
    predictions = []
    for start in range(0, len(images), batch_size):
        chunk = jnp.asarray(images[start : start + batch_size])
        output = _predict(graphdef, state.params, state.model_state, chunk)
        predictions += to_detections(output, chunk.shape[1:3], top_k)
    metrics = evaluate(list(ground_truth), predictions, max_detections=top_k)
    return {name: metrics[name] for name in ("map", "ap50", "ap75")}


def _pad_boxes(boxes: list[np.ndarray], labels: list[np.ndarray], max_boxes: int) -> tuple[np.ndarray, ...]:
    n = len(boxes)
    out_boxes = np.zeros((n, max_boxes, 4), np.float32)
    out_labels = np.zeros((n, max_boxes), np.int32)
    counts = np.zeros((n,), np.int32)
    for i, (b, lab) in enumerate(zip(boxes, labels, strict=True)):
        m = min(len(b), max_boxes)
        out_boxes[i, :m], out_labels[i, :m], counts[i] = b[:m], lab[:m], m
    return out_boxes, out_labels, counts


def detection_split(config, split: str) -> dict:
    """Images [N,S,S,3] and padded pixel boxes / labels / counts of one split of ``config.data``."""
    data = config.data
    if data.image_size % 32:
        raise ValueError(f"data.image_size must be divisible by 32 (the detector's stride); got {data.image_size}.")
    if data.input not in ("clean", "degraded"):
        raise ValueError(f"data.input must be 'clean' or 'degraded'; got {data.input!r}.")
    count = data.num_train if split == "train" else data.num_test
    if data.source == "embedded":
        from turbjax.data.detection_scenes import DETECTION_CLASSES, detection_dataset

        scenes = detection_dataset(
            count,
            size=data.image_size,
            num_frames=data.num_frames,
            seed=config.seed,
            split=split,
            max_objects=data.max_objects,
            degrade=data.input == "degraded",
            progress=True,
        )
        images = scenes["clean"] if data.input == "clean" else scenes["degraded"][:, data.num_frames // 2]
        boxes = [scenes["boxes"][i, : scenes["num_boxes"][i]] for i in range(count)]
        labels = [scenes["labels"][i, : scenes["num_boxes"][i]] for i in range(count)]
        names = tuple(DETECTION_CLASSES)
    elif data.source == "coco":
        from turbjax.data.coco import coco_detection

        if data.input != "clean":
            raise ValueError("data.input='degraded' needs the embedded source (COCO images are degraded per clip).")
        coco = coco_detection(
            data.coco_root,
            data.coco_train_split if split == "train" else data.coco_test_split,
            image_size=data.image_size,
            max_boxes=data.max_boxes,
        )
        examples = [coco[i] for i in range(min(count, len(coco)))]
        images = np.stack([e["image"] for e in examples])
        boxes = [e["boxes"][~e["iscrowd"]] for e in examples]
        labels = [e["labels"][~e["iscrowd"]] for e in examples]
        names = tuple(coco.category_names)
    else:
        raise ValueError(f"data.source must be 'embedded' or 'coco'; got {data.source!r}.")
    padded, padded_labels, counts = _pad_boxes(boxes, labels, data.max_boxes)
    return dict(
        images=np.asarray(images, np.float32), boxes=padded, labels=padded_labels, num_boxes=counts, class_names=names
    )


def detr_targets(batch: dict, size: int) -> dict:
    """Pixel xyxy ``boxes`` / ``labels`` / ``num_boxes`` of a batch -> its DETR ``targets``
    (normalised cxcywh), in place."""
    xyxy = batch.pop("boxes") / np.float32(size)
    cxcywh = np.concatenate([(xyxy[..., :2] + xyxy[..., 2:]) / 2, xyxy[..., 2:] - xyxy[..., :2]], -1)
    labels, counts = batch.pop("labels"), batch.pop("num_boxes")
    batch["targets"] = {"labels": labels, "boxes": cxcywh.astype(np.float32), "num_boxes": counts}
    return batch


def ground_truth(split: dict) -> list[dict]:
    return [
        {"boxes": split["boxes"][i, : split["num_boxes"][i]], "labels": split["labels"][i, : split["num_boxes"][i]]}
        for i in range(len(split["images"]))
    ]


def stream_targets(batch: dict, size: int) -> dict:
    """``detr_targets`` for a batch that lives on device (jnp; padding labels -1 -> 0, boxes 0)."""
    real = jnp.arange(batch["labels"].shape[1])[None, :] < batch["num_boxes"][:, None]
    xyxy = batch["boxes"] / size
    cxcywh = jnp.concatenate([(xyxy[..., :2] + xyxy[..., 2:]) / 2, xyxy[..., 2:] - xyxy[..., :2]], -1)
    targets = {
        "labels": jnp.where(real, batch["labels"], 0),
        "boxes": jnp.where(real[..., None], cxcywh, 0.0),
        "num_boxes": batch["num_boxes"],
    }
    return {"image": batch["image"], "targets": targets}


def _train_batches(config, train: dict | None, mesh):
    """``batches(start)``: the fixed training split in epochs (flipped at random), or, with
    ``data.stream``, scenes composed on device (``turbjax.data.detection_stream``), both resumable."""
    from jax.sharding import NamedSharding, PartitionSpec

    from turbjax.train.sharding import shard_batch

    size = config.data.image_size
    if train is not None:
        arrays = {"image": train["images"], **{k: train[k] for k in ("boxes", "labels", "num_boxes")}}
        host_batches = epoch_batches(
            arrays,
            config.train.batch_size,
            config.seed,
            flip=config.train.flip,
            transform=lambda b: detr_targets(b, size),
        )
        return lambda start: (shard_batch(batch, mesh) for batch in host_batches(start))

    from turbjax.data import detection_stream as S

    data = config.data
    bank = S.sprite_bank(data.num_sprites, patch=size // data.grid, image_size=size, seed=config.seed, progress=True)
    spec = S.StreamSpec(image_size=size, grid=data.grid, occupancy=data.occupancy, degrade=data.input == "degraded")
    sharding = NamedSharding(mesh, PartitionSpec("data"))
    scenes = S.stream_batches(bank, S.background_bank(size), spec, config.train.batch_size, config.seed, sharding)
    to_targets = jax.jit(functools.partial(stream_targets, size=size))
    return lambda start: (to_targets(batch) for batch in scenes(start))


def train_detector(config, workdir) -> dict:
    """Train a detector on ``config.data`` and evaluate COCO mAP on its test split.

    Writes WORKDIR/history.json, checkpoints (resumed when re-run), results.json and
    detections.png (test images with ground truth and predictions).
    """
    from pathlib import Path

    from turbjax.models import count_parameters, detector_config
    from turbjax.train.loop import run_training
    from turbjax.train.optim import make_optimizer
    from turbjax.train.sharding import data_mesh, replicate
    from turbjax.workdir import write_json

    workdir = Path(workdir)
    mesh = data_mesh(config.train.get("num_devices"))
    if config.train.batch_size % mesh.size:
        raise ValueError(f"train.batch_size ({config.train.batch_size}) must be divisible by {mesh.size} devices.")
    stream = config.data.get("stream", False)
    if stream and config.data.source != "embedded":
        raise ValueError("data.stream needs data.source='embedded' (it composes the embedded objects on device).")
    train = None if stream else detection_split(config, "train")
    test = detection_split(config, "test")
    num_classes = config.model.num_classes or len(test["class_names"])
    model = Detector(
        detector_config(config.model.variant, num_classes, **dict(config.model.overrides)), rngs=nnx.Rngs(config.seed)
    )
    tx = make_optimizer(config.optim, config.train.num_steps)
    graphdef, state = init_state(model, tx)
    loss = config.loss
    weights = DetectionLossWeights(
        labels=loss.labels,
        l1=loss.l1,
        giou=loss.giou,
        cost_class=loss.cost_class,
        cost_l1=loss.cost_l1,
        cost_giou=loss.cost_giou,
    )
    step = make_train_step(
        graphdef, tx, weights, loss.alpha, loss.gamma, seed=config.seed, classification=loss.classification
    )
    batches = _train_batches(config, train, mesh)

    gt = ground_truth(test)

    def evaluate_state(state):
        return evaluate_detector(graphdef, state, test["images"], gt, top_k=config.train.top_k)

    state, history = run_training(
        workdir=workdir,
        state=replicate(state, mesh),
        train_step=step,
        batches=batches,
        num_steps=config.train.num_steps,
        log_every=config.train.log_every,
        eval_every=config.train.eval_every,
        evaluate=evaluate_state,
        checkpoint_every=config.train.checkpoint_every,
    )
    final = history["eval"][-1]
    results = {
        "variant": config.model.variant,
        "parameters": count_parameters(model),
        "num_classes": num_classes,
        "input": config.data.input,
        "steps": int(state.step),
        "train_seconds": history["train"][-1]["seconds"] if history["train"] else None,
        **{name: final[name] for name in ("map", "ap50", "ap75")},
    }
    write_json(workdir / "results.json", results)
    _detections_figure(graphdef, state, test, workdir / "detections.png")
    return results


def _detections_figure(graphdef, state, split: dict, path, count: int = 6, threshold: float = 0.3) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from turbjax.workdir import save_figure

    images = split["images"][:count]
    output = _predict(graphdef, state.params, state.model_state, jnp.asarray(images))
    found = to_detections(output, images.shape[1:3], top_k=20)
    figure, axes = plt.subplots(1, len(images), figsize=(2.6 * len(images), 2.8))
    for i, axis in enumerate(np.atleast_1d(axes)):
        axis.imshow(images[i])
        for box in split["boxes"][i, : split["num_boxes"][i]]:
            axis.add_patch(plt.Rectangle(box[:2], *(box[2:] - box[:2]), fill=False, color="lime", lw=1))
        for box, score, label in zip(found[i]["boxes"], found[i]["scores"], found[i]["labels"], strict=True):
            if score >= threshold:
                axis.add_patch(plt.Rectangle(box[:2], *(box[2:] - box[:2]), fill=False, color="red", lw=1, ls="--"))
                axis.text(box[0], box[1], f"{split['class_names'][label]} {score:.2f}", color="red", fontsize=6)
        axis.set_axis_off()
    figure.suptitle("test detections (green: ground truth, red: predicted, score >= 0.3)")
    save_figure(path, figure)
