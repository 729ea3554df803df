"""Tests of the TMTS network and its SpyNet: shapes through the recurrence, parameter budgets (against closed-form
counts and the seed's 6.24 M), deformable attention against an independent numpy reference, the gated reference
update against a hand-computed step, and the signature switches (exactly zero signature gradient when off)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from turbjax.models import RestorerOutput, count_parameters
from turbjax.models.spynet import SpyNet
from turbjax.models.tmts import (
    CGRFU,
    TMTS,
    TSGA,
    TSTSA,
    FeatureEncoder,
    TSSwitches,
    deformable_attention,
    module_parameters,
    sample_points,
    tmts_config,
    window_signatures,
)

SEED_PARAMS = 6.24e6  # TMTS seed, Table 6 (all modules, with TS)
SIZE = 16  # frames of the tiny model: H/4 = 4


# Test data from numpy: jax.random compiles a sampler per new shape (about a second of CPU each).
def _uniform(shape: tuple[int, ...], high: float = 1.0, seed: int = 0) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).uniform(0.0, high, shape), jnp.float32)


def _normal(shape: tuple[int, ...], seed: int = 0) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def _clip(frames: int, batch: int = 1, size: int = SIZE, seed: int = 0) -> jax.Array:
    return _uniform((batch, frames, size, size, 3), seed=seed)


def _build(cls, *args, seed: int = 0, **kwargs):
    """``cls(*args, **kwargs)`` with random weights drawn by numpy: N(0, 1 / fan_in) kernels, N(0, 0.05^2) vectors.

    Building through ``nnx.eval_shape`` and filling the state from numpy skips the per-shape PRNG compiles of an eager
    build (about a second of CPU per parameter shape), and random (not zero) offset / tilt heads let every path carry
    gradient.
    """
    graphdef, state = nnx.split(nnx.eval_shape(lambda: cls(*args, rngs=nnx.Rngs(0), **kwargs)))
    rng = np.random.default_rng(seed)

    def draw(x):
        scale = 1.0 / np.sqrt(np.prod(x.shape[:-1])) if len(x.shape) > 1 else 0.05
        return jnp.asarray(rng.normal(0.0, scale, x.shape), x.dtype)

    return nnx.merge(graphdef, jax.tree.map(draw, state))


@nnx.jit
def _forward(model: TMTS, clip: jax.Array) -> RestorerOutput:
    return model(clip)


# ----------------------------------------------------------------------------------------------------------------------
# Closed-form parameter counts (independent of the implementation: read off the architecture description)
# ----------------------------------------------------------------------------------------------------------------------


def _conv(cin: int, cout: int, k: int, bias: bool = True) -> int:
    return k * k * cin * cout + (cout if bias else 0)


def _rdb(c: int, growth: int, layers: int) -> int:
    return sum(_conv(c + i * growth, growth, 3) for i in range(layers)) + _conv(c + layers * growth, c, 1)


def _cab(c: int) -> int:
    hidden = max(c // 16, 4)
    return _conv(c, c, 1) + _conv(c, c, 3) + (c * hidden + hidden) + (hidden * c + c)


def _expected(cfg) -> dict[str, int]:
    c, d, layers, tw, g, heads = (
        cfg.base_channels, cfg.deep_channels, cfg.rdb_layers, cfg.num_frames, cfg.deform_groups, cfg.tstsa_heads,
    )  # fmt: skip
    ts = cfg.use_ts
    w = tw * d
    dims = [8, *cfg.spynet_widths, 2]  # SpyNet levels: [ref, warped sup, flow] -> widths -> flow
    guide = 2 * d + 2 + (c if ts.tsga else 0)
    gda = (
        _conv(guide, d, 1) + _rdb(d, c, layers) + _conv(d, g * 9 * 2, 1) + 3 * _conv(d, 2 * d, 1) + _conv(2 * d, d, 1)
        + (d * 2 * d + 2 * d) + (2 * d * d + d)
    )  # fmt: skip

    def decoder(out: int) -> int:
        return (
            _conv(w, 4 * c, 3) + _cab(6 * c) + _conv(6 * c, 2 * c, 3) + _cab(3 * c) + _conv(3 * c, c, 3)
            + _conv(c, out, 3)
        )  # fmt: skip

    counts = {
        "encoder": 3 * _conv(3, c, 5) + _rdb(c, c, layers) + _conv(c, 2 * c, 5) + _rdb(3 * c, 3 * c // 2, layers)
        + _conv(3 * c, 4 * c, 5) + (_conv(1, d, 3) if ts.encoder else 0),
        "spynet": cfg.spynet_levels * sum(_conv(dims[i], dims[i + 1], cfg.spynet_kernel) for i in range(len(dims) - 1)),
        "tsga": gda + (_conv(1, c, 3) if ts.tsga else 0),
        "fusion": _rdb(3 * d, c, layers) + _conv(3 * d, 6 * c, 3) + (cfg.fusion_blocks - 1) * _rdb(6 * c, c, layers)
        + _conv(cfg.fusion_blocks * 6 * c, 6 * c, 1) + _conv(6 * c, d, 3),
        "cgrfu": _conv(2 * d, 2 * d, 3) + _conv(2 * d, d, 3) + _rdb(d, d, layers) + _conv(d, d, 3)
        + (_conv(1, d, 3) if ts.cgrfu else 0),
        "tstsa": _conv(2 * w, w, 1) + 9 * w + 3 * w * w + heads + w * w + (_conv(tw, heads, 3) if ts.tstsa else 0),
        "tilt_decoder": decoder(2),
        "image_decoder": decoder(3),
    }  # fmt: skip
    counts["total"] = sum(counts.values())
    return counts


def _abstract(cfg) -> TMTS:
    return nnx.eval_shape(lambda: TMTS(cfg, rngs=nnx.Rngs(0)))


@pytest.mark.parametrize("name", ["paper", "tiny"])
@pytest.mark.parametrize("switches", [TSSwitches(), TSSwitches.off(), TSSwitches(encoder=True)], ids=str)
def test_parameter_count_per_module(name, switches):
    cfg = tmts_config(name, use_ts=switches)
    assert module_parameters(_abstract(cfg)) == _expected(cfg)


def test_paper_config_within_10_percent_of_seed():
    cfg = tmts_config("paper")
    assert (cfg.base_channels, cfg.deform_groups) == (16, 8)  # the seed's implementation details
    total = count_parameters(_abstract(cfg))
    assert abs(total - SEED_PARAMS) / SEED_PARAMS < 0.10, total
    # Switching the signature off removes exactly its three sigmoid(conv(S)) convs and the C signature channels
    # of TSGA's offset guide (the guide's 1x1 conv reads C fewer channels).
    off = count_parameters(_abstract(tmts_config("paper", use_ts=TSSwitches.off())))
    c, d = cfg.base_channels, cfg.deep_channels
    assert total - off == _conv(1, c, 3) + _conv(1, d, 3) + _conv(cfg.num_frames, cfg.tstsa_heads, 3) + c * d


def test_spynet_parameters_match_the_original():
    spynet = nnx.eval_shape(lambda: SpyNet(6, (32, 64, 32, 16), 7, rngs=nnx.Rngs(0)))
    assert count_parameters(spynet) == 1_440_300  # 6 x 240,050, the published SpyNet


def test_spynet_coarse_to_fine_and_padding():
    # Basic modules reduced to constant outputs (kernels zero, biases b_l): the flow is the sum over levels of
    # b_l * 2^l, each level's flow doubled when it is upsampled; 12 x 10 frames are padded to 12 x 12 and cropped.
    net = _build(SpyNet, 3, (4, 4), 3)
    biases = [np.array([0.5, -0.25]), np.array([0.125, 1.0]), np.array([-1.0, 0.5])]  # level 0 (full) .. 2
    for level, bias in zip(net.basic_modules, biases, strict=True):
        level.out.kernel[...] = jnp.zeros_like(level.out.kernel[...])
        level.out.bias[...] = jnp.asarray(bias, jnp.float32)
    clip = _clip(2, size=12)[0]
    ref, sup = clip[:1, :, :10], clip[1:, :, :10]
    flow = nnx.jit(lambda m, a, b: m(a, b))(net, ref, sup)
    assert flow.shape == (1, 12, 10, 2)
    np.testing.assert_allclose(flow, np.broadcast_to(biases[0] + 2 * biases[1] + 4 * biases[2], flow.shape), atol=1e-6)
    with pytest.raises(ValueError, match="ref and sup"):
        net(ref, sup[:, :8])


# ----------------------------------------------------------------------------------------------------------------------
# Whole network
# ----------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model() -> TMTS:
    """Tiny TMTS (Tw = 3) with every signature path on and random weights (see _build)."""
    cfg = tmts_config("tiny", use_ts=TSSwitches(encoder=True))
    return _build(TMTS, cfg, seed=1)


def _expected_features(cfg, batch: int, window: int) -> dict[str, tuple[int, ...]]:
    c, d, s, h = cfg.base_channels, cfg.deep_channels, SIZE, SIZE // 4
    return {
        "registration": (batch, s, s, c),
        "enhance1": (batch, s // 2, s // 2, 6 * c),
        "enhance2": (batch, h, h, window * d),
        "decoder": (batch, s, s, 3 * c),
        "embedding": (batch, h, h, 2 * d),
        "signature": (batch, s, s, 1),
    }


def test_output_through_the_recurrence(tiny_model):
    # T = 5 > Tw = 3: the recurrence runs over all five frames, TSTSA fuses the three around the centre.
    clip = _clip(5, batch=2)
    out = _forward(tiny_model, clip)
    assert isinstance(out, RestorerOutput)
    assert out.image.shape == (2, SIZE, SIZE, 3)
    assert out.tilt_field.shape == (2, SIZE, SIZE, 2)
    assert {k: v.shape for k, v in out.features.items()} == _expected_features(tiny_model.config, 2, 3)
    for leaf in jax.tree.leaves(out):
        assert bool(jnp.all(jnp.isfinite(leaf)))
    assert float(jnp.abs(out.tilt_field).max()) > 0.0  # random weights: a real field, not a zero head


@pytest.mark.parametrize(("frames", "window"), [(3, 3), (5, 5), (7, 3)])
def test_output_shapes_for_odd_windows(frames, window):
    # Abstract evaluation (no FLOPs) of the whole recurrence for other clip lengths / fused windows.
    cfg = tmts_config("tiny", num_frames=window, use_ts=TSSwitches(encoder=True))
    graphdef, state = nnx.split(_abstract(cfg))
    clip = jax.ShapeDtypeStruct((1, frames, SIZE, SIZE, 3), jnp.float32)
    out = jax.eval_shape(lambda st, c: nnx.merge(graphdef, st)(c), state, clip)
    assert out.image.shape == (1, SIZE, SIZE, 3)
    assert out.tilt_field.shape == (1, SIZE, SIZE, 2)
    assert {k: v.shape for k, v in out.features.items()} == _expected_features(cfg, 1, window)


def test_input_checks(tiny_model):
    with pytest.raises(ValueError, match="odd"):
        tiny_model(_clip(4))
    with pytest.raises(ValueError, match="divisible"):
        tiny_model(_clip(3, size=18))
    with pytest.raises(ValueError, match="num_frames"):
        tmts_config("tiny", num_frames=4)
    with pytest.raises(ValueError, match="tstsa_heads"):
        tmts_config("tiny", tstsa_heads=7)


def _signature_gradient(model: TMTS, clip: jax.Array, signature: jax.Array) -> jax.Array:
    def f(s):
        out = model(clip, signature=s)
        return jnp.sum(out.image**2) + jnp.sum(out.tilt_field**2)

    return jax.jit(jax.grad(f))(signature)


def test_signature_gradient_zero_iff_switched_off(tiny_model):
    clip = _clip(3)
    signature = _uniform(clip.shape[:-1], high=2.0, seed=3)
    on = _signature_gradient(tiny_model, clip, signature)
    assert float(jnp.abs(on).max()) > 1e-6
    off_cfg = dataclasses.replace(tiny_model.config, use_ts=TSSwitches.off())
    off_model = _build(TMTS, off_cfg, seed=1)
    off = _signature_gradient(off_model, clip, signature)
    np.testing.assert_array_equal(off, 0.0)
    graphdef, state = nnx.split(off_model)
    assert "signature" not in jax.eval_shape(lambda st: nnx.merge(graphdef, st)(clip).features, state)


def test_window_signatures_match_the_physics_function():
    from turbjax.physics.signature import turbulence_signature

    clip = _clip(5, batch=2)
    full = window_signatures(clip)
    np.testing.assert_allclose(full[:, 2], turbulence_signature(clip), rtol=1e-6)
    np.testing.assert_array_equal(full[:, 0], full[:, 4])
    sliding = window_signatures(clip, 3)
    np.testing.assert_allclose(sliding[:, 0], turbulence_signature(clip[:, 0:3]), rtol=1e-6)  # clamped at the start
    np.testing.assert_allclose(sliding[:, 2], turbulence_signature(clip[:, 1:4]), rtol=1e-6)
    np.testing.assert_allclose(sliding[:, 4], turbulence_signature(clip[:, 2:5]), rtol=1e-6)  # clamped at the end


# ----------------------------------------------------------------------------------------------------------------------
# Per-module signature switches
# ----------------------------------------------------------------------------------------------------------------------

_SMALL = tmts_config("tiny", base_channels=2, deform_groups=4, tstsa_heads=2)  # D = 10


def _module_gradient(name: str, use: bool) -> jax.Array:
    """Gradient of the sum of squares of one module's output w.r.t. its signature input ``s [1, 4, 4, 1]``."""
    cfg = dataclasses.replace(_SMALL, use_ts=dataclasses.replace(TSSwitches.off(), **{name: use}))
    d = cfg.deep_channels
    feat = _normal((1, 4, 4, d), seed=40)
    ref = jnp.tanh(_normal((1, 4, 4, d), seed=41))
    s = _uniform((1, 4, 4, 1), high=2.0, seed=42)
    if name == "tsga":
        module, flow = _build(TSGA, cfg), 0.3 * _normal((1, 4, 4, 2), seed=43)

        def apply(m, s):
            return m(feat, ref, flow, s if use else None)[0]
    elif name == "cgrfu":
        module = _build(CGRFU, cfg)

        def apply(m, s):
            return m(feat, ref, s if use else None)
    elif name == "tstsa":
        module, emb = _build(TSTSA, cfg), _normal((1, cfg.num_frames, 4, 4, 2 * d), seed=43)

        def apply(m, s):
            return m(emb, jnp.repeat(s, cfg.num_frames, axis=-1) if use else None)
    else:
        module, frames = _build(FeatureEncoder, cfg), _uniform((1, 16, 16, 3), seed=43)

        def apply(m, s):
            return m(frames, s if use else None)[2]

    return nnx.jit(nnx.grad(lambda s, m: jnp.sum(apply(m, s) ** 2)))(s, module)


@pytest.mark.parametrize("name", ["tsga", "cgrfu", "tstsa", "encoder"])
def test_each_switch_owns_its_signature_path(name):
    assert float(jnp.abs(_module_gradient(name, True)).max()) > 1e-7
    np.testing.assert_array_equal(_module_gradient(name, False), 0.0)


# ----------------------------------------------------------------------------------------------------------------------
# Deformable attention
# ----------------------------------------------------------------------------------------------------------------------


def _reference_attention(q, k, v, shifts, groups):
    """Independent numpy version: per pixel and group, softmax attention over the 9 pixels
    ``clamp(p + kernel point + integer shift)`` (shifts ``[N, H, W, G, 9, 2]`` integers, (dx, dy))."""
    q, k, v, shifts = (np.asarray(a, np.float64) for a in (q, k, v, shifts))
    n, h, w, c = q.shape
    cg = c // groups
    out = np.zeros_like(q)
    grid = [(dx, dy) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    for b in range(n):
        for y in range(h):
            for x in range(w):
                for g in range(groups):
                    sl = slice(g * cg, (g + 1) * cg)
                    logits, values = [], []
                    for j, (dx, dy) in enumerate(grid):
                        yy = int(np.clip(y + dy + shifts[b, y, x, g, j, 1], 0, h - 1))
                        xx = int(np.clip(x + dx + shifts[b, y, x, g, j, 0], 0, w - 1))
                        logits.append(q[b, y, x, sl] @ k[b, yy, xx, sl] / np.sqrt(cg))
                        values.append(v[b, yy, xx, sl])
                    a = np.exp(np.array(logits) - max(logits))
                    out[b, y, x, sl] = (a / a.sum()) @ np.array(values)
    return out


_attend = jax.jit(deformable_attention, static_argnums=4)


def _qkv(shape=(2, 5, 6, 8), seed=0):
    return tuple(_normal(shape, seed=seed * 3 + i) for i in range(3))


def test_zero_offsets_equal_plain_3x3_attention():
    q, k, v = _qkv()
    groups = 2
    offsets = jnp.zeros((*q.shape[:3], groups, 9, 2))
    got = _attend(q, k, v, offsets, groups)
    want = _reference_attention(q, k, v, np.zeros(offsets.shape), groups)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_integer_offsets_sample_the_right_pixels():
    q, k, v = _qkv(seed=1)
    groups = 2
    shifts = jnp.asarray(np.random.default_rng(7).integers(-3, 4, (*q.shape[:3], groups, 9, 2)), jnp.float32)
    got = _attend(q, k, v, shifts, groups)
    want = _reference_attention(q, k, v, np.asarray(shifts), groups)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # All nine points of every group on the same pixel p + (2, -1): the output is v shifted exactly.
    grid = np.array([(dx, dy) for dy in (-1, 0, 1) for dx in (-1, 0, 1)], np.float32)
    same = jnp.broadcast_to(jnp.asarray(np.array([2.0, -1.0]) - grid), (*q.shape[:3], groups, 9, 2))
    out = _attend(q, k, v, same, groups)
    np.testing.assert_allclose(out[:, 1:, :-2], v[:, :-1, 2:], rtol=1e-5, atol=1e-6)


def test_sample_points_gathers_exact_pixels():
    x = jnp.arange(2 * 4 * 5 * 3, dtype=jnp.float32).reshape(2, 4, 5, 3)
    disp = jnp.zeros((2, 4, 5, 2, 2)).at[..., 0, :].set(jnp.array([1.0, 0.0])).at[..., 1, :].set(jnp.array([0.0, 2.0]))
    s = sample_points(x, disp)
    assert s.shape == (2, 4, 5, 2, 3)
    np.testing.assert_array_equal(s[:, :, :4, 0], x[:, :, 1:])  # one pixel to the right
    np.testing.assert_array_equal(s[:, :2, :, 1], x[:, 2:])  # two rows down
    np.testing.assert_array_equal(s[:, 3, :, 1], x[:, 3])  # clamped at the bottom border


# ----------------------------------------------------------------------------------------------------------------------
# CGRFU
# ----------------------------------------------------------------------------------------------------------------------


def test_cgrfu_step_by_hand():
    cfg = dataclasses.replace(_SMALL, use_ts=TSSwitches(cgrfu=True))
    d = cfg.deep_channels
    cell = _build(CGRFU, cfg)
    b_u, b_g, b_s = (_normal((d,), seed=80 + i) for i in range(3))
    # Constant gates: conv kernels zero, biases known, so u, g and sigmoid(conv(S)) are known per channel.
    cell.gates.kernel[...] = jnp.zeros_like(cell.gates.kernel[...])
    cell.gates.bias[...] = jnp.concatenate([b_u, b_g])
    cell.signature.conv.kernel[...] = jnp.zeros_like(cell.signature.conv.kernel[...])
    cell.signature.conv.bias[...] = b_s
    e = _normal((2, 4, 4, d), seed=83)
    r = jnp.tanh(_normal((2, 4, 4, d), seed=84))
    s = _uniform((2, 4, 4, 1), seed=85)
    step = nnx.jit(lambda m, e, r, s: m(e, r, s))  # one compile, reused as the weights are edited
    z = e * jax.nn.sigmoid(b_s) + e  # Z = e sigmoid(S) + e
    u, g = jax.nn.sigmoid(b_u), jax.nn.sigmoid(b_g)
    candidate = jnp.tanh(nnx.jit(lambda m, x: m.candidate(x))(cell, jnp.concatenate([z, g * r], axis=-1)))
    want = (1.0 - u) * candidate + u * r
    np.testing.assert_allclose(step(cell, e, r, s), want, rtol=1e-5, atol=1e-6)
    # Saturated update gate keeps the reference; closed update gate takes the candidate.
    cell.gates.bias[...] = jnp.concatenate([jnp.full((d,), 30.0), b_g])
    np.testing.assert_allclose(step(cell, e, r, s), r, atol=1e-6)
    # Fully hand-computed: candidate network reduced to its output bias c, so H~ = tanh(c) everywhere.
    c_bias = jnp.linspace(-1.0, 1.0, d)
    nnx.update(cell, jax.tree.map(jnp.zeros_like, nnx.state(cell, nnx.Param)))
    cell.candidate_out.bias[...] = c_bias
    # gates zero -> u = g = 1/2: r_t = tanh(c) / 2 + r / 2
    np.testing.assert_allclose(step(cell, e, r, s), 0.5 * jnp.tanh(c_bias) + 0.5 * r, rtol=1e-6, atol=1e-6)
