"""TMTS training step: the batch sharded over 8 devices gives the single-device update."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from turbjax.models.tmts import tmts_config
from turbjax.train import data_mesh, replicate, shard_batch
from turbjax.train.steps import init_state, make_step
from turbjax.train.tmts import build_model, make_loss, make_optimizer

MICRO = dict(base_channels=4, num_frames=3, fusion_blocks=1, rdb_layers=1, spynet_levels=2, spynet_widths=(4, 4),
             deform_groups=2, tstsa_heads=2)  # fmt: skip


def test_sharded_tmts_step_equals_single_device_step():
    config = ml_collections.ConfigDict(
        dict(
            optim=dict(learning_rate=1e-3, end_learning_rate=1e-6, warmup_steps=0, b1=0.9, b2=0.99, clip_norm=1.0),
            loss=dict(pixel_weight=0.8, tilt_weight=0.2, eps=1e-3),
        )
    )
    tx = make_optimizer(config.optim, 10)
    graphdef, state = init_state(build_model(tmts_config("tiny", **MICRO), 0), tx)
    step = make_step(graphdef, tx, make_loss(config))
    rng = np.random.default_rng(0)
    clean = rng.uniform(size=(8, 16, 16, 3)).astype(np.float32)
    clip = np.clip(clean[:, None] + 0.05 * rng.normal(size=(8, 3, 16, 16, 3)), 0, 1).astype(np.float32)
    batch = {"clip": jnp.asarray(clip), "clean": jnp.asarray(clean), "tilt_only": jnp.asarray(clip[:, 1])}
    single_state, single = step(state, batch)
    mesh = data_mesh(8)
    sharded_state, sharded = step(replicate(state, mesh), shard_batch(batch, mesh))
    assert len(jax.tree.leaves(sharded_state.params)[0].sharding.device_set) == 8
    for name in single:
        np.testing.assert_allclose(float(sharded[name]), float(single[name]), rtol=1e-4, err_msg=name)
    for a, b in zip(jax.tree.leaves(single_state.params), jax.tree.leaves(sharded_state.params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-3, atol=1e-5)
    assert float(single["loss"]) > 0 and np.isfinite(float(single["grad_norm"]))
