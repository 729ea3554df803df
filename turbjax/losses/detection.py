"""DETR-style set-prediction loss with the JDATT IoU-aware classification term (seed paper, sec. 3.2).

For each decoder layer (the final one plus every auxiliary layer, each matched separately with
``matching.match_batch``) the loss is

    labels_weight * L_labels + l1_weight * L_boxes + giou_weight * L_GIoU

and the returned scalar is the sum over layers. All three terms are sums over the batch divided by
``N = max(total number of real target boxes in the batch, 1)`` (the DETR convention), so an image or a
whole batch without boxes gives a finite loss and finite gradients. Under ``jit`` with a sharded batch N
is the global count; inside ``shard_map`` it would be per device (``psum`` the count there if needed).
When all layers have the same shapes they are stacked and matched by one vmapped matcher, so compile time
does not grow with the number of decoder layers.

- ``L_boxes``: L1 distance between matched predicted and target boxes, normalised cxcywh, summed over
  the 4 coordinates.
- ``L_GIoU``: ``1 - GIoU`` of matched pairs.
- ``L_labels``: eq. 2 of the seed (an IoU-aware BCE, after Align-DETR's IA-BCE as used by LW-DETR).
  With p = sigmoid(logit) per (query, class):

  * positive entries, i.e. (matched query, class of its target):
    soft-target BCE ``-[t log p + (1 - t) log(1 - p)]`` with ``t = p^alpha * IoU^(1 - alpha)``, where IoU
    is that of the matched pair; ``t`` is wrapped in ``stop_gradient`` (it is a target, not a path for
    gradients into the boxes);
  * every other entry (unmatched queries, and the other classes of matched queries):
    ``-p^gamma log(1 - p)``, i.e. BCE against 0 down-weighted for already-confident negatives.
    ``p^gamma`` is *not* stop-gradiented, as printed in eq. 2.

  Reading of eq. 2 and where we depart from the print:

  * The printed equation is a soft-target BCE (target ``t``), not a BCE against 1 weighted by ``t``; we
    implement the soft target, which is also what Align-DETR / LW-DETR do.
  * Eq. 2 normalises by ``N_pos + N_neg``, without saying whether ``N_neg`` counts negative queries or
    negative (query, class) entries. We normalise by the number of target boxes instead, like the box
    terms (and like the LW-DETR code), so that the weights 1 / 5 / 2 keep their DETR meaning.
  * Eq. 2 does not clamp ``t``; LW-DETR clamps it to >= 0.01. We do not clamp (a matched query whose
    box misses its target, IoU = 0, is trained towards p = 0 for that class).
  * ``alpha`` (0.25) and ``gamma`` (2) are those of the paper; the same values parametrise the focal
    class cost of the matcher (as in LW-DETR, where one ``focal_alpha`` serves both).

BCE is evaluated from logits with ``log_sigmoid``, and ``p^gamma`` as ``exp(gamma * log_sigmoid(x))``, so
saturated logits give neither log(0) nor 0^gamma gradients.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from turbjax.losses import boxes as box_ops
from turbjax.losses import matching


@dataclasses.dataclass(frozen=True)
class DetectionLossWeights:
    """Weights of the loss terms and of the matching cost.

    Loss: ``labels`` 1 (IoU-aware BCE), ``l1`` 5, ``giou`` 2 (DETR / Deformable DETR values).
    Matching cost: ``cost_class`` 2 (focal-style cost), ``cost_l1`` 5, ``cost_giou`` 2 (same sources).
    """

    labels: float = 1.0
    l1: float = 5.0
    giou: float = 2.0
    cost_class: float = 2.0
    cost_l1: float = 5.0
    cost_giou: float = 2.0


_PAD_BOX = (0.5, 0.5, 1.0, 1.0)  # replaces padded target boxes, which may hold anything (even NaN)


def _field(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _layer_pairs(outputs: Any) -> list[tuple[jnp.ndarray, jnp.ndarray]]:
    """[(logits, boxes)] for the final layer followed by the auxiliary layers, in order."""
    layers = [(_field(outputs, "logits"), _field(outputs, "boxes"))]
    aux_layers = _field(outputs, "aux", None) or _field(outputs, "aux_outputs", None) or ()
    for aux in aux_layers:
        if isinstance(aux, Sequence) and len(aux) == 2:
            layers.append((aux[0], aux[1]))
        else:
            layers.append((_field(aux, "logits"), _field(aux, "boxes")))
    if any(lg is None or bx is None for lg, bx in layers):
        raise ValueError("outputs (and each aux output) need 'logits' [B,Q,K] and 'boxes' [B,Q,4].")
    return layers


def _single_layer_terms(
    logits: jnp.ndarray,
    boxes: jnp.ndarray,
    labels: jnp.ndarray,
    target_boxes: jnp.ndarray,
    num_boxes: jnp.ndarray,
    normaliser: jnp.ndarray,
    weights: DetectionLossWeights,
    alpha: float,
    gamma: float,
    classification: str = "iou_aware",
) -> dict[str, jnp.ndarray]:
    """Unweighted, normalised ``labels``, ``l1`` and ``giou`` terms of one decoder layer."""
    batch, num_queries, num_classes = logits.shape
    query_index, _, valid = matching.match_batch(
        logits,
        boxes,
        labels,
        target_boxes,
        num_boxes,
        class_weight=weights.cost_class,
        l1_weight=weights.cost_l1,
        giou_weight=weights.cost_giou,
        alpha=alpha,
        gamma=gamma,
    )  # [B, M] each
    validf = valid.astype(logits.dtype)

    # Box terms on matched pairs.
    matched = jnp.take_along_axis(boxes, query_index[..., None], axis=1)  # [B, M, 4]
    l1 = jnp.sum(jnp.where(valid[..., None], jnp.abs(matched - target_boxes), 0.0)) / normaliser
    matched_xyxy = box_ops.cxcywh_to_xyxy(matched)
    target_xyxy = box_ops.cxcywh_to_xyxy(target_boxes)
    giou = jnp.sum(jnp.where(valid, 1.0 - box_ops.giou(matched_xyxy, target_xyxy), 0.0)) / normaliser

    # IoU-aware BCE (eq. 2).
    batch_index = jnp.broadcast_to(jnp.arange(batch)[:, None], query_index.shape)
    matched_logit = logits[batch_index, query_index, labels]  # [B, M]
    p_matched = jax.lax.stop_gradient(jax.nn.sigmoid(matched_logit))
    matched_iou = jax.lax.stop_gradient(box_ops.iou(matched_xyxy, target_xyxy))
    t = p_matched**alpha * matched_iou ** (1.0 - alpha)  # soft target, constant for autodiff

    zeros = jnp.zeros((batch, num_queries, num_classes), logits.dtype)
    positive = zeros.at[batch_index, query_index, labels].add(validf)  # 0/1: valid pairs have distinct queries
    soft_target = zeros.at[batch_index, query_index, labels].add(validf * t)
    log_p = jax.nn.log_sigmoid(logits)
    log_not_p = jax.nn.log_sigmoid(-logits)
    p_gamma = jnp.exp(gamma * log_p)  # p^gamma, gradient-safe at p -> 0
    if classification == "focal":  # sigmoid focal loss (Lin et al.) with hard 0/1 targets, for comparison
        p_off_gamma = jnp.exp(gamma * log_not_p)  # (1 - p)^gamma
        bce = -(positive * alpha * p_off_gamma * log_p + (1.0 - positive) * (1.0 - alpha) * p_gamma * log_not_p)
    else:
        weight_pos = soft_target  # t on positives, 0 elsewhere
        weight_neg = positive * (1.0 - soft_target) + (1.0 - positive) * p_gamma
        bce = -(weight_pos * log_p + weight_neg * log_not_p)
    labels_term = jnp.sum(bce) / normaliser
    return {"labels": labels_term, "l1": l1, "giou": giou}


def detection_loss(
    outputs: Any,
    targets: Mapping[str, jnp.ndarray],
    *,
    weights: DetectionLossWeights = DetectionLossWeights(),
    alpha: float = 0.25,
    gamma: float = 2.0,
    classification: str = "iou_aware",
) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
    """JDATT detection loss (matched L1 + GIoU + IoU-aware BCE), summed over final and auxiliary layers.

    Args:
      outputs: a mapping or object (e.g. ``DetectorOutput``) with ``logits`` [B, Q, K] (sigmoid class
        logits), ``boxes`` [B, Q, 4] (normalised cxcywh) and optionally ``aux`` (``DetectorOutput``) or
        ``aux_outputs``: a sequence of
        ``(logits, boxes)`` pairs (or mappings/objects with those fields) from earlier decoder layers.
      targets: mapping with ``labels`` [B, M] int, ``boxes`` [B, M, 4] normalised cxcywh and ``num_boxes``
        [B] int; entries beyond ``num_boxes`` are padding and may hold anything.
      weights: term and matching-cost weights, see ``DetectionLossWeights``.
      alpha: exponent of p in the IoU-aware target ``t = p^alpha IoU^(1-alpha)`` (paper: 0.25); also the
        focal alpha of the matching class cost.
      gamma: exponent of the negative weight ``p^gamma`` (paper: 2); also the focal gamma of the matcher.
      classification: 'iou_aware' (the seed's eq. 2, default) or 'focal' (sigmoid focal loss with hard
        targets, the Deformable-DETR classification term) for ablations.

    Returns:
      ``(loss, terms)``: the scalar total, and a dict of the unweighted normalised terms
      ``loss_labels``, ``loss_l1``, ``loss_giou`` for the final layer, ``loss_labels_aux{i}`` etc. for
      auxiliary layer i, ``num_boxes`` (the normaliser) and ``loss`` (the total again, for logging).
    """
    if classification not in ("iou_aware", "focal"):
        raise ValueError(f"classification must be 'iou_aware' or 'focal'; got {classification!r}.")
    target_boxes = jnp.asarray(targets["boxes"])
    labels = jnp.asarray(targets["labels"]).astype(jnp.int32)
    num_max = labels.shape[1]
    num_boxes = jnp.clip(jnp.asarray(targets["num_boxes"]).astype(jnp.int32), 0, num_max)
    real = jnp.arange(num_max)[None, :] < num_boxes[:, None]  # [B, M]

    layers = _layer_pairs(outputs)
    num_classes = layers[0][0].shape[-1]
    labels = jnp.where(real, jnp.clip(labels, 0, num_classes - 1), 0)
    pad_box = jnp.asarray(_PAD_BOX, target_boxes.dtype)
    target_boxes = jnp.where(real[..., None], target_boxes, pad_box)
    normaliser = jnp.maximum(jnp.sum(num_boxes), 1).astype(jnp.float32)

    def layer_terms(logits: jnp.ndarray, boxes: jnp.ndarray) -> dict[str, jnp.ndarray]:
        return _single_layer_terms(
            logits, boxes, labels, target_boxes, num_boxes, normaliser, weights, alpha, gamma, classification
        )

    if len({(lg.shape, bx.shape) for lg, bx in layers}) == 1:
        # Same shapes in every layer (the usual case): one vmapped matcher instead of one per layer, so the
        # compile time does not grow with the number of decoder layers.
        stacked = jax.vmap(layer_terms)(jnp.stack([lg for lg, _ in layers]), jnp.stack([bx for _, bx in layers]))
        per_layer = [{name: value[i] for name, value in stacked.items()} for i in range(len(layers))]
    else:
        per_layer = [layer_terms(lg, bx) for lg, bx in layers]

    total = jnp.zeros((), jnp.float32)
    terms: dict[str, jnp.ndarray] = {}
    for i, layer in enumerate(per_layer):
        suffix = "" if i == 0 else f"_aux{i - 1}"
        for name, value in layer.items():
            terms[f"loss_{name}{suffix}"] = value
        total = total + weights.labels * layer["labels"] + weights.l1 * layer["l1"] + weights.giou * layer["giou"]
    terms["num_boxes"] = normaliser
    terms["loss"] = total
    return total, terms
