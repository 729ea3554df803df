"""Trainable parts of feature distillation: the MGD align conv and generator (Flax NNX).

Losses own no parameters (``turbjax.losses.distill`` is pure), but Masked Generative Distillation (Yang et
al., ECCV 2022) needs two small trainable pieces that belong to the *student* side of the objective and are
optimised with it, then thrown away after training:

- ``align``: a 1x1 conv from the student's width to the teacher's (identity when the widths agree);
- ``generate``: conv3x3 -> ReLU -> conv3x3 at the teacher's width, which regenerates the teacher's features
  from the masked student features.

Use with the pure loss::

    head = MGDHead(student_channels=32, teacher_channels=64, rngs=nnx.Rngs(0))
    loss, terms = mgd_loss(s, t, head.generate, key, mask_ratio=0.65, align_fn=head.align)

``head(s, key, mask_ratio)`` returns the generated map with the same mask, for inspection or custom losses.
"""

from __future__ import annotations

import jax
from flax import nnx

from turbjax.losses.distill import MGD_MASK_RATIO, random_spatial_mask


class MGDHead(nnx.Module):
    """MGD align + generator for one feature tap.

    ``[..., H, W, student_channels] -> [..., H, W, teacher_channels]``. The generator convs have biases and
    "SAME" padding (the reference uses zero padding 1 for 3x3 kernels), so spatial size is preserved.

    Args:
      student_channels: width of the student map.
      teacher_channels: width of the teacher map (and of the generator).
      rngs: parameter initialisation streams.
    """

    def __init__(self, student_channels: int, teacher_channels: int, *, rngs: nnx.Rngs):
        self.student_channels = student_channels
        self.teacher_channels = teacher_channels
        self.align_conv = (
            nnx.Conv(student_channels, teacher_channels, (1, 1), rngs=rngs)
            if student_channels != teacher_channels
            else None
        )
        self.generator_in = nnx.Conv(teacher_channels, teacher_channels, (3, 3), padding="SAME", rngs=rngs)
        self.generator_out = nnx.Conv(teacher_channels, teacher_channels, (3, 3), padding="SAME", rngs=rngs)

    def align(self, student: jax.Array) -> jax.Array:
        """``f_align``: ``[..., H, W, Cs] -> [..., H, W, Ct]`` (1x1 conv, or the identity when ``Cs == Ct``)."""
        if student.shape[-1] != self.student_channels:
            raise ValueError(f"MGDHead expects {self.student_channels} student channels, got {student.shape}")
        return student if self.align_conv is None else self.align_conv(student)

    def generate(self, masked: jax.Array) -> jax.Array:
        """Generator ``G``: conv3x3 -> ReLU -> conv3x3, ``[..., H, W, Ct] -> [..., H, W, Ct]``."""
        return self.generator_out(nnx.relu(self.generator_in(masked)))

    def __call__(self, student: jax.Array, key: jax.Array, mask_ratio: float | jax.Array = MGD_MASK_RATIO) -> jax.Array:
        """Generated teacher-like features ``G(f_align(S) * M)`` with ``M = random_spatial_mask(key, ...)``.

        The same ``key`` and ``mask_ratio`` give the same mask as ``mgd_loss``.
        """
        aligned = self.align(student)
        mask = random_spatial_mask(key, aligned.shape[:-1], mask_ratio)
        return self.generate(aligned * mask[..., None].astype(aligned.dtype))
