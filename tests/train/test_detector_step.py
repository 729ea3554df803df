"""Detector training step: the batch sharded over 8 devices gives the single-device update."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from turbjax.models import Detector, detector_config
from turbjax.train import data_mesh, replicate, shard_batch
from turbjax.train.detector import make_train_step, to_detections
from turbjax.train.optim import make_optimizer
from turbjax.train.steps import init_state

MICRO = dict(num_queries=8, widths=(8, 8, 16, 16), hidden_dim=16, ffn_dim=32, num_decoder_layers=2, num_heads=2)


def _batch(n=8, size=32, m=3):
    rng = np.random.default_rng(0)
    centres = rng.uniform(0.3, 0.7, (n, m, 2))
    sizes = rng.uniform(0.1, 0.3, (n, m, 2))
    return {
        "image": jnp.asarray(rng.uniform(size=(n, size, size, 3)), jnp.float32),
        "targets": {
            "labels": jnp.asarray(rng.integers(0, 4, (n, m)), jnp.int32),
            "boxes": jnp.asarray(np.concatenate([centres, sizes], -1), jnp.float32),
            "num_boxes": jnp.asarray([0, 1, 2, 3, 3, 2, 1, 0], jnp.int32),
        },
    }


def test_sharded_step_equals_single_device_step():
    config = ml_collections.ConfigDict(dict(learning_rate=1e-3, warmup_steps=0, weight_decay=1e-4, clip_norm=0.1))
    tx = make_optimizer(config, 10)
    graphdef, state = init_state(Detector(detector_config("tiny", 4, **MICRO), rngs=nnx.Rngs(0)), tx)
    step = make_train_step(graphdef, tx)
    batch = _batch()
    single_state, single = step(state, batch)
    mesh = data_mesh(8)
    sharded_state, sharded = step(replicate(state, mesh), shard_batch(batch, mesh))
    assert len(sharded_state.params["class_head"]["kernel"].sharding.device_set) == 8
    for name in single:
        np.testing.assert_allclose(float(sharded[name]), float(single[name]), rtol=1e-5, err_msg=name)
    for a, b in zip(jax.tree.leaves(single_state.params), jax.tree.leaves(sharded_state.params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
    assert float(single["loss"]) > 0 and np.isfinite(float(single["grad_norm"]))


def test_detections_are_top_scores_in_pixels():
    logits = jnp.asarray([[[4.0, -4.0], [-4.0, 0.0], [-9.0, -9.0]]])  # [1, Q=3, K=2]
    boxes = jnp.asarray([[[0.5, 0.5, 0.2, 0.4], [0.25, 0.25, 0.1, 0.1], [0.9, 0.9, 0.1, 0.1]]])
    output = type("Out", (), {"logits": logits, "boxes": boxes})()
    (first,) = to_detections(output, (100, 200), top_k=2)
    np.testing.assert_array_equal(first["labels"], [0, 1])
    np.testing.assert_allclose(first["scores"], [1 / (1 + np.exp(-4.0)), 0.5], rtol=1e-6)
    np.testing.assert_allclose(first["boxes"][0], [80.0, 30.0, 120.0, 70.0], rtol=1e-6)
