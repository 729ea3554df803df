"""Tests of the DETR-style detector: shapes, parameter budgets, jit / sharding equivalence, gradients."""

from __future__ import annotations

import math

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from turbjax.models import (
    FEATURE_NAMES,
    VARIANTS,
    Detector,
    DetectorOutput,
    count_parameters,
    detector_config,
)
from turbjax.models.layers import sine_position_embedding

# JDATT student detector sizes (seed paper, section 4.3) and the relative tolerance we hold them to.
TARGETS = {"small": (2.6e6, 0.05), "medium": (9.4e6, 0.10), "large": (20.1e6, 0.10)}
BATCH, SIZE = 2, 64


def _images(batch: int, height: int, width: int, seed: int = 0) -> jax.Array:
    return jax.random.uniform(jax.random.key(seed), (batch, height, width, 3), jnp.float32)


def _abstract(name: str) -> Detector:
    cfg = detector_config(name)
    return nnx.eval_shape(lambda: Detector(cfg, rngs=nnx.Rngs(0)))


@pytest.fixture(scope="module")
def models() -> dict[str, Detector]:
    """The variants cheap enough to build for real on CPU, built once."""
    return {name: Detector(detector_config(name), rngs=nnx.Rngs(0)) for name in ("tiny", "small")}


def _pure_forward(model: Detector):
    """``(jitted f(state, images) -> DetectorOutput, state)``: the forward as a pure function of the state."""
    graphdef, state = nnx.split(model)
    return jax.jit(lambda s, x: nnx.merge(graphdef, s)(x)), state


@pytest.fixture(scope="module")
def outputs(models) -> dict[str, DetectorOutput]:
    """Forward on a [2, 64, 64, 3] batch: eager for tiny (the reference of the jit test), jitted for small."""
    x = _images(BATCH, SIZE, SIZE)
    forward, state = _pure_forward(models["small"])
    return {"tiny": models["tiny"](x), "small": forward(state, x)}


@pytest.mark.parametrize("name", VARIANTS)
def test_parameter_budget(name):
    n = count_parameters(_abstract(name))
    if name == "tiny":
        assert 2e5 <= n <= 5e5, n
    else:
        target, rtol = TARGETS[name]
        assert abs(n - target) <= rtol * target, (name, n, target)


def test_parameter_budget_is_ordered():
    counts = [count_parameters(_abstract(name)) for name in VARIANTS]
    assert counts == sorted(counts)


def test_count_parameters_concrete_equals_abstract(models):
    assert count_parameters(models["tiny"]) == count_parameters(_abstract("tiny"))


def _check_output(out: DetectorOutput, name: str, batch: int, height: int, width: int) -> None:
    cfg = detector_config(name)
    q, k, d = cfg.num_queries, cfg.num_classes, cfg.hidden_dim
    assert out.logits.shape == (batch, q, k) and out.logits.dtype == jnp.float32
    assert out.boxes.shape == (batch, q, 4) and out.boxes.dtype == jnp.float32
    assert len(out.aux) == cfg.num_decoder_layers - 1
    for logits, boxes in out.aux:
        assert logits.shape == (batch, q, k) and boxes.shape == (batch, q, 4)
    assert set(out.features) == set(FEATURE_NAMES) | ({"fused8"} if cfg.stride8_memory else set())
    expected = {f"stage{i + 1}": (batch, height >> (i + 2), width >> (i + 2), w) for i, w in enumerate(cfg.widths)}
    expected.update(
        neck=(batch, height // 32, width // 32, d),
        encoder=(batch, height // 32, width // 32, d),
        fused=(batch, height // 16, width // 16, d),
        decoder=(batch, q, d),
    )
    if cfg.stride8_memory:
        expected["fused8"] = (batch, height // 8, width // 8, d)
    assert {key: tuple(v.shape) for key, v in out.features.items()} == expected


@pytest.mark.parametrize("name", ["tiny", "small"])
def test_output_shapes_and_ranges(outputs, name):
    out = outputs[name]
    _check_output(out, name, BATCH, SIZE, SIZE)
    for logits, boxes in ((out.logits, out.boxes), *out.aux):
        assert bool(jnp.all(jnp.isfinite(logits)))
        assert bool(jnp.all((boxes >= 0.0) & (boxes <= 1.0)))


@pytest.mark.parametrize("name", ["medium", "large"])
def test_output_shapes_abstract(name):
    """Big variants: trace the forward on abstract parameters (no allocation, no FLOPs)."""
    graphdef, state = nnx.split(_abstract(name))
    x = jax.ShapeDtypeStruct((BATCH, SIZE, SIZE, 3), jnp.float32)
    out = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x), state, x)
    _check_output(out, name, BATCH, SIZE, SIZE)


def test_initialisation_priors(models, outputs):
    """Class bias at prior 0.01; boxes start as 0.5 x 0.5 boxes centred on the per-query reference points."""
    model, out = models["tiny"], outputs["tiny"]
    np.testing.assert_allclose(model.class_head.bias[...], -math.log(99.0), rtol=1e-6)
    np.testing.assert_allclose(out.boxes[..., 2:], 0.5, atol=1e-6)
    np.testing.assert_allclose(out.boxes[0, :, :2], jax.nn.sigmoid(model.reference[...]), atol=1e-6)
    assert float(jnp.std(out.boxes[..., :2])) > 0.1  # spread over the image, not collapsed at the centre


def _trace(model: Detector, shape: tuple[int, ...]) -> DetectorOutput:
    graphdef, state = nnx.split(model)
    return jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x), state, jax.ShapeDtypeStruct(shape, jnp.float32))


def test_non_square_input(models):
    _check_output(_trace(models["tiny"], (1, 64, 96, 3)), "tiny", 1, 64, 96)


def test_rejects_size_not_divisible_by_32(models):
    with pytest.raises(ValueError, match="divisible by 32"):
        _trace(models["tiny"], (1, 48, 64, 3))


def test_config_validation_and_overrides():
    cfg = detector_config("small", num_classes=69, num_queries=50)
    assert (cfg.num_classes, cfg.num_queries, cfg.hidden_dim) == (69, 50, 128)
    with pytest.raises(ValueError, match="unknown detector variant"):
        detector_config("huge")
    with pytest.raises(ValueError):
        detector_config("tiny", num_heads=3)


def test_no_encoder_variant():
    cfg = detector_config("tiny", num_encoder_layers=0, num_decoder_layers=1)
    out = Detector(cfg, rngs=nnx.Rngs(1))(_images(BATCH, SIZE, SIZE))
    assert out.aux == ()
    np.testing.assert_array_equal(out.features["encoder"], out.features["neck"])


def test_jit_of_split_state_matches_eager(models, outputs):
    forward, state = _pure_forward(models["tiny"])
    out = forward(state, _images(BATCH, SIZE, SIZE))
    for got, want in zip(jax.tree.leaves(out), jax.tree.leaves(outputs["tiny"]), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_batch_sharded_forward_matches_single_device(models):
    if jax.device_count() < 8:
        pytest.skip("needs 8 devices (tests/conftest.py forces 8 CPU devices)")
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    forward, state = _pure_forward(models["tiny"])
    x = _images(8, SIZE, SIZE, seed=3)

    single = forward(jax.device_put(state, jax.devices()[0]), jax.device_put(x, jax.devices()[0]))
    sharded = forward(
        jax.device_put(state, NamedSharding(mesh, P())), jax.device_put(x, NamedSharding(mesh, P("data")))
    )
    assert sharded.logits.sharding.spec[0] == "data"
    for got, want in zip(jax.tree.leaves(sharded), jax.tree.leaves(single), strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5, rtol=1e-5)


def test_gradients_reach_every_parameter(models):
    """Every parameter is connected to the outputs.

    At initialisation some gradients are exactly zero by design (zero-initialised residual norm scales and last
    box layer block the gradient of what precedes them), so parameters are perturbed first. The one structural
    exception is the first decoder layer's ``norm1.scale``: the decoder starts from zero content (as in DETR) and
    LayerNorm of zeros is its bias alone. 64 px images give the encoder 2x2 tokens (with a single token its
    attention softmax is constant and query/key get no gradient).
    """
    graphdef, params, rest = nnx.split(models["tiny"], nnx.Param, ...)
    x = _images(1, 64, 64, seed=5)

    def loss(p):
        out = nnx.merge(graphdef, p, rest)(x)
        terms = [out.logits, out.boxes, *(a for pair in out.aux for a in pair)]
        return sum(jnp.mean(jnp.sin(3.0 * t)) for t in terms)

    @jax.jit
    def grad_stats(p):  # one compiled program: eager per-leaf ops would compile once per parameter shape
        flat, unravel = jax.flatten_util.ravel_pytree(p)  # one RNG call: one per leaf would be slow to compile
        grads = jax.grad(loss)(unravel(flat + 0.05 * jax.random.normal(jax.random.key(7), flat.shape)))
        return jax.tree.map(lambda g: (jnp.all(jnp.isfinite(g)), jnp.any(g != 0)), grads)

    flat = jax.tree_util.tree_leaves_with_path(jax.device_get(grad_stats(params)), is_leaf=lambda t: type(t) is tuple)
    assert all(finite for _, (finite, _) in flat)
    dead = [jax.tree_util.keystr(path) for path, (_, nonzero) in flat if not nonzero]
    assert dead == ["['decoder'][0]['norm1']['scale'].value"], dead


def test_dropout_train_vs_eval():
    model = Detector(detector_config("tiny", dropout=0.2), rngs=nnx.Rngs(0))
    x = _images(BATCH, SIZE, SIZE)
    a, b = model(x), model(x)
    assert not np.allclose(a.logits, b.logits)  # training mode: a fresh dropout mask per call
    model.eval()
    c, d = model(x), model(x)
    np.testing.assert_array_equal(c.logits, d.logits)


def test_sine_position_embedding():
    emb = sine_position_embedding(4, 6, 16)
    assert emb.shape == (4, 6, 16)
    assert bool(jnp.all(jnp.abs(emb) <= 1.0))
    # First half encodes rows (constant along a row), second half columns (constant along a column).
    np.testing.assert_allclose(emb[:, :1, :8], np.broadcast_to(emb[:, :1, :8], emb[:, :, :8].shape)[:, :1])
    np.testing.assert_allclose(emb[:, :, :8], np.broadcast_to(emb[:, :1, :8], (4, 6, 8)))
    np.testing.assert_allclose(emb[:, :, 8:], np.broadcast_to(emb[:1, :, 8:], (4, 6, 8)))
    assert len({tuple(np.round(v, 5)) for v in np.asarray(emb).reshape(-1, 16)}) == 24  # every position distinct
