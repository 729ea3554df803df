"""The JDATT objective: which gradients reach which model in each mode; teachers stay frozen."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from turbjax.losses.jdatt import JdattWeights, jdatt_loss, teacher_outputs
from turbjax.models import Detector, detector_config
from turbjax.models.jdatt import build_joint_student
from turbjax.models.restorers import Restorer, restorer_config

TAPS = {"restorer": ("enhance2",), "detector": ("fused",)}
MICRO_DET = dict(num_queries=6, widths=(8, 8, 16, 16), hidden_dim=16, ffn_dim=32, num_decoder_layers=2, num_heads=2)
SIZE, T = 32, 3


@pytest.fixture(scope="module")
def setup():
    rngs = nnx.Rngs(0)
    t_r = Restorer(restorer_config("tiny", num_frames=T, widths=(8, 16, 48)), rngs=rngs)
    t_d = Detector(detector_config("tiny", 3, **{**MICRO_DET, "hidden_dim": 32}), rngs=rngs)
    s_r = Restorer(restorer_config("tiny", num_frames=T), rngs=rngs)
    s_d = Detector(detector_config("tiny", 3, **MICRO_DET), rngs=rngs)
    student = build_joint_student(s_r, s_d, t_r, t_d, TAPS, (T, SIZE, SIZE, 3), rngs=rngs)
    rng = np.random.default_rng(0)
    batch = {
        "clip": jnp.asarray(rng.uniform(size=(2, T, SIZE, SIZE, 3)), jnp.float32),
        "clean": jnp.asarray(rng.uniform(size=(2, SIZE, SIZE, 3)), jnp.float32),
        "targets": {
            "labels": jnp.asarray([[0, 2], [1, 0]], jnp.int32),
            "boxes": jnp.asarray([[[0.3, 0.3, 0.2, 0.2], [0.6, 0.6, 0.3, 0.2]], [[0.5, 0.5, 0.4, 0.4], [0, 0, 0, 0]]]),
            "num_boxes": jnp.asarray([2, 1], jnp.int32),
        },
    }
    return student, (t_r, t_d), batch


def _grads(student, teachers, batch, mode, **weights):
    graphdef, params, rest = nnx.split(student, nnx.Param, ...)
    t_graph, t_state = nnx.split(teachers)

    @jax.jit
    def fn(params, t_state):
        def loss(params, t_state):
            module = nnx.merge(graphdef, params, rest)
            t_r, t_d = nnx.merge(t_graph, t_state)
            teacher = teacher_outputs(t_r, t_d, batch["clip"], TAPS)
            return jdatt_loss(module, teacher, batch, jax.random.key(0), taps=TAPS, mode=mode,
                              weights=JdattWeights(**weights))  # fmt: skip

        return jax.grad(loss, argnums=(0, 1), has_aux=True)(params, t_state)

    (g_student, g_teacher), terms = fn(params, t_state)
    return g_student, g_teacher, terms


def _norm(tree):
    return float(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)) ** 0.5)


def test_joint_mode_sends_detection_gradients_into_the_restorer(setup):
    student, teachers, batch = setup
    # Only the detector-side terms: any restorer gradient must come through the restored image.
    g, g_teacher, terms = _grads(student, teachers, batch, "joint", charbonnier=0.0, cwd=0.0, mgd=0.0)
    assert _norm(g["restorer"]) > 1e-6 and _norm(g["detector"]) > 1e-6
    assert _norm(g_teacher) == 0.0  # teachers are frozen inputs
    assert set(terms) >= {"charbonnier", "detection", "cwd", "mgd", "kl", "loss"}
    assert all(np.isfinite(float(v)) for v in terms.values())


def test_separate_stages_keep_their_terms_apart(setup):
    student, teachers, batch = setup
    g, _, terms = _grads(student, teachers, batch, "restorer")
    assert "detection" not in terms and "kl" not in terms
    assert _norm(g["detector"]) == 0.0 and _norm(g["restorer"]) > 1e-6
    assert _norm(g["mgd"]["detector__fused"]) == 0.0 and _norm(g["mgd"]["restorer__enhance2"]) > 0.0
    g, _, terms = _grads(student, teachers, batch, "detector")
    assert "charbonnier" not in terms
    assert _norm(g["restorer"]) == 0.0 and _norm(g["detector"]) > 1e-6


def test_unknown_tap_is_named():
    rngs = nnx.Rngs(1)
    r = Restorer(restorer_config("tiny", num_frames=T), rngs=rngs)
    d = Detector(detector_config("tiny", 3, **MICRO_DET), rngs=rngs)
    with pytest.raises(KeyError, match="available"):
        build_joint_student(r, d, r, d, {"restorer": ("nope",)}, (T, SIZE, SIZE, 3), rngs=rngs)


def test_joint_step_sharded_over_8_devices_equals_one_device(setup):
    """The whole JDATT objective as a train step: batch split over 8 devices, teachers and student
    replicated; the normalisers (boxes, pixels, masks) are global, so the update is the same."""
    import ml_collections

    from turbjax.train.optim import make_optimizer
    from turbjax.train.sharding import data_mesh, replicate, shard_batch
    from turbjax.train.steps import init_state, make_step

    student, teachers, batch = setup
    t_graph, t_state = nnx.split(teachers)
    rng = np.random.default_rng(1)
    n = 8
    big = {
        "clip": jnp.asarray(rng.uniform(size=(n, T, SIZE, SIZE, 3)), jnp.float32),
        "clean": jnp.asarray(rng.uniform(size=(n, SIZE, SIZE, 3)), jnp.float32),
        "targets": jax.tree.map(lambda x: jnp.concatenate([x] * (n // 2)), batch["targets"]),
    }

    def loss_fn(module, batch, key, t_s):
        t_r, t_d = nnx.merge(t_graph, t_s)
        teacher = teacher_outputs(t_r, t_d, batch["clip"], TAPS)
        return jdatt_loss(module, teacher, batch, key, taps=TAPS, mode="joint", weights=JdattWeights(mgd_alpha=1e-3))

    optim = ml_collections.ConfigDict(dict(learning_rate=1e-3, warmup_steps=0, weight_decay=0.01, clip_norm=1.0))
    tx = make_optimizer(optim, 10)
    graphdef, state = init_state(nnx.clone(student), tx)
    step = make_step(graphdef, tx, loss_fn, seed=0)
    single_state, single = step(state, big, t_state)
    mesh = data_mesh(8)
    sharded_state, sharded = step(replicate(state, mesh), shard_batch(big, mesh), replicate(t_state, mesh))
    for name in single:
        np.testing.assert_allclose(float(sharded[name]), float(single[name]), rtol=2e-5, err_msg=name)
    for a, b in zip(jax.tree.leaves(single_state.params), jax.tree.leaves(sharded_state.params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
    assert float(single["mgd"]) > 0 and float(single["detection"]) > 0
