"""Hungarian matching against scipy.optimize.linear_sum_assignment, padding, and the DETR cost."""

import jax
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from turbjax import losses as L


@pytest.fixture(scope="module")
def match_many():
    """hungarian_match vmapped over a stack of cost matrices [R, Q, M] and num_valid [R], jitted once."""
    return jax.jit(jax.vmap(L.hungarian_match))


def _check_against_scipy(cost, num_valid, query_index, target_index, valid):
    num_q, num_t = cost.shape
    query_index, target_index, valid = map(np.asarray, (query_index, target_index, valid))
    np.testing.assert_array_equal(target_index, np.arange(num_t))
    assert not valid[num_valid:].any(), "padded targets must be invalid"
    assert valid.sum() == min(num_q, num_valid)
    chosen = query_index[valid]
    assert len(set(chosen.tolist())) == len(chosen), "each valid target needs a distinct query"
    assert np.all((chosen >= 0) & (chosen < num_q))
    rows, cols = linear_sum_assignment(cost[:, :num_valid])
    np.testing.assert_allclose(cost[chosen, target_index[valid]].sum(), cost[rows, cols].sum(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("num_q, num_t", [(7, 4), (5, 5), (3, 6), (4, 1)])
@pytest.mark.parametrize("integer_costs", [False, True], ids=["real", "ties"])
def test_matches_scipy(match_many, num_q, num_t, integer_costs):
    rng = np.random.default_rng(num_q * 10 + num_t + 100 * integer_costs)
    num_valid = np.array([0, num_t, 1, num_t // 2, num_t - 1, num_t, min(num_q, num_t), num_t])
    shape = (len(num_valid), num_q, num_t)
    if integer_costs:
        cost = rng.integers(0, 4, shape).astype(np.float32)
    else:
        cost = (rng.normal(size=shape) * rng.uniform(0.1, 10.0, (shape[0], 1, 1))).astype(np.float32)
    out = match_many(cost, num_valid.astype(np.int32))
    for r, nv in enumerate(num_valid):
        _check_against_scipy(cost[r], int(nv), *(o[r] for o in out))


def test_padding_content_and_nonfinite_entries_are_ignored(match_many):
    # shape [8, 7, 4] as in test_matches_scipy, so the compiled matcher is reused
    rng = np.random.default_rng(0)
    cost = rng.uniform(size=(8, 7, 4)).astype(np.float32)
    num_valid = np.array([1, 2, 3, 3, 1, 2, 3, 3], np.int32)
    garbage = cost.copy()
    for r, nv in enumerate(num_valid):
        garbage[r, :, nv:] = np.nan if r < 4 else -1e3  # padding holding NaN, or much cheaper than any real pair
    out = match_many(garbage, num_valid)
    for r, nv in enumerate(num_valid):
        _check_against_scipy(cost[r], int(nv), *(o[r] for o in out))
    # an infinite real entry is treated as a very large cost, not as a NaN-producing one
    inf_cost = cost.copy()
    inf_cost[:, 0, 0] = np.inf
    query_index, _, valid = match_many(inf_cost, np.full(8, 4, np.int32))
    assert np.all(np.asarray(valid)) and np.all(np.asarray(query_index)[:, 0] != 0)


def _reference_cost(logits, boxes, labels, target_boxes, wc=2.0, wl=5.0, wg=2.0, alpha=0.25, gamma=2.0):
    logits, boxes, target_boxes = (np.asarray(x, np.float64) for x in (logits, boxes, target_boxes))
    p = 1.0 / (1.0 + np.exp(-logits[:, labels]))
    cls = alpha * (1 - p) ** gamma * -np.log(p) - (1 - alpha) * p**gamma * -np.log(1 - p)
    l1 = np.abs(boxes[:, None] - target_boxes[None]).sum(-1)

    def xyxy(b):
        return np.concatenate([b[..., :2] - b[..., 2:] / 2, b[..., :2] + b[..., 2:] / 2], -1)

    a, b = xyxy(boxes)[:, None], xyxy(target_boxes)[None]
    wh = np.clip(np.minimum(a[..., 2:], b[..., 2:]) - np.maximum(a[..., :2], b[..., :2]), 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = boxes[:, None, 2] * boxes[:, None, 3] + target_boxes[None, :, 2] * target_boxes[None, :, 3] - inter
    ewh = np.maximum(a[..., 2:], b[..., 2:]) - np.minimum(a[..., :2], b[..., :2])
    enclose = ewh[..., 0] * ewh[..., 1]
    giou = inter / union - (enclose - union) / enclose
    return wc * cls + wl * l1 - wg * giou


def _random_detections(seed, batch, num_q, num_t, num_classes):
    """NumPy data (eager jax.random would compile one tiny program per op)."""
    rng = np.random.default_rng(seed)
    logits = (rng.normal(size=(batch, num_q, num_classes)) * 2.0).astype(np.float32)
    boxes = rng.uniform(0.1, 0.5, (batch, num_q, 4)).astype(np.float32)
    labels = rng.integers(0, num_classes, (batch, num_t)).astype(np.int32)
    target_boxes = rng.uniform(0.1, 0.5, (batch, num_t, 4)).astype(np.float32)
    return logits, boxes, labels, target_boxes


def test_detr_cost_against_reference():
    logits, boxes, labels, target_boxes = (x[0] for x in _random_detections(2, 1, 5, 4, 3))
    got = jax.jit(L.detr_cost)(logits, boxes, labels, target_boxes)
    assert got.shape == (5, 4)
    np.testing.assert_allclose(got, _reference_cost(logits, boxes, labels, target_boxes), rtol=1e-4, atol=1e-4)


def test_match_batch_equals_per_image_matching():
    batch, num_q, num_t = 3, 6, 4
    logits, boxes, labels, target_boxes = _random_detections(3, batch, num_q, num_t, 3)
    num_boxes = np.array([0, 2, 4], np.int32)
    query_index, target_index, valid = jax.jit(L.match_batch)(logits, boxes, labels, target_boxes, num_boxes)
    assert query_index.shape == target_index.shape == valid.shape == (batch, num_t)
    for b in range(batch):
        cost = _reference_cost(logits[b], boxes[b], labels[b], target_boxes[b])
        _check_against_scipy(cost, int(num_boxes[b]), query_index[b], target_index[b], valid[b])
