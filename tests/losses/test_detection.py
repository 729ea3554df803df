"""Detection loss: NumPy/scipy reference, empty images, boxes moving to targets, jit/vmap, query permutations."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from tests.losses.test_boxes import _reference_iou_giou
from tests.losses.test_matching import _reference_cost
from turbjax import losses as L

B, Q, K, M = 3, 6, 3, 4  # one shape for (almost) every test, so the jitted loss compiles once


class _Output(NamedTuple):  # stands in for models.DetectorOutput (outputs read by attribute)
    logits: jnp.ndarray
    boxes: jnp.ndarray
    features: dict
    aux_outputs: tuple


def _loss(logits, boxes, aux_logits, aux_boxes, targets):
    return L.detection_loss(_Output(logits, boxes, {}, ((aux_logits, aux_boxes),)), targets)


def _loss_from_dict(logits, boxes, aux_logits, aux_boxes, targets):  # outputs read by key, aux as a mapping
    outputs = {"logits": logits, "boxes": boxes, "aux_outputs": [{"logits": aux_logits, "boxes": aux_boxes}]}
    return L.detection_loss(outputs, targets)


@pytest.fixture(scope="module")
def loss_and_grad():
    """The one compiled loss of this module: ((loss, terms), grads w.r.t. logits, boxes, aux logits, aux boxes)."""
    return jax.jit(jax.value_and_grad(_loss, argnums=(0, 1, 2, 3), has_aux=True))


@pytest.fixture(scope="module")
def loss_fn(loss_and_grad):
    """Value only, reusing the compiled value-and-grad program (compiling is what costs time here)."""
    return lambda *args: loss_and_grad(*args)[0]


def _predictions(seed, logit_offset=0.0):
    rng = np.random.default_rng(seed)
    logits = (rng.normal(size=(2, B, Q, K)) + logit_offset).astype(np.float32)
    cxcy = rng.uniform(0.2, 0.8, (2, B, Q, 2))
    wh = rng.uniform(0.05, 0.3, (2, B, Q, 2))
    boxes = np.concatenate([cxcy, wh], -1).astype(np.float32)
    return logits[0], boxes[0], logits[1], boxes[1]  # final layer, aux layer


def _targets(seed, num_boxes):
    rng = np.random.default_rng(seed)
    boxes = np.concatenate([rng.uniform(0.2, 0.8, (B, M, 2)), rng.uniform(0.05, 0.3, (B, M, 2))], -1)
    labels = rng.integers(0, K, (B, M))
    num_boxes = np.asarray(num_boxes, np.int32)
    padding = np.arange(M)[None] >= num_boxes[:, None]
    boxes[padding] = np.nan  # padding may hold anything
    labels[padding] = -1
    return {"labels": labels.astype(np.int32), "boxes": boxes.astype(np.float32), "num_boxes": num_boxes}


def _all_finite(tree):
    return all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(tree))


def _reference_loss(logits, boxes, aux_logits, aux_boxes, targets, alpha=0.25, gamma=2.0):
    """Float64 NumPy + scipy matching; eq. 2 written out term by term. Returns (total, terms)."""
    n = max(int(np.sum(targets["num_boxes"])), 1)
    terms, total = {}, 0.0
    for suffix, (lg, bx) in {"": (logits, boxes), "_aux0": (aux_logits, aux_boxes)}.items():
        lg, bx = lg.astype(np.float64), bx.astype(np.float64)
        p = 1.0 / (1.0 + np.exp(-lg))
        positive = np.zeros(lg.shape, bool)
        soft_target = np.zeros(lg.shape)
        l1 = giou = 0.0
        for b in range(B):
            nv = int(targets["num_boxes"][b])
            labels, tboxes = targets["labels"][b, :nv], targets["boxes"][b, :nv].astype(np.float64)
            rows, cols = linear_sum_assignment(_reference_cost(lg[b], bx[b], labels, tboxes))
            for q, j in zip(rows, cols, strict=True):
                pair_iou, pair_giou, _ = _reference_iou_giou(_xyxy(bx[b, q]), _xyxy(tboxes[j]))
                l1 += np.abs(bx[b, q] - tboxes[j]).sum()
                giou += 1.0 - pair_giou
                positive[b, q, labels[j]] = True
                soft_target[b, q, labels[j]] = p[b, q, labels[j]] ** alpha * pair_iou ** (1.0 - alpha)
        t = soft_target[positive]
        bce_pos = -(t * np.log(p[positive]) + (1.0 - t) * np.log(1.0 - p[positive]))
        bce_neg = -(p[~positive] ** gamma) * np.log(1.0 - p[~positive])
        layer = {"labels": (bce_pos.sum() + bce_neg.sum()) / n, "l1": l1 / n, "giou": giou / n}
        terms.update({f"loss_{k}{suffix}": v for k, v in layer.items()})
        total += layer["labels"] + 5.0 * layer["l1"] + 2.0 * layer["giou"]
    return total, terms


def _xyxy(box):
    return np.concatenate([box[:2] - box[2:] / 2, box[:2] + box[2:] / 2])


@pytest.mark.parametrize("num_boxes", [[2, 4, 1], [0, 3, 0]])
def test_against_reference(loss_fn, num_boxes):
    predictions = _predictions(10)
    targets = _targets(11, num_boxes)
    loss, terms = loss_fn(*predictions, targets)
    ref_loss, ref_terms = _reference_loss(*predictions, targets)
    for name, value in ref_terms.items():
        np.testing.assert_allclose(terms[name], value, rtol=2e-5, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(loss, ref_loss, rtol=2e-5)
    assert float(terms["num_boxes"]) == sum(num_boxes)


def test_layers_with_different_query_counts():
    """An aux layer with fewer queries (e.g. encoder proposals) takes the unstacked, per-layer path."""
    logits, boxes, aux_logits, aux_boxes = _predictions(12)
    predictions = (logits, boxes, aux_logits[:, : Q - 2], aux_boxes[:, : Q - 2])
    targets = _targets(13, [3, 0, 2])
    loss, terms = jax.jit(_loss)(*predictions, targets)
    ref_loss, ref_terms = _reference_loss(*predictions, targets)
    for name, value in ref_terms.items():
        np.testing.assert_allclose(terms[name], value, rtol=2e-5, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(loss, ref_loss, rtol=2e-5)


@pytest.mark.parametrize("num_boxes", [[0, 0, 0], [0, 2, 4]], ids=["no_boxes", "mixed"])
def test_finite_value_and_gradients(loss_and_grad, num_boxes):
    (loss, terms), grads = loss_and_grad(*_predictions(0), _targets(1, num_boxes))
    assert _all_finite((loss, terms, grads))
    assert float(terms["num_boxes"]) == max(sum(num_boxes), 1)
    assert {"loss_labels", "loss_l1", "loss_giou", "loss_labels_aux0", "loss_l1_aux0", "loss_giou_aux0"} <= set(terms)
    logit_grad, box_grad = np.asarray(grads[0]), np.asarray(grads[1])
    assert np.any(logit_grad != 0.0)  # negatives are always trained
    if sum(num_boxes) == 0:
        assert float(terms["loss_l1"]) == float(terms["loss_giou"]) == 0.0
        assert np.all(box_grad == 0.0)
    else:
        assert float(terms["loss_l1"]) > 0.0 and float(terms["loss_giou"]) > 0.0
        assert np.count_nonzero(np.abs(box_grad).sum(-1)) == sum(num_boxes)  # only matched queries move
        assert np.all(box_grad[0] == 0.0)  # the empty image contributes no box gradient


def test_loss_falls_as_boxes_move_to_their_targets(loss_fn):
    """Interpolate matched predictions toward their targets: box terms and (with p > 0.5) the total fall."""
    logits, boxes, _, _ = _predictions(2, logit_offset=1.5)  # p > 0.5 mostly, so a larger IoU target helps
    targets = _targets(3, [1, 3, 4])
    match = jax.jit(L.match_batch)
    query_index, _, valid = match(logits, boxes, targets["labels"], targets["boxes"], targets["num_boxes"])
    goal = boxes.copy()
    for b, j in zip(*np.nonzero(np.asarray(valid)), strict=True):
        goal[b, int(query_index[b, j])] = targets["boxes"][b, j]
    values = []
    for s in np.linspace(0.0, 1.0, 6):
        moved = ((1.0 - s) * boxes + s * goal).astype(np.float32)
        loss, terms = loss_fn(logits, moved, logits, moved, targets)
        values.append([float(loss), float(terms["loss_l1"]), float(terms["loss_giou"])])
    values = np.array(values)
    assert np.all(np.diff(values, axis=0) < 0.0), values
    np.testing.assert_allclose(values[-1, 1:], 0.0, atol=1e-5)


def test_jit_and_vmap_agree(loss_fn):
    stacked = [np.stack([a, b]) for a, b in zip(_predictions(4), _predictions(5), strict=True)]
    targets = _targets(6, [2, 0, 3])
    batched = jax.jit(jax.vmap(_loss_from_dict, in_axes=(0, 0, 0, 0, None)))(*stacked, targets)
    for i in range(2):
        loss, terms = loss_fn(*(x[i] for x in stacked), targets)
        np.testing.assert_allclose(batched[0][i], loss, rtol=1e-5)
        for name, value in terms.items():
            np.testing.assert_allclose(batched[1][name][i], value, rtol=1e-5, atol=1e-7)


def test_invariant_to_query_permutation(loss_fn):
    logits, boxes, aux_logits, aux_boxes = _predictions(7)
    targets = _targets(8, [4, 1, 3])
    loss, terms = loss_fn(logits, boxes, aux_logits, aux_boxes, targets)
    rng = np.random.default_rng(9)
    perm, aux_perm = rng.permutation(Q), rng.permutation(Q)
    loss_p, terms_p = loss_fn(logits[:, perm], boxes[:, perm], aux_logits[:, aux_perm], aux_boxes[:, aux_perm], targets)
    np.testing.assert_allclose(loss_p, loss, rtol=1e-5)
    for name in terms:
        np.testing.assert_allclose(terms_p[name], terms[name], rtol=1e-5, atol=1e-7)
