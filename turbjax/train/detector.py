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


def init_state(model: nnx.Module, tx: optax.GradientTransformation) -> tuple[nnx.GraphDef, TrainState]:
    """Split ``model`` into its static graph and a TrainState (parameters, other state, optimizer)."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    return graphdef, TrainState(
        step=jnp.zeros((), jnp.int32), params=params, model_state=rest, opt_state=tx.init(params)
    )


def apply_model(graphdef: nnx.GraphDef, params, model_state, *inputs):
    """Run the module described by (graphdef, params, model_state) on ``inputs`` (a pure function)."""
    return nnx.merge(graphdef, params, model_state)(*inputs)


def make_train_step(
    graphdef: nnx.GraphDef,
    tx: optax.GradientTransformation,
    weights: DetectionLossWeights = DetectionLossWeights(),
):
    """``step(state, batch) -> (state, metrics)``, jitted; batch: ``image`` [B,H,W,3] and DETR
    ``targets`` (``labels`` [B,M], ``boxes`` [B,M,4] normalised cxcywh, ``num_boxes`` [B]).

    Shard the batch over a ('data',) mesh and replicate the state: the loss normaliser (the
    number of boxes) and the mean over the batch are global, so the sharded step computes the
    same update as one device.
    """

    def loss_fn(params, model_state, batch):
        output = apply_model(graphdef, params, model_state, batch["image"])
        return detection_loss(output, batch["targets"], weights=weights)

    @jax.jit
    def step(state: TrainState, batch) -> tuple[TrainState, dict]:
        (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, state.model_state, batch)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {name: terms[name] for name in ("loss", "loss_labels", "loss_l1", "loss_giou")}
        metrics["grad_norm"] = optax.global_norm(grads)
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return step


@functools.partial(jax.jit, static_argnums=(0,))
def _predict(graphdef, params, model_state, images) -> DetectorOutput:
    return apply_model(graphdef, params, model_state, images)


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


def build_detector(config, rngs_seed: int) -> Detector:
    from turbjax.models import detector_config

    return Detector(
        detector_config(config.variant, config.num_classes, **dict(config.overrides)), rngs=nnx.Rngs(rngs_seed)
    )
