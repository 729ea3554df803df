"""Optimizers from config: AdamW with linear warm-up, cosine decay and global-norm clipping."""

from __future__ import annotations

import ml_collections
import optax


def make_optimizer(config: ml_collections.ConfigDict, num_steps: int) -> optax.GradientTransformation:
    """``config``: learning_rate, warmup_steps, weight_decay, clip_norm (0 = none), b1, b2.

    The schedule warms up linearly to ``learning_rate`` over ``warmup_steps`` and decays by a
    cosine to 1% of it at ``num_steps`` (the DETR family trains with AdamW and clipping at 0.1).
    """
    if config.learning_rate <= 0 or config.warmup_steps < 0:
        raise ValueError(
            f"learning_rate must be > 0 and warmup_steps >= 0; got {config.learning_rate}, {config.warmup_steps}."
        )
    schedule = optax.warmup_cosine_decay_schedule(
        0.0,
        config.learning_rate,
        warmup_steps=max(1, min(config.warmup_steps, num_steps - 1)),
        decay_steps=max(num_steps, 2),
        end_value=0.01 * config.learning_rate,
    )
    adamw = optax.adamw(
        schedule, b1=config.get("b1", 0.9), b2=config.get("b2", 0.999), weight_decay=config.weight_decay
    )
    if config.clip_norm:
        return optax.chain(optax.clip_by_global_norm(config.clip_norm), adamw)
    return adamw
