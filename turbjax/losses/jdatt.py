"""The JDATT objective: one differentiable function of (student, teacher outputs, batch, key).

    L = w_c Charbonnier(R_S(x), y) + w_d Det(D_S(R_S(x)), boxes)
        + w_cwd sum_taps CWD(f_S, f_T) + w_mgd sum_taps MGD(f_S, f_T) + w_kl KL(D_S(R_S(x)), D_T(R_T(x)))

R: restorers, D: detectors, S/T: student/teacher, x the degraded window, y the clean centre frame;
taps are named feature maps of restorer and detector (``turbjax.models.jdatt``). Teachers enter
as outputs under ``stop_gradient`` (frozen inputs, not parameters). ``mode`` picks the terms:

- 'joint': every term; the student detector sees the student restorer's output, so the detection,
  detector-feature and KL terms send gradients into the restorer (the point of JDATT);
- 'restorer': stage 1 of separate distillation: Charbonnier + restorer-feature terms only;
- 'detector': stage 2: the student restorer's output is a constant (stop_gradient) and only the
  detection, detector-feature and KL terms remain.

The seed gives no term weights; ours are in ``JdattWeights`` and in every config.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from turbjax.losses.detection import DetectionLossWeights, detection_loss
from turbjax.losses.distill import cwd_loss, detector_kl_loss, mgd_loss
from turbjax.losses.restoration import charbonnier_loss

MODES = ("joint", "restorer", "detector")


@dataclasses.dataclass(frozen=True)
class JdattWeights:
    """Term weights and distillation hyper-parameters (static).

    Attributes:
      charbonnier, detection, cwd, mgd, kl: weights of the five terms.
      tau_cwd, tau_kl: temperatures of CWD and of the logit KL.
      mgd_alpha, mask_ratio: MGD's alpha (inside its sum) and masked fraction lambda (0.65 in the seed).
      charbonnier_eps: Charbonnier epsilon.
      detection: the detection loss' own term / matching weights.
    """

    charbonnier: float = 1.0
    detection: float = 1.0
    cwd: float = 1.0
    mgd: float = 1.0
    kl: float = 1.0
    tau_cwd: float = 1.0
    tau_kl: float = 1.0
    mgd_alpha: float = 2e-5
    mask_ratio: float = 0.65
    charbonnier_eps: float = 1e-3
    detection_weights: DetectionLossWeights = DetectionLossWeights()


@struct.dataclass
class TeacherOutputs:
    """What the frozen teachers produced on a batch.

    Attributes:
      image: [B, H, W, 3] teacher-restored centre frames.
      restorer_features, detector_features: tapped NHWC maps (restorer on the window, detector on
        the teacher-restored frame).
      logits, boxes: the teacher detector's predictions [B, Q_T, K], [B, Q_T, 4] on that frame.
    """

    image: jax.Array
    restorer_features: dict[str, jax.Array]
    detector_features: dict[str, jax.Array]
    logits: jax.Array
    boxes: jax.Array


def teacher_outputs(restorer, detector, clip: jax.Array, taps: Mapping[str, Sequence[str]]) -> TeacherOutputs:
    """Run the teachers on a window batch [B, T, H, W, 3] and keep what the objective reads."""
    restored = restorer(clip)
    image = jnp.clip(restored.image, 0.0, 1.0)
    detected = detector(image)
    return jax.lax.stop_gradient(
        TeacherOutputs(
            image=image,
            restorer_features={n: restored.features[n] for n in taps.get("restorer", ())},
            detector_features={n: detected.features[n] for n in taps.get("detector", ())},
            logits=detected.logits,
            boxes=detected.boxes,
        )
    )


def jdatt_loss(
    student: Any,
    teacher: TeacherOutputs,
    batch: Mapping[str, Any],
    key: jax.Array,
    *,
    taps: Mapping[str, Sequence[str]],
    weights: JdattWeights = JdattWeights(),
    mode: str = "joint",
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The JDATT objective for ``student`` (a ``turbjax.models.jdatt.JointStudent``).

    batch: ``clip`` [B, T, H, W, 3] degraded window, ``clean`` [B, H, W, 3] centre frame, ``targets``
    (DETR targets of ``turbjax.losses.detection_loss``). Returns (loss, terms), terms by name:
    charbonnier, detection, cwd, mgd, kl and their per-tap parts.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}; got {mode!r}.")
    teacher = jax.lax.stop_gradient(teacher)
    terms: dict[str, jax.Array] = {}
    zero = jnp.zeros((), jnp.float32)
    total = zero
    restored = student.restorer(batch["clip"])
    keys = iter(jax.random.split(key, 64))

    def feature_terms(model: str, student_maps: Mapping[str, jax.Array], teacher_maps: Mapping[str, jax.Array]):
        cwd_sum, mgd_sum = zero, zero
        for name in taps.get(model, ()):
            tap = f"{model}__{name}"
            s, t = student_maps[name], teacher_maps[name]
            cwd, _ = cwd_loss(student.align_for_cwd(tap, s), t, weights.tau_cwd)
            head = student.mgd[tap]
            mgd, _ = mgd_loss(
                s, t, head.generate, next(keys), weights.mask_ratio, weights.mgd_alpha, align_fn=head.align
            )
            terms[f"cwd_{tap}"], terms[f"mgd_{tap}"] = cwd, mgd
            cwd_sum, mgd_sum = cwd_sum + cwd, mgd_sum + mgd
        return cwd_sum, mgd_sum

    cwd_total, mgd_total = zero, zero
    if mode in ("joint", "restorer"):
        charb, _ = charbonnier_loss(restored.image, batch["clean"], weights.charbonnier_eps)
        terms["charbonnier"] = charb
        total = total + weights.charbonnier * charb
        cwd, mgd = feature_terms("restorer", restored.features, teacher.restorer_features)
        cwd_total, mgd_total = cwd_total + cwd, mgd_total + mgd
    if mode in ("joint", "detector"):
        image = jnp.clip(restored.image, 0.0, 1.0)
        if mode == "detector":
            image = jax.lax.stop_gradient(image)
        detected = student.detector(image)
        det, _ = detection_loss(detected, batch["targets"], weights=weights.detection_weights)
        kl, _ = detector_kl_loss(detected, {"logits": teacher.logits, "boxes": teacher.boxes}, weights.tau_kl)
        cwd, mgd = feature_terms("detector", detected.features, teacher.detector_features)
        cwd_total, mgd_total = cwd_total + cwd, mgd_total + mgd
        terms["detection"], terms["kl"] = det, kl
        total = total + weights.detection * det + weights.kl * kl
    terms["cwd"], terms["mgd"] = cwd_total, mgd_total
    total = total + weights.cwd * cwd_total + weights.mgd * mgd_total
    terms["loss"] = total
    return total, terms
