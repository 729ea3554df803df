"""Distillation losses (CWD, MGD, KL, matched detector KL): hand-computed cases and defining properties."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from turbjax.losses import distill as D
from turbjax.models.detector import DetectorOutput
from turbjax.models.distill_heads import MGDHead

# KL([3/4, 1/4] || [1/2, 1/2]): the two-point case used by the hand-computed tests.
KL_34 = 0.75 * np.log(1.5) + 0.25 * np.log(0.5)


# Jitted once per module (with static top_k): eager Hungarian matching is slow to dispatch op by op.
_detector_kl = jax.jit(D.detector_kl_loss, static_argnames=("top_k",))


def _features(key, shape):
    return jax.random.normal(jax.random.key(key), shape)


# --------------------------------------------------------------------------------------------------------- CWD


def test_cwd_hand_computed():
    # One example, H*W = 2 positions, 2 channels. Channel 0: teacher (log 3, 0) -> (3/4, 1/4), student uniform.
    # Channel 1: student equals teacher -> KL 0. Loss = (KL_34 + 0) / (N C) = KL_34 / 2.
    teacher = jnp.array([[[[np.log(3.0), 1.0], [0.0, -1.0]]]])  # [1, 1, 2, 2]
    student = jnp.array([[[[5.0, 1.0], [5.0, -1.0]]]])
    loss, terms = D.cwd_loss(student, teacher, tau=1.0)
    np.testing.assert_allclose(loss, KL_34 / 2, rtol=1e-6)
    np.testing.assert_allclose(terms["cwd"], loss)
    # tau = 2 with all features doubled gives the same distributions: the loss is tau^2 = 4 times larger.
    loss2, _ = D.cwd_loss(student * 2.0, teacher * 2.0, tau=2.0)
    np.testing.assert_allclose(loss2, 4 * KL_34 / 2, rtol=1e-6)
    # Two identical examples: the sum doubles and so does N, the loss stays.
    loss_b, _ = D.cwd_loss(jnp.concatenate([student] * 2), jnp.concatenate([teacher] * 2))
    np.testing.assert_allclose(loss_b, loss, rtol=1e-6)


def _cwd_reference(student, teacher, tau):
    s = np.asarray(student, np.float64)
    t = np.asarray(teacher, np.float64)
    n, h, w, c = s.shape
    total = 0.0
    for i in range(n):
        for k in range(c):
            ps = np.exp(s[i, :, :, k] / tau)
            ps /= ps.sum()
            pt = np.exp(t[i, :, :, k] / tau)
            pt /= pt.sum()
            total += np.sum(pt * np.log(pt / ps))
    return tau**2 * total / (n * c)


@pytest.mark.parametrize("tau", [1.0, 4.0])
def test_cwd_matches_loop_reference(tau):
    s, t = _features(0, (2, 5, 3, 4)), _features(1, (2, 5, 3, 4))
    np.testing.assert_allclose(D.cwd_loss(s, t, tau)[0], _cwd_reference(s, t, tau), rtol=1e-5)


def test_cwd_zero_for_equal_and_shift_invariant():
    t = _features(2, (2, 4, 4, 3))
    np.testing.assert_allclose(D.cwd_loss(t, t, 2.0)[0], 0.0, atol=1e-7)
    # A per-channel offset does not change a channel's spatial softmax.
    np.testing.assert_allclose(D.cwd_loss(t + jnp.array([1.0, -3.0, 7.0]), t)[0], 0.0, atol=1e-6)


def test_cwd_teacher_gets_no_gradient_and_align():
    s, t = _features(3, (2, 4, 4, 3)), _features(4, (2, 4, 4, 6))
    with pytest.raises(ValueError, match="align"):
        D.cwd_loss(s, t)
    proj = _features(5, (3, 6))
    grad_fn = jax.jit(jax.grad(lambda s, t, p: D.cwd_loss(s, t, align=lambda x: x @ p)[0], argnums=(0, 1, 2)))
    g_s, g_t, g_p = grad_fn(s, t, proj)
    assert np.all(np.asarray(g_t) == 0.0)
    assert np.abs(np.asarray(g_s)).sum() > 0 and np.abs(np.asarray(g_p)).sum() > 0
    with pytest.raises(ValueError, match="spatial"):
        D.cwd_loss(s, t[:, :2], align=lambda x: x @ proj)


# ---------------------------------------------------------------------------------------------------------- KL


def test_kl_hand_computed_and_mean_over_leading_axes():
    teacher = jnp.array([np.log(3.0), 0.0])
    student = jnp.array([0.7, 0.7])
    np.testing.assert_allclose(D.kl_loss(student, teacher)[0], KL_34, rtol=1e-6)
    # [2, 2, K]: three pairs with KL_34 and one with KL 0 -> mean 3/4 KL_34.
    s = jnp.stack([jnp.stack([student, student]), jnp.stack([student, teacher])])
    t = jnp.broadcast_to(teacher, s.shape)
    loss, terms = D.kl_loss(s, t)
    np.testing.assert_allclose(loss, 0.75 * KL_34, rtol=1e-6)
    np.testing.assert_allclose(terms["kl"], loss)
    # Weights: keep only the pair with KL 0 and one with KL_34.
    w = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    np.testing.assert_allclose(D.kl_loss(s, t, weights=w)[0], 0.5 * KL_34, rtol=1e-6)
    np.testing.assert_allclose(D.kl_loss(s, t, weights=jnp.zeros((2, 2)))[0], 0.0)


def test_kl_tau_squared_scaling():
    # Scaling logits and tau by a leaves the distributions unchanged, so the loss scales by exactly a^2.
    s, t = _features(6, (3, 5, 7)), _features(7, (3, 5, 7))
    base = D.kl_loss(s, t, tau=1.5)[0]
    np.testing.assert_allclose(D.kl_loss(3.0 * s, 3.0 * t, tau=4.5)[0], 9.0 * base, rtol=1e-5)
    np.testing.assert_allclose(D.kl_loss(t, t, tau=3.0)[0], 0.0, atol=1e-7)


def test_kl_teacher_gets_no_gradient():
    s, t = _features(8, (4, 5)), _features(9, (4, 5))
    g_s, g_t = jax.grad(lambda s, t: D.kl_loss(s, t, 2.0)[0], argnums=(0, 1))(s, t)
    assert np.all(np.asarray(g_t) == 0.0)
    # d/dz_S of tau^2 KL(p_T || p_S(z_S / tau)) averaged over 4 rows = tau (p_S - p_T) / 4.
    expected = 2.0 * (jax.nn.softmax(s / 2.0) - jax.nn.softmax(t / 2.0)) / 4
    np.testing.assert_allclose(g_s, expected, rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------------------------------------- MGD


def test_mask_ratio_statistics():
    mask = D.random_spatial_mask(jax.random.key(0), (4, 64, 64), 0.65)
    assert mask.shape == (4, 64, 64) and set(np.unique(np.asarray(mask)).tolist()) <= {0.0, 1.0}
    # 16384 Bernoulli(0.65) draws: std of the fraction 0.0037.
    np.testing.assert_allclose(1.0 - float(mask.mean()), 0.65, atol=0.015)
    # Different examples get different masks.
    assert not np.array_equal(mask[0], mask[1])
    _, terms = D.mgd_loss(
        _features(10, (4, 32, 32, 2)), _features(11, (4, 32, 32, 2)), lambda x: x, jax.random.key(1), 0.3
    )
    np.testing.assert_allclose(terms["mgd_masked_fraction"], 0.3, atol=0.02)


def test_mgd_hand_computed():
    s, t = _features(12, (2, 8, 8, 3)), _features(13, (2, 8, 8, 3))
    key = jax.random.key(2)
    alpha = 0.5
    # No mask, identity generator: alpha * SSE / N.
    loss, terms = D.mgd_loss(s, t, lambda x: x, key, mask_ratio=0.0, alpha=alpha)
    np.testing.assert_allclose(loss, alpha * np.sum((np.asarray(s) - np.asarray(t)) ** 2) / 2, rtol=1e-6)
    np.testing.assert_allclose(terms["mgd"], loss)
    np.testing.assert_allclose(terms["mgd_masked_fraction"], 0.0)
    # Everything masked: the generator sees zeros.
    loss1, _ = D.mgd_loss(s, t, lambda x: x + 1.0, key, mask_ratio=1.0, alpha=alpha)
    np.testing.assert_allclose(loss1, alpha * np.sum((1.0 - np.asarray(t)) ** 2) / 2, rtol=1e-6)
    # General mask: the definition, with the mask drawn from the same key; shared across channels.
    mask = np.asarray(D.random_spatial_mask(key, (2, 8, 8), 0.5))[..., None]
    loss_m, _ = D.mgd_loss(s, t, lambda x: 2.0 * x, key, mask_ratio=0.5, alpha=alpha)
    expected = alpha * np.sum((2.0 * np.asarray(s) * mask - np.asarray(t)) ** 2) / 2
    np.testing.assert_allclose(loss_m, expected, rtol=1e-6)


def test_mgd_zero_when_generator_reproduces_teacher():
    t = _features(14, (2, 8, 8, 3))
    key = jax.random.key(3)
    np.testing.assert_allclose(D.mgd_loss(t, t, lambda x: x, key, mask_ratio=0.0)[0], 0.0)
    np.testing.assert_allclose(D.mgd_loss(t * 0.1, t, lambda x: t, key)[0], 0.0)


def test_mgd_head_align_and_gradients():
    head = MGDHead(3, 5, rngs=nnx.Rngs(0))
    s, t = _features(15, (2, 8, 8, 3)), _features(16, (2, 8, 8, 5))
    key = jax.random.key(4)
    generated = head(s, key, 0.65)
    assert generated.shape == t.shape
    loss, _ = D.mgd_loss(s, t, head.generate, key, 0.65, alpha=1e-2, align_fn=head.align)
    np.testing.assert_allclose(loss, 1e-2 * np.sum((np.asarray(generated) - np.asarray(t)) ** 2) / 2, rtol=1e-5)
    assert MGDHead(4, 4, rngs=nnx.Rngs(0)).align_conv is None

    def objective(head, s, t):
        return D.mgd_loss(s, t, head.generate, key, 0.65, align_fn=head.align)[0]

    g_head, g_s, g_t = nnx.grad(objective, argnums=(0, 1, 2))(head, s, t)
    assert np.all(np.asarray(g_t) == 0.0)
    assert np.abs(np.asarray(g_s)).sum() > 0
    leaves = jax.tree.leaves(nnx.state(g_head, nnx.Param))
    assert len(leaves) == 6 and all(np.abs(np.asarray(x)).sum() > 0 for x in leaves)  # align + 2 generator convs


def test_mgd_shape_errors():
    s, t = _features(17, (2, 8, 8, 3)), _features(18, (2, 8, 8, 5))
    with pytest.raises(ValueError, match="generator output"):
        D.mgd_loss(s, t, lambda x: x, jax.random.key(0))
    with pytest.raises(ValueError, match="spatial"):
        D.mgd_loss(s[:, :2], t, lambda x: x, jax.random.key(0))


# ------------------------------------------------------------------------------------------------ detector KL


def test_no_object_logit_is_conditioned_bernoulli():
    # K = 1: (sigmoid(z), 1 - sigmoid(z)).
    z = jnp.array([[-2.0], [0.3], [4.0]])
    q = jax.nn.softmax(D.with_no_object_logit(z), axis=-1)
    np.testing.assert_allclose(q[:, 0], jax.nn.sigmoid(z[:, 0]), rtol=1e-6)
    # K = 3: independent Bernoullis conditioned on "at most one class present", by enumeration.
    z = np.array([0.5, -1.0, 2.0])
    p = 1.0 / (1.0 + np.exp(-z))
    weights = {}
    for state in itertools.product([0, 1], repeat=3):
        if sum(state) <= 1:
            prob = np.prod([pk if sk else 1 - pk for pk, sk in zip(p, state, strict=True)])
            weights[state.index(1) if sum(state) else 3] = prob
    expected = np.array([weights[i] for i in range(4)])
    q = jax.nn.softmax(D.with_no_object_logit(jnp.asarray(z)))
    np.testing.assert_allclose(q, expected / expected.sum(), rtol=1e-5)


def _detector_output(key, batch, queries, classes):
    k1, k2, k3 = jax.random.split(jax.random.key(key), 3)
    logits = 2.0 * jax.random.normal(k1, (batch, queries, classes)) - 2.0
    centres = jax.random.uniform(k2, (batch, queries, 2), minval=0.2, maxval=0.8)
    sizes = jax.random.uniform(k3, (batch, queries, 2), minval=0.05, maxval=0.3)
    return DetectorOutput(logits=logits, boxes=jnp.concatenate([centres, sizes], -1), aux=(), features={})


def _permute_queries(out, seed):
    rng = np.random.default_rng(seed)
    perm = jnp.asarray(np.stack([rng.permutation(out.logits.shape[1]) for _ in range(out.logits.shape[0])]))
    take = lambda x: jnp.take_along_axis(x, perm[..., None], axis=1)  # noqa: E731
    return out.replace(logits=take(out.logits), boxes=take(out.boxes))


def test_detector_kl_zero_for_identical_and_for_permuted_student():
    teacher = _detector_output(20, 2, 6, 4)
    loss, terms = _detector_kl(teacher, teacher, 2.0)
    np.testing.assert_allclose(loss, 0.0, atol=1e-6)
    np.testing.assert_allclose(terms["detector_kl_pairs"], 12)
    # The student holding the teacher's predictions in another query order is matched back: still 0,
    # whereas a query-by-query KL is not.
    student = _permute_queries(teacher, 0)
    np.testing.assert_allclose(_detector_kl(student, teacher, 1.0)[0], 0.0, atol=1e-6)
    assert D.kl_loss(student.logits, teacher.logits)[0] > 0.1


@pytest.mark.parametrize("student_queries, top_k", [(6, None), (4, None), (8, 3)])
def test_detector_kl_invariant_to_teacher_query_permutation(student_queries, top_k):
    teacher = _detector_output(21, 2, 6, 4)
    student = _detector_output(22, 2, student_queries, 4)
    loss, terms = _detector_kl(student, teacher, 2.0, top_k=top_k)
    assert loss > 0
    np.testing.assert_allclose(terms["detector_kl_pairs"], 2 * min(student_queries, top_k or 6))
    for seed in range(3):
        permuted, _ = _detector_kl(student, _permute_queries(teacher, seed), 2.0, top_k=top_k)
        np.testing.assert_allclose(permuted, loss, rtol=1e-5)


def test_detector_kl_single_query_by_hand_and_gradients():
    # One query each: no matching choice; the loss is tau^2 KL of the (K+1)-way distributions.
    t_logits = jnp.array([[[1.0, -2.0]]])
    s_logits = jnp.array([[[-0.5, 0.5]]])
    boxes = jnp.array([[[0.5, 0.5, 0.2, 0.2]]])
    tau = 1.5
    loss, _ = _detector_kl({"logits": s_logits, "boxes": boxes}, {"logits": t_logits, "boxes": boxes}, tau)
    pt = jax.nn.softmax(jnp.array([1.0, -2.0, 0.0]) / tau)
    ps = jax.nn.softmax(jnp.array([-0.5, 0.5, 0.0]) / tau)
    np.testing.assert_allclose(loss, tau**2 * np.sum(pt * np.log(pt / ps)), rtol=1e-5)

    student, teacher = _detector_output(23, 2, 6, 4), _detector_output(24, 2, 6, 4)
    grads = jax.jit(jax.grad(lambda s, t: D.detector_kl_loss(s, t)[0], argnums=(0, 1)))(student, teacher)
    assert np.all(np.asarray(grads[1].logits) == 0.0) and np.all(np.asarray(grads[1].boxes) == 0.0)
    assert np.abs(np.asarray(grads[0].logits)).sum() > 0


# ------------------------------------------------------------------------------------------------------- taps


def test_feature_taps():
    feats = {"stage2": jnp.zeros(1), "stage3": jnp.ones(1), "neck": jnp.full(1, 2.0)}
    taps = D.feature_taps(feats, ["neck", "stage2"])
    assert list(taps) == ["neck", "stage2"] and float(taps["neck"][0]) == 2.0
    assert list(D.feature_taps(feats, "stage3")) == ["stage3"]
    out = DetectorOutput(logits=jnp.zeros(1), boxes=jnp.zeros(1), aux=(), features=feats)
    assert list(D.feature_taps(out, ["stage3"])) == ["stage3"]
    with pytest.raises(KeyError, match=r"stage9.*available: \['neck', 'stage2', 'stage3'\]"):
        D.feature_taps(feats, ["stage2", "stage9"])
