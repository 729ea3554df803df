"""Optimizers from config: AdamW with linear warm-up, cosine decay and global-norm clipping."""

from __future__ import annotations

import ml_collections
import optax


def make_optimizer(config: ml_collections.ConfigDict, num_steps: int) -> optax.GradientTransformation:
    """``config``: learning_rate, warmup_steps, weight_decay, clip_norm (0 = none), b1, b2, and
    accumulate (gradient accumulation: one update every ``accumulate`` steps, averaging their
    gradients; ``num_steps`` counts updates times ``accumulate``).

    The schedule warms up linearly to ``learning_rate`` over ``warmup_steps`` and decays by a
    cosine to 1% of it at ``num_steps`` (the DETR family trains with AdamW and clipping at 0.1).
    """
    accumulate = int(config.get("accumulate", 1))
    if accumulate < 1:
        raise ValueError(f"accumulate must be >= 1; got {accumulate}.")
    updates = max(num_steps // accumulate, 2)
    if config.learning_rate <= 0 or config.warmup_steps < 0:
        raise ValueError(
            f"learning_rate must be > 0 and warmup_steps >= 0; got {config.learning_rate}, {config.warmup_steps}."
        )
    schedule = optax.warmup_cosine_decay_schedule(
        0.0,
        config.learning_rate,
        warmup_steps=max(1, min(config.warmup_steps, updates - 1)),
        decay_steps=updates,
        end_value=0.01 * config.learning_rate,
    )
    adamw = optax.adamw(
        schedule, b1=config.get("b1", 0.9), b2=config.get("b2", 0.999), weight_decay=config.weight_decay
    )
    tx = optax.chain(optax.clip_by_global_norm(config.clip_norm), adamw) if config.clip_norm else adamw
    return optax.MultiSteps(tx, every_k_schedule=accumulate) if accumulate > 1 else tx
