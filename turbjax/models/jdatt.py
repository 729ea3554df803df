"""The JDATT student bundle: a student restorer, a student detector and the trainable distillation
heads (MGD align + generator per tapped map, CWD 1x1 aligns where widths differ), one NNX module so
that one optimizer state covers everything the joint objective trains."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from turbjax.models.detector import Detector
from turbjax.models.distill_heads import MGDHead
from turbjax.models.restorers import Restorer


def tap_key(model: str, name: str) -> str:
    """Attribute-safe key of a feature tap: ('restorer', 'enhance2') -> 'restorer__enhance2'."""
    return f"{model}__{name}"


def feature_widths(model: nnx.Module, example: jax.Array) -> dict[str, int]:
    """Channels of every named feature map of ``model(example)``, computed abstractly (no FLOPs)."""
    graphdef, state = nnx.split(model)
    shapes = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x).features, state, example)
    return {name: int(shape.shape[-1]) for name, shape in shapes.items()}


class JointStudent(nnx.Module):
    """Student restorer + student detector + distillation heads.

    Args:
      restorer, detector: the student models.
      taps: ``{'restorer': names, 'detector': names}`` of the feature maps distilled by CWD and MGD.
      student_widths, teacher_widths: ``{tap_key: channels}`` of those maps in student and teacher.
    """

    def __init__(
        self,
        restorer: Restorer,
        detector: Detector,
        taps: Mapping[str, Sequence[str]],
        student_widths: Mapping[str, int],
        teacher_widths: Mapping[str, int],
        *,
        rngs: nnx.Rngs,
    ):
        self.restorer = restorer
        self.detector = detector
        keys = [tap_key(model, name) for model in ("restorer", "detector") for name in taps.get(model, ())]
        self.mgd = nnx.Dict({k: MGDHead(student_widths[k], teacher_widths[k], rngs=rngs) for k in keys})
        self.cwd_align = nnx.Dict(
            {
                k: nnx.Conv(student_widths[k], teacher_widths[k], (1, 1), rngs=rngs)
                for k in keys
                if student_widths[k] != teacher_widths[k]
            }
        )

    def align_for_cwd(self, key: str, feature: jax.Array) -> jax.Array:
        return self.cwd_align[key](feature) if key in self.cwd_align else feature


def build_joint_student(
    restorer: Restorer,
    detector: Detector,
    teacher_restorer: Restorer,
    teacher_detector: Detector,
    taps: Mapping[str, Sequence[str]],
    clip_shape: tuple[int, ...],
    *,
    rngs: nnx.Rngs,
) -> JointStudent:
    """A JointStudent whose heads match the widths of the tapped maps of students and teachers.

    ``clip_shape``: ``(T, H, W, 3)`` of one input window.
    """
    clip = jnp.zeros((1, *clip_shape), jnp.float32)
    image = jnp.zeros((1, *clip_shape[1:]), jnp.float32)
    widths = {}
    for role, (r, d) in (("student", (restorer, detector)), ("teacher", (teacher_restorer, teacher_detector))):
        found = {tap_key("restorer", n): c for n, c in feature_widths(r, clip).items()}
        found.update({tap_key("detector", n): c for n, c in feature_widths(d, image).items()})
        widths[role] = found
    for model, names in taps.items():
        for name in names:
            if tap_key(model, name) not in widths["student"]:
                available = sorted(k.split("__", 1)[1] for k in widths["student"] if k.startswith(model))
                raise KeyError(f"no {model} feature {name!r} to distil; available: {available}")
    return JointStudent(restorer, detector, taps, widths["student"], widths["teacher"], rngs=rngs)
