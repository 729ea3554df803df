"""Box conversions, IoU and GIoU: known values, edge cases, and finite gradients for degenerate boxes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from turbjax import losses as L


def _xyxy(row):
    return jnp.asarray(row, jnp.float32)


@jax.jit
def _round_trips(cxcywh):
    xyxy = L.cxcywh_to_xyxy(cxcywh)
    return xyxy, L.xyxy_to_cxcywh(xyxy), L.cxcywh_to_xyxy(L.xyxy_to_cxcywh(xyxy)), L.box_area(xyxy)


def test_conversions_round_trip():
    cxcywh = np.random.default_rng(0).uniform(0.0, 1.0, (5, 7, 4)).astype(np.float32)
    cxcywh[0, 0] = [0.5, 0.4, 0.2, 0.6]
    xyxy, back, xyxy_again, area = _round_trips(cxcywh)
    np.testing.assert_allclose(xyxy[0, 0], [0.4, 0.1, 0.6, 0.7], atol=1e-7)
    np.testing.assert_allclose(back, cxcywh, atol=1e-6)
    np.testing.assert_allclose(xyxy_again, xyxy, atol=1e-6)
    np.testing.assert_allclose(area, cxcywh[..., 2] * cxcywh[..., 3], rtol=1e-5, atol=1e-7)


@jax.jit
def _iou_giou_both_ways(a, b):
    return jnp.stack([L.iou(a, b), L.giou(a, b), L.iou(b, a), L.giou(b, a)])


@pytest.mark.parametrize(
    "a, b, iou, giou",
    [
        ((0, 0, 1, 1), (0, 0, 1, 1), 1.0, 1.0),  # identical
        ((0, 0, 1, 1), (2, 0, 3, 1), 0.0, -1.0 / 3.0),  # disjoint: union 2, enclosing 3
        ((0, 0, 2, 2), (3, 3, 4, 4), 0.0, 5.0 / 16.0 - 1.0),  # diagonal disjoint: union 5, enclosing 16
        ((0, 0, 4, 4), (1, 1, 2, 2), 1.0 / 16.0, 1.0 / 16.0),  # nested: enclosing == union
        ((0, 0, 2, 1), (1, 0, 3, 1), 1.0 / 3.0, 1.0 / 3.0),  # half overlap
        ((0, 0, 1, 1), (1, 0, 2, 1), 0.0, 0.0),  # touching edges
    ],
)
def test_known_values(a, b, iou, giou):
    got = _iou_giou_both_ways(_xyxy(a), _xyxy(b))
    np.testing.assert_allclose(got, [iou, giou, iou, giou], atol=1e-6)  # and symmetric


def _reference_iou_giou(a, b):
    """Plain-Python IoU and GIoU of two well-formed xyxy boxes with positive area."""
    iw = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0)
    ih = max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    enclose = (max(a[2], b[2]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[1], b[1]))
    return inter / union, inter / union - (enclose - union) / enclose, union


def test_pairwise_against_reference():
    rng = np.random.default_rng(1)

    def random_xyxy(n):
        lo = rng.uniform(0.0, 0.6, (n, 2))
        return np.concatenate([lo, lo + rng.uniform(0.05, 0.4, (n, 2))], -1).astype(np.float32)

    a, b = random_xyxy(4), random_xyxy(3)
    iou, union, giou, elementwise = jax.jit(
        lambda a, b: (*L.pairwise_iou(a, b), L.pairwise_giou(a, b), L.iou(a[:, None], b[None]))
    )(a, b)
    assert iou.shape == union.shape == giou.shape == (4, 3)
    ref = np.array([[_reference_iou_giou(x, y) for y in b.astype(np.float64)] for x in a.astype(np.float64)])
    np.testing.assert_allclose(iou, ref[..., 0], atol=1e-6)
    np.testing.assert_allclose(giou, ref[..., 1], atol=1e-6)
    np.testing.assert_allclose(union, ref[..., 2], rtol=1e-5)
    np.testing.assert_allclose(elementwise, iou, atol=1e-7)  # elementwise broadcasts the same
    assert 0.0 < iou.max() < 1.0 and giou.min() < 0.0  # the sample has overlapping and disjoint pairs
    assert np.all((giou <= iou + 1e-6) & (giou > -1.0) & (iou >= 0.0) & (iou <= 1.0 + 1e-6))


DEGENERATE = [
    ((0.2, 0.2, 0.2, 0.2), (0.2, 0.2, 0.2, 0.2)),  # two identical points
    ((0.2, 0.2, 0.2, 0.6), (0.2, 0.3, 0.2, 0.5)),  # two overlapping vertical lines
    ((0.2, 0.2, 0.2, 0.2), (0.0, 0.0, 1.0, 1.0)),  # point inside a box
    ((0.2, 0.2, 0.2, 0.2), (0.5, 0.5, 0.5, 0.5)),  # two distinct points
    ((0.1, 0.1, 0.4, 0.1), (0.6, 0.1, 0.9, 0.1)),  # collinear horizontal segments
]


@jax.jit
def _values_and_grads(a, b):
    def total(x, y):
        pairwise = L.pairwise_giou(x[None], y[None]).sum() + L.pairwise_iou(x[None], y[None])[0].sum()
        return L.iou(x, y) + L.giou(x, y) + pairwise

    return L.iou(a, b), L.giou(a, b), jax.grad(total, argnums=(0, 1))(a, b)


@pytest.mark.parametrize("a, b", DEGENERATE)
def test_degenerate_boxes_finite_values_and_gradients(a, b):
    iou, giou, grads = _values_and_grads(_xyxy(a), _xyxy(b))
    assert np.isfinite(iou) and 0.0 <= iou <= 1.0
    assert np.isfinite(giou) and -1.0 <= giou <= 1.0  # two distinct points: giou = -1 exactly
    assert all(np.all(np.isfinite(g)) for g in grads)


def test_zero_size_cxcywh_gradient():
    grad = jax.jit(jax.grad(lambda z: L.giou(L.cxcywh_to_xyxy(z), L.cxcywh_to_xyxy(z))))(np.zeros(4, np.float32))
    assert np.all(np.isfinite(grad))
