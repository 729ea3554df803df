"""DETR bipartite (Hungarian) matching of queries to padded targets, in pure JAX.

A DETR-style detector predicts a fixed set of Q queries per image; the loss pairs each real target with
one distinct query by solving a linear assignment problem on a [Q, M] cost matrix (Carion et al., 2020).
We use ``optax.assignment.hungarian_algorithm``, which is pure JAX (``lax.scan`` + ``lax.while_loop``),
so matching runs inside ``jit`` and under ``vmap`` without a host callback.

Padding. Targets are padded to a fixed M per image so that batches have static shapes; only the first
``num_valid`` columns are real. Padded columns get one constant cost ``c`` larger than every real entry.
A constant column cost adds the same amount to every assignment that uses the same number of padded
columns, and ``c > max(real cost)`` makes any assignment that leaves a real target unmatched while
matching a padded one strictly worse than swapping them. Hence the real targets receive exactly the
optimal assignment of the [Q, num_valid] sub-problem (as ``scipy.optimize.linear_sum_assignment`` would
give), whatever M is. Padded targets are flagged invalid in the output.

Rectangular problems. optax matches min(Q, M) pairs. With Q >= M (the usual DETR case) every real target
is matched. With Q < num_valid only Q real targets can be matched; the others are flagged invalid.

Output layout is per target (length M): ``query_index[j]`` is the query matched to target j, and
``valid[j]`` says whether that pair is real. Invalid entries hold query index 0 and must be masked.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from turbjax.losses import boxes as box_ops

_NONFINITE_COST = 1e6
"""Replacement for non-finite cost entries (a NaN would stall the Hungarian loops); larger than any sane cost."""


def hungarian_match(cost: jnp.ndarray, num_valid: jnp.ndarray | int) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """Minimum-cost assignment of Q queries to the first ``num_valid`` of M padded targets.

    Args:
      cost: [Q, M] matching cost (lower is better). Treated as a constant: gradients do not flow
        through matching (the while loops inside cannot be reverse-differentiated anyway).
      num_valid: scalar int (may be traced): number of real targets; columns ``>= num_valid`` are padding.

    Returns:
      ``(query_index [M] int32, target_index [M] int32, valid [M] bool)``: target ``target_index[j] == j``
      is matched to query ``query_index[j]`` when ``valid[j]``. Valid targets have distinct queries.
      ``target_index`` is ``arange(M)``; it is returned so the pairs read like scenic/DETR index pairs.
    """
    cost = jax.lax.stop_gradient(jnp.asarray(cost, jnp.float32))
    num_q, num_t = cost.shape
    target_index = jnp.arange(num_t, dtype=jnp.int32)
    if num_q == 0 or num_t == 0:
        zeros = jnp.zeros(num_t, jnp.int32)
        return zeros, target_index, jnp.zeros(num_t, bool)
    cost = jnp.where(jnp.isfinite(cost), cost, _NONFINITE_COST)
    real = target_index < num_valid  # [M]
    top = jnp.max(cost, where=real[None, :], initial=0.0)
    pad_cost = top + 1.0 + 1e-3 * jnp.abs(top)  # strictly above every real cost, even for large costs in float32
    cost = jnp.where(real[None, :], cost, pad_cost)

    rows, cols = optax.assignment.hungarian_algorithm(cost)  # min(Q, M) pairs, in an order of optax's choosing
    query_index = jnp.zeros(num_t, jnp.int32).at[cols].set(rows.astype(jnp.int32))
    assigned = jnp.zeros(num_t, bool).at[cols].set(True)
    valid = assigned & real
    query_index = jnp.where(valid, query_index, 0)
    return query_index, target_index, valid


def detr_cost(
    logits: jnp.ndarray,
    boxes: jnp.ndarray,
    target_labels: jnp.ndarray,
    target_boxes: jnp.ndarray,
    class_weight: float = 2.0,
    l1_weight: float = 5.0,
    giou_weight: float = 2.0,
    alpha: float = 0.25,
    gamma: float = 2.0,
) -> jnp.ndarray:
    """DETR matching cost [Q, M] between predictions of one image and its (padded) targets.

    ``cost = class_weight * focal_class_cost + l1_weight * L1(cxcywh) - giou_weight * GIoU``.

    The class cost is the sigmoid focal-loss style cost of Deformable DETR (also used by RT-DETR and
    LW-DETR), chosen because the detector's class scores are independent sigmoids:
    ``alpha (1 - p)^gamma (-log p) - (1 - alpha) p^gamma (-log (1 - p))`` with p the sigmoid probability
    of the target's class, i.e. the focal loss of calling the query positive minus that of calling it
    negative. It is computed from logits with ``log_sigmoid`` (no log of 0).

    Args:
      logits: [Q, K] sigmoid class logits.
      boxes: [Q, 4] predicted boxes, normalised cxcywh.
      target_labels: [M] int class ids in [0, K); padded entries may hold anything (they are clipped here
        and overridden by ``hungarian_match``).
      target_boxes: [M, 4] normalised cxcywh.
      class_weight, l1_weight, giou_weight: cost weights (DETR-with-focal defaults 2, 5, 2).
      alpha, gamma: focal parameters of the class cost.
    """
    num_classes = logits.shape[-1]
    labels = jnp.clip(target_labels, 0, num_classes - 1)
    x = jnp.take(logits, labels, axis=-1)  # [Q, M]
    p = jax.nn.sigmoid(x)
    pos = alpha * (1.0 - p) ** gamma * -jax.nn.log_sigmoid(x)
    neg = (1.0 - alpha) * p**gamma * -jax.nn.log_sigmoid(-x)
    cost_class = pos - neg
    cost_l1 = jnp.sum(jnp.abs(boxes[:, None, :] - target_boxes[None, :, :]), axis=-1)
    cost_giou = -box_ops.pairwise_giou(box_ops.cxcywh_to_xyxy(boxes), box_ops.cxcywh_to_xyxy(target_boxes))
    return class_weight * cost_class + l1_weight * cost_l1 + giou_weight * cost_giou


def match_batch(
    logits: jnp.ndarray,
    boxes: jnp.ndarray,
    target_labels: jnp.ndarray,
    target_boxes: jnp.ndarray,
    num_boxes: jnp.ndarray,
    class_weight: float = 2.0,
    l1_weight: float = 5.0,
    giou_weight: float = 2.0,
    alpha: float = 0.25,
    gamma: float = 2.0,
) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """Per-image DETR matching of a batch (``vmap`` of ``detr_cost`` + ``hungarian_match``).

    Args:
      logits: [B, Q, K] sigmoid class logits; boxes: [B, Q, 4] normalised cxcywh.
      target_labels: [B, M] int; target_boxes: [B, M, 4] normalised cxcywh;
      num_boxes: [B] int, number of real targets per image (the rest is padding).
      Remaining arguments as in ``detr_cost``.

    Returns:
      ``(query_index [B, M], target_index [B, M], valid [B, M])`` as in ``hungarian_match``.
    """

    def one(lg, bx, tl, tb, n):
        cost = detr_cost(lg, bx, tl, tb, class_weight, l1_weight, giou_weight, alpha, gamma)
        return hungarian_match(cost, n)

    return jax.vmap(one)(logits, boxes, target_labels, target_boxes, num_boxes)
