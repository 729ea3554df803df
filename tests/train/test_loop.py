"""The generic loop: a run stopped and resumed from its checkpoint ends where an uninterrupted run ends."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax

from turbjax.train import TrainState, run_training


def _problem():
    """Least squares y = X w on fixed batches; batch i depends only on i (deterministic data order)."""
    true_w = jnp.array([1.5, -2.0, 0.5])
    tx = optax.sgd(0.1, momentum=0.5)

    def batches(start):
        step = start
        while True:
            x = jax.random.normal(jax.random.key(step), (16, 3))
            yield {"x": x, "y": x @ true_w}
            step += 1

    @jax.jit
    def train_step(state, batch):
        def loss(w):
            return jnp.mean((batch["x"] @ w - batch["y"]) ** 2)

        value, grad = jax.value_and_grad(loss)(state.params)
        updates, opt_state = tx.update(grad, state.opt_state, state.params)
        return state.replace(
            step=state.step + 1, params=optax.apply_updates(state.params, updates), opt_state=opt_state
        ), {"loss": value}

    w0 = jnp.zeros(3)
    state = TrainState(step=jnp.zeros((), jnp.int32), params=w0, model_state={}, opt_state=tx.init(w0))
    return state, train_step, batches


def test_resumed_run_equals_uninterrupted_run(tmp_path):
    state, step, batches = _problem()
    kwargs = dict(train_step=step, batches=batches, log_every=5, checkpoint_every=5, progress=False)
    full, history = run_training(workdir=tmp_path / "full", state=state, num_steps=30, **kwargs)
    # "Killed" after 15 steps (the last checkpoint), then re-run to 30 from a fresh initial state.
    run_training(workdir=tmp_path / "resumed", state=state, num_steps=15, **kwargs)
    resumed, resumed_history = run_training(workdir=tmp_path / "resumed", state=state, num_steps=30, **kwargs)
    assert int(resumed.step) == 30
    np.testing.assert_array_equal(np.asarray(resumed.params), np.asarray(full.params))
    np.testing.assert_allclose(np.asarray(full.params), [1.5, -2.0, 0.5], atol=1e-2)  # it actually trains
    assert [r["step"] for r in resumed_history["train"]] == [5, 10, 15, 20, 25, 30]
    saved = json.loads((tmp_path / "resumed" / "history.json").read_text())
    assert saved["train"][-1]["loss"] == resumed_history["train"][-1]["loss"] < history["train"][0]["loss"]
