"""Tests of the selective-scan Mamba blocks and the JDATT restorers: scan = sequential reference (values and
gradients), parameter budgets, shapes and feature taps of every variant, jit equivalence, alignment and tilt."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from turbjax.models.detector import count_parameters
from turbjax.models.mamba import (
    SCAN_METHODS,
    SCANS,
    Mamba,
    ResMambaBlock,
    image_scan_order,
    selective_scan,
    selective_scan_reference,
)
from turbjax.models.restorers import (
    FEATURE_NAMES,
    VARIANTS,
    DeformableAlignment,
    Restorer,
    RestorerOutput,
    restorer_config,
)
from turbjax.physics.warp import warp

# JDATT restorer sizes (seed paper, section 4.3 and Table 3) and the relative tolerance the issue asks for.
TARGETS = {"teacher": 2.8e6, "large": 2.5e6, "medium": 0.7e6, "small": 0.6e6}
RTOL_PARAMS = 0.15
T, SIZE = 5, 32


def _clip(batch: int = 2, frames: int = T, size: int = SIZE, seed: int = 0) -> jax.Array:
    return jax.random.uniform(jax.random.key(seed), (batch, frames, size, size, 3), jnp.float32)


def _abstract(name: str) -> Restorer:
    cfg = restorer_config(name)
    return nnx.eval_shape(lambda: Restorer(cfg, rngs=nnx.Rngs(0)))


# ----------------------------------------------------------------------------------------------------------------------
# Selective scan and Mamba blocks
# ----------------------------------------------------------------------------------------------------------------------


def _scan_inputs(batch=(2,), length=48, e=6, n=4, seed=0):
    k = jax.random.split(jax.random.key(seed), 6)
    u = jax.random.normal(k[0], (*batch, length, e))
    delta = jax.nn.softplus(jax.random.normal(k[1], (*batch, length, e)) - 1.0)
    a = -jnp.exp(jax.random.normal(k[2], (e, n)))
    b = jax.random.normal(k[3], (*batch, length, n))
    c = jax.random.normal(k[4], (*batch, length, n))
    d = jax.random.normal(k[5], (e,))
    return u, delta, a, b, c, d


@pytest.mark.parametrize("method", SCAN_METHODS)
def test_selective_scan_matches_sequential_reference(method):
    args = _scan_inputs((2, 3))  # two leading axes
    y = selective_scan(*args, method=method)
    y_ref = jax.jit(selective_scan_reference)(*args)
    assert y.shape == args[0].shape
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", SCAN_METHODS)
def test_selective_scan_gradients_match_sequential_reference(method):
    # selective_scan has a hand-written VJP (a reverse scan); the reference is differentiated by JAX.
    args = _scan_inputs()
    weights = jax.random.normal(jax.random.key(1), args[0].shape)

    def grads(fn):
        return jax.jit(jax.grad(lambda *xs: jnp.sum(fn(*xs) * weights), argnums=tuple(range(6))))(*args)

    scan = functools.partial(selective_scan, method=method)
    for g, g_ref in zip(grads(scan), grads(selective_scan_reference), strict=True):
        scale = float(jnp.max(jnp.abs(g_ref)))
        np.testing.assert_allclose(g, g_ref, rtol=1e-5, atol=1e-5 * scale)


def test_selective_scan_is_the_recurrence_by_hand():
    # One channel, one state: h_t = exp(d_t a) h_{t-1} + d_t b_t u_t, y_t = c_t h_t + D u_t.
    u = np.array([[[1.0], [2.0], [-1.0]]], np.float32)
    delta = np.array([[[0.5], [1.0], [0.25]]], np.float32)
    a = np.array([[-2.0]], np.float32)
    b = np.array([[[1.0], [0.5], [2.0]]], np.float32)
    c = np.array([[[1.0], [-1.0], [3.0]]], np.float32)
    d = np.array([0.1], np.float32)
    h, expected = 0.0, []
    for t in range(3):
        h = np.exp(delta[0, t, 0] * a[0, 0]) * h + delta[0, t, 0] * b[0, t, 0] * u[0, t, 0]
        expected.append(c[0, t, 0] * h + d[0] * u[0, t, 0])
    np.testing.assert_allclose(selective_scan(u, delta, a, b, c, d)[0, :, 0], expected, rtol=1e-6)


@nnx.jit
def _apply(module: nnx.Module, x: jax.Array) -> jax.Array:
    return module(x)


@nnx.jit
def _apply2(module: nnx.Module, x: jax.Array, y: jax.Array):
    return module(x, y)


def test_one_way_mamba_is_causal():
    x = jax.random.normal(jax.random.key(0), (1, 20, 8))
    x2 = x.at[:, 12:].set(jax.random.normal(jax.random.key(1), (1, 8, 8)))
    one_way = Mamba(8, d_state=4, num_directions=1, rngs=_rngs())
    y, y2 = _apply(one_way, x), _apply(one_way, x2)
    np.testing.assert_allclose(y[:, :12], y2[:, :12], rtol=1e-5, atol=1e-6)  # the past ignores the future
    assert not np.allclose(y[:, 12:], y2[:, 12:])
    # The sequential scan method needs no other parameters and gives the same block output.
    sequential = Mamba(8, d_state=4, num_directions=1, scan_method="sequential", rngs=_rngs())
    nnx.update(sequential, nnx.state(one_way))
    np.testing.assert_allclose(_apply(sequential, x), y, rtol=1e-5, atol=1e-6)


def test_image_scan_orders_are_inverse_permutations():
    h, w = 3, 4
    x = jnp.arange(h * w, dtype=jnp.float32).reshape(1, h, w, 1)
    seq = x.reshape(1, h * w, 1)
    transposed = jnp.swapaxes(x, 1, 2).reshape(1, h * w, 1)  # column-major order
    expected = {
        "raster": seq,
        "raster_reverse": seq[:, ::-1],
        "column": transposed,
        "column_reverse": transposed[:, ::-1],
    }
    for name in SCANS:
        to_seq, from_seq = image_scan_order(name, h, w)
        np.testing.assert_array_equal(to_seq(seq), expected[name])
        np.testing.assert_array_equal(from_seq(to_seq(seq)), seq)


def test_res_mamba_block_rejects_unknown_scan():
    with pytest.raises(ValueError):
        ResMambaBlock(8, scans=("diagonal",), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError):
        image_scan_order("diagonal", 2, 2)


# ----------------------------------------------------------------------------------------------------------------------
# Restorer configuration and parameter budgets
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", VARIANTS)
def test_parameter_budget(name):
    n = count_parameters(_abstract(name))
    if name in TARGETS:
        target = TARGETS[name]
        assert abs(n - target) <= RTOL_PARAMS * target, (name, n, target)
    else:
        assert n <= 2e5, (name, n)


def test_parameter_budget_is_ordered():
    counts = {name: count_parameters(_abstract(name)) for name in VARIANTS}
    assert counts["tiny"] < counts["tiny_teacher"] < counts["small"] < counts["medium"] < counts["large"]
    assert counts["large"] < counts["teacher"]


def test_students_follow_the_seed():
    teacher = restorer_config("teacher")
    assert teacher.deformable and teacher.tilt_head
    for name in ("small", "medium", "large"):
        cfg = restorer_config(name)
        assert not cfg.deformable and not cfg.tilt_head
        assert cfg.conv3d_layers < teacher.conv3d_layers
        assert sum(cfg.mamba_blocks) < sum(teacher.mamba_blocks)
        assert cfg.transformer_layers == 1
    for name in ("small", "medium"):
        assert restorer_config(name).widths == tuple(w // 2 for w in teacher.widths)
    assert restorer_config("large").widths == teacher.widths


@pytest.mark.parametrize(
    "overrides",
    [
        dict(num_frames=4),
        dict(tilt_head=True, deformable=False),
        dict(deformable=True, deform_groups=5),
        dict(widths=(8, 16, 30)),
        dict(scans=("spiral",)),
        dict(scan_method="parallel"),
    ],
)
def test_bad_config_raises(overrides):
    with pytest.raises(ValueError):
        restorer_config("tiny", **overrides)
    with pytest.raises(ValueError):
        restorer_config("huge")


# ----------------------------------------------------------------------------------------------------------------------
# Forward passes
# ----------------------------------------------------------------------------------------------------------------------


def _rngs(seed: int = 0) -> nnx.Rngs:
    # Counter-based "rbg" keys: initialisers compile about twice as fast as with threefry (the default), which
    # matters on a 2-core CPU where building a model is mostly compiling one initialiser per parameter shape.
    return nnx.Rngs(jax.random.key(seed, impl="rbg"))


@pytest.fixture(scope="module")
def model() -> Restorer:
    """The variant built for real, once: ``tiny_teacher`` has the teacher's whole architecture (3D convs, deformable
    alignment, tilt head, Res-Mamba blocks, transformer) at a CPU-friendly size; the students are the same code
    with the alignment and the tilt head switched off (their shapes are checked abstractly below)."""
    return Restorer(restorer_config("tiny_teacher"), rngs=_rngs())


@pytest.fixture(scope="module")
def forward(model):
    """``(jitted f(state, clip) -> RestorerOutput, state)``: one compiled program shared by the tests."""
    graphdef, state = nnx.split(model)
    return jax.jit(lambda s, x: nnx.merge(graphdef, s)(x)), state


@pytest.fixture(scope="module")
def output(forward) -> RestorerOutput:
    """Jitted forward on a [2, 5, 32, 32, 3] clip."""
    fn, state = forward
    return fn(state, _clip())


def _check_shapes(out: RestorerOutput, name: str, batch: int, height: int, width: int) -> None:
    cfg = restorer_config(name)
    c0, c1, c2 = cfg.widths
    h, w = height, width
    assert out.image.shape == (batch, h, w, 3)
    expected = {
        "registration": (batch, h, w, c0),
        "enhance1": (batch, h // 2, w // 2, c1),
        "enhance2": (batch, h // 4, w // 4, c2),
        "decoder": (batch, h, w, c0),
    }
    assert set(out.features) == set(FEATURE_NAMES)
    assert {k: tuple(v.shape) for k, v in out.features.items()} == expected
    if cfg.tilt_head:
        assert out.tilt_field is not None and out.tilt_field.shape == (batch, h, w, 2)
    else:
        assert out.tilt_field is None


@pytest.mark.parametrize("name", VARIANTS)
def test_output_shapes_every_variant(name):
    # Abstract evaluation: the shapes of the real forward without allocating (or computing) the big variants.
    graphdef, state = nnx.split(_abstract(name))
    x = jax.ShapeDtypeStruct((1, T, SIZE, SIZE, 3), jnp.float32)
    out = jax.eval_shape(lambda s, clip: nnx.merge(graphdef, s)(clip), state, x)
    _check_shapes(out, name, 1, SIZE, SIZE)


def test_any_size_divisible_by_four():
    graphdef, state = nnx.split(_abstract("teacher"))
    x = jax.ShapeDtypeStruct((2, T, 20, 44, 3), jnp.float32)  # not square, not divisible by 8
    out = jax.eval_shape(lambda s, clip: nnx.merge(graphdef, s)(clip), state, x)
    _check_shapes(out, "teacher", 2, 20, 44)


def test_output_finite_and_near_the_centre_frame(output):
    _check_shapes(output, "tiny_teacher", 2, SIZE, SIZE)
    for leaf in jax.tree.leaves(output):
        assert bool(jnp.all(jnp.isfinite(leaf)))
    assert float(output.image.min()) > -0.5 and float(output.image.max()) < 1.5
    # A fresh model is (nearly) the identity on its base frame: the RGB head starts near zero, the field at zero.
    np.testing.assert_allclose(output.image, _clip()[:, T // 2], atol=0.1)
    np.testing.assert_array_equal(output.tilt_field, 0.0)


def test_jitted_split_merge_equals_eager(model, output):
    eager = model(_clip())
    for a, b in zip(jax.tree.leaves(output), jax.tree.leaves(eager), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("shape", "match"),
    [((1, 4, SIZE, SIZE, 3), "odd"), ((1, 3, SIZE, SIZE, 3), "built for"), ((1, T, 30, SIZE, 3), "divisible")],
)
def test_bad_input_raises(model, shape, match):
    with pytest.raises(ValueError, match=match):
        model(jnp.zeros(shape))


# ----------------------------------------------------------------------------------------------------------------------
# Alignment and tilt
# ----------------------------------------------------------------------------------------------------------------------


def _set_offsets(state: nnx.State, per_group: np.ndarray) -> nnx.State:
    """A copy of a tilt-head restorer's ``state`` whose alignment predicts ``per_group [G, 2]`` (dx, dy) px."""
    state = jax.tree.map(lambda x: x, state)
    state["registration"]["align"]["offset"]["bias"][...] = jnp.asarray(per_group, jnp.float32).reshape(-1)
    return state


def test_deformable_alignment_samples_at_the_offsets():
    channels, groups = 8, 2
    align = DeformableAlignment(channels, groups, rngs=_rngs())
    align.project.kernel[...] = jnp.eye(channels)[None, None]
    align.project.bias[...] = jnp.zeros(channels)
    per_group = np.array([[1.0, 0.0], [0.0, -2.0]])  # group 0 reads one pixel right, group 1 two pixels up
    align.offset.bias[...] = jnp.asarray(per_group, jnp.float32).reshape(-1)
    neighbour = jax.random.normal(jax.random.key(0), (1, 16, 16, channels))
    aligned, offsets = _apply2(align, neighbour, jnp.zeros_like(neighbour))
    np.testing.assert_allclose(offsets, np.broadcast_to(per_group, (1, 16, 16, groups, 2)), atol=1e-6)
    half = channels // groups
    np.testing.assert_allclose(aligned[0, :, :-1, :half], neighbour[0, :, 1:, :half], atol=1e-5)
    np.testing.assert_allclose(aligned[0, 2:, :, half:], neighbour[0, :-2, :, half:], atol=1e-5)


def test_tilt_field_is_minus_the_mean_neighbour_offset(model, forward):
    # Every neighbour offset by o (and the zero-initialised correction): the field is -(T-1)/T o everywhere.
    fn, state = forward
    offset = np.array([1.5, -0.5])
    out = fn(_set_offsets(state, np.tile(offset, (model.config.deform_groups, 1))), _clip())
    assert not np.any(state["registration"]["align"]["offset"]["bias"][...])  # the shared state is untouched
    np.testing.assert_allclose(out.tilt_field, np.broadcast_to(-(T - 1) / T * offset, (2, SIZE, SIZE, 2)), atol=1e-5)


def test_identical_frames_give_a_finite_trainable_tilt_and_gradients_everywhere(model):
    """Teacher architecture (``tiny_teacher``) on a static scene: the tilt is finite, and one loss combining the
    restoration (Charbonnier) and a TMTS-style tilt term has finite gradients reaching every stage, including the
    offset head that the tilt field is built from."""
    frame = jax.random.uniform(jax.random.key(3), (2, 1, SIZE, SIZE, 3))
    clip = jnp.repeat(frame, T, axis=1)
    target = jnp.roll(frame[:, 0], 1, axis=2)  # the clean scene one pixel to the right of the observed frames
    # Same parameters, sequential scan method: the associative scan's VJP is checked against the reference above,
    # and the sequential one compiles several times faster, which keeps this file within its CPU time budget.
    cfg = dataclasses.replace(model.config, scan_method="sequential")
    graphdef = nnx.graphdef(nnx.eval_shape(lambda: Restorer(cfg, rngs=nnx.Rngs(0))))
    state = nnx.state(model)

    def loss(s):
        out = nnx.merge(graphdef, s)(clip)
        restoration = jnp.mean(jnp.sqrt((out.image - target) ** 2 + 1e-6))
        tilt = jnp.mean(jnp.sqrt((warp(frame[:, 0], out.tilt_field) - target) ** 2 + 1e-6))
        return restoration + tilt, out

    grads, out = jax.jit(jax.grad(loss, has_aux=True))(state)
    assert out.tilt_field is not None and bool(jnp.all(jnp.isfinite(out.tilt_field)))
    assert bool(jnp.all(jnp.isfinite(out.image)))
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))

    def magnitude(tree) -> float:
        return sum(float(jnp.sum(jnp.abs(g))) for g in jax.tree.leaves(tree))

    reg, enh = grads["registration"], grads["enhancement"]
    for part in (reg["stem"], reg["align"]["offset"], enh["enc1"], enh["mid"], enh["transformer"], enh["head"]):
        assert magnitude(part) > 0.0
