"""An embedded detection dataset for "detection under turbulence": procedural objects on the embedded scenes.

Why: the JDATT experiments need images with exact boxes that can be degraded by the simulator, on any
machine, without downloading COCO. Each scene composites 1..``max_objects`` procedurally drawn objects of
``DETECTION_CLASSES`` onto a crop of one of the scikit-image scenes of ``turbjax.data.samples``; each clip
adds a slow camera pan and slow object motion; ``degrade_scenes`` turns clips into ET-Turb frozen-flow
videos (``turbjax.physics.synthesize_video`` with ``sample_et_turb_params`` draws), jitted and vmapped.

Objects. A class is a drawing in a local frame ``(u, v)`` in [-1, 1]^2 (u right, v down) made of a few
parts (e.g. body, windows, wheels), each with its own colour and texture (flat, stripes, checker, smooth
noise or gradient, evaluated in the local frame so that it turns with the object). The pose maps pixels to
the local frame: centre (px), half size (px), aspect (x / y stretch), rotation (full turn for top views
and symmetric shapes, +-20 deg for upright side views) and a mirror. Objects are rasterised with
``SUPERSAMPLE`` x ``SUPERSAMPLE`` samples per pixel and box-filtered down, so the alpha (coverage) and the
premultiplied colour are anti-aliased, textures included. Compositing is "over", in drawing order.

Boxes. Pixel (i, j) covers [j, j + 1) x [i, i + 1); a box is ``(x0, y0, x1, y1)`` in those edge
coordinates (so ``x1 - x0`` is a width in px). An object's box is the tight box of the pixels where its
*visible* alpha (its own alpha times the transparency of every object drawn over it) exceeds
``BOX_ALPHA_THRESHOLD`` = 0.5, i.e. the pixels it covers at least half of, after occlusion (the modal
box, as in COCO). Without occluders it is the tight box of its own alpha mask rendered alone (> 0.5).

Occlusion rule. An object is removed from the scene (not drawn, not labelled) if, in any frame of the
clip, its visible area (sum of visible alpha, px^2) is below ``MIN_VISIBLE_FRACTION`` = 0.5 of its own
area, or fewer than ``MIN_BOX_PIXELS`` pixels pass the box threshold. Removing an object only uncovers
the others, so one pass suffices and nothing in the image is an unlabelled object of these classes
(the scenes themselves contain unlabelled real things: a face, a rocket, coins, which act as clutter).
Placement also avoids heavy overlaps up front (the box intersection with an earlier object stays below
30% of the smaller box), and every object stays inside the image over the whole clip.

Turbulence and boxes. Boxes (and labels) are those of the clean frame, as in the JDATT seed where labels
come from the clean images: the tilt moves pixels by ~0.5-4 px (ET-Turb Table 1, 5 um pixels) and the
blur spreads them, but the ground truth stays the clean geometry.

Splits. ``train`` draws backgrounds from ``TRAIN_SCENES`` and ``test`` from the held-out ``TEST_SCENES``
(the same split as the ET-Turb video dataset); the random stream of example i is (seed, split, i).
"""

from __future__ import annotations

import colorsys
import dataclasses
import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from turbjax import physics as P
from turbjax.data.generate import VideoSpec, example_keys, synthesize_example
from turbjax.data.samples import EMBEDDED_SCENES, _load
from turbjax.data.sources import _resize_square

DETECTION_CLASSES: tuple[str, ...] = ("vehicle", "person", "aircraft", "ship", "sign", "house", "star", "drone")
TRAIN_SCENES: tuple[str, ...] = (
    "astronaut",
    "rocket",
    "camera",
    "brick",
    "grass",
    "gravel",
    "coins",
    "hubble_deep_field",
)
TEST_SCENES: tuple[str, ...] = ("chelsea", "coffee")
SPLITS: tuple[str, ...] = ("train", "test")

SUPERSAMPLE = 4  # samples per pixel along each axis when rasterising objects
BOX_ALPHA_THRESHOLD = 0.5  # a pixel belongs to an object's box if its visible alpha exceeds this
MIN_VISIBLE_FRACTION = 0.5  # objects less visible than this (visible / own area) in any frame are removed
MIN_BOX_PIXELS = 4  # ... and so are objects with fewer pixels above BOX_ALPHA_THRESHOLD
MAX_OVERLAP = 0.3  # placement: box intersection / smaller box area allowed with an earlier object
SCALE_RANGE = (0.07, 0.22)  # object half size / image size, drawn log-uniformly
ASPECT_RANGE = (0.75, 1.33)  # x / y stretch of the local frame
BACKGROUND_ZOOMS = (1.0, 1.5, 2.0)  # scene side / view side before cropping (more zoom: more detail)
BACKGROUND_PAD = 16  # px around the view, room for the camera pan
DEFAULT_SETTINGS = P.SynthesisSettings(blur_pad=16)  # suits 48-128 px frames


# ----------------------------------------------------------------------------------------------------------
# Drawing primitives on local coordinates (u, v): boolean masks of the same shape.


def _ellipse(u, v, cu, cv, ru, rv):
    return ((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2 <= 1.0


def _rect(u, v, u0, v0, u1, v1, radius=0.0):
    """Axis-aligned rectangle [u0, u1] x [v0, v1] with corners rounded by ``radius``."""
    hu, hv = (u1 - u0) / 2, (v1 - v0) / 2
    du = np.maximum(np.abs(u - (u0 + u1) / 2) - (hu - radius), 0.0)
    dv = np.maximum(np.abs(v - (v0 + v1) / 2) - (hv - radius), 0.0)
    inside = (np.abs(u - (u0 + u1) / 2) <= hu) & (np.abs(v - (v0 + v1) / 2) <= hv)
    return inside & (du**2 + dv**2 <= radius**2 + 1e-12)


def _polygon(u, v, points):
    """Even-odd rule for a simple polygon [(u, v), ...]."""
    inside = np.zeros(u.shape, bool)
    pts = np.asarray(points, np.float64)
    for (ua, va), (ub, vb) in zip(pts, np.roll(pts, -1, axis=0), strict=True):
        if va == vb:
            continue
        crosses = (va > v) != (vb > v)
        u_cross = ua + (v - va) * (ub - ua) / (vb - va)
        inside ^= crosses & (u < u_cross)
    return inside


def _segment(u, v, a, b, half_width):
    """Capsule: points within ``half_width`` of the segment a-b."""
    (ua, va), (ub, vb) = a, b
    du, dv = ub - ua, vb - va
    s = np.clip(((u - ua) * du + (v - va) * dv) / (du * du + dv * dv), 0.0, 1.0)
    return (u - ua - s * du) ** 2 + (v - va - s * dv) ** 2 <= half_width**2


# ----------------------------------------------------------------------------------------------------------
# Classes: draw(u, v, p) -> part map (int8, 0 = outside), p = 4 uniform numbers varying the shape.
# Every drawing stays inside [-1, 1]^2 (checked by the tests).


def _draw_vehicle(u, v, p):
    part = np.zeros(u.shape, np.int8)
    roof, front = -0.55 - 0.12 * p[1], 0.25 + 0.3 * p[0]
    part[_rect(u, v, -1.0, -0.15, 1.0, 0.45, 0.15)] = 1
    part[_polygon(u, v, [(-0.65, -0.14), (-0.42, roof), (front - 0.1, roof), (front + 0.15, -0.14)])] = 1
    part[_polygon(u, v, [(-0.52, -0.2), (-0.36, roof + 0.1), (front - 0.14, roof + 0.1), (front + 0.02, -0.2)])] = 2
    wheels = _ellipse(u, v, -0.58, 0.5, 0.27, 0.27) | _ellipse(u, v, 0.58, 0.5, 0.27, 0.27)
    part[wheels] = 3
    part[_ellipse(u, v, -0.58, 0.5, 0.1, 0.1) | _ellipse(u, v, 0.58, 0.5, 0.1, 0.1)] = 4
    return part


def _draw_person(u, v, p):
    part = np.zeros(u.shape, np.int8)
    stride, arm_l, arm_r = 0.03 + 0.2 * p[0], 0.05 + 0.35 * p[1], 0.05 + 0.35 * p[2]
    part[_segment(u, v, (-0.12, 0.2), (-0.12 - stride, 0.9), 0.1)] = 2
    part[_segment(u, v, (0.12, 0.2), (0.12 + stride, 0.9), 0.1)] = 2
    part[_rect(u, v, -0.3, -0.55, 0.3, 0.3, 0.12)] = 1
    part[_segment(u, v, (-0.3, -0.45), (-0.3 - arm_l, 0.15), 0.08)] = 1
    part[_segment(u, v, (0.3, -0.45), (0.3 + arm_r, 0.15), 0.08)] = 1
    part[_ellipse(u, v, 0.0, -0.76, 0.17, 0.2)] = 3
    return part


def _draw_aircraft(u, v, p):
    part = np.zeros(u.shape, np.int8)
    sweep, span = 0.3 * p[0], 0.75 + 0.2 * p[1]
    wings = [(-0.12, -0.25), (0.12, -0.25), (span, 0.05 + sweep), (span, 0.22 + sweep), (0.12, 0.15)]
    wings += [(-0.12, 0.15), (-span, 0.22 + sweep), (-span, 0.05 + sweep)]
    tail = [(-0.05, 0.55), (0.05, 0.55), (0.38, 0.8), (0.38, 0.92), (0.05, 0.84), (-0.05, 0.84), (-0.38, 0.92)]
    tail += [(-0.38, 0.8)]
    part[_polygon(u, v, wings) | _polygon(u, v, tail)] = 2
    part[_ellipse(u, v, 0.0, 0.0, 0.14, 0.95)] = 1
    part[_ellipse(u, v, 0.0, -0.6, 0.07, 0.14)] = 3
    return part


def _draw_ship(u, v, p):
    part = np.zeros(u.shape, np.int8)
    shift = 0.25 * p[0]
    hull = _polygon(u, v, [(-1.0, 0.05), (0.98, 0.05), (0.72, 0.5), (-0.82, 0.5)])
    part[hull] = 1
    part[hull & (v > 0.36)] = 2
    part[_rect(u, v, -0.8 + shift, -0.35, -0.62 + shift, 0.06)] = 2
    part[_rect(u, v, -0.5 + shift, -0.3, 0.15 + shift, 0.06) | _rect(u, v, -0.35 + shift, -0.5, shift, -0.29)] = 3
    part[_segment(u, v, (0.08 + shift, -0.45), (0.1 + shift, -0.9), 0.035)] = 4
    return part


def _draw_sign(u, v, p):
    part = np.zeros(u.shape, np.int8)
    part[_rect(u, v, -0.07, 0.4, 0.07, 1.0)] = 4
    part[_ellipse(u, v, 0.0, -0.2, 0.78, 0.78)] = 1
    part[_ellipse(u, v, 0.0, -0.2, 0.56, 0.56)] = 2
    if p[0] < 0.5:
        part[_rect(u, v, -0.4, -0.3, 0.4, -0.1)] = 3
    else:
        part[_polygon(u, v, [(0.0, -0.62), (0.36, 0.05), (-0.36, 0.05)])] = 3
    return part


def _draw_house(u, v, p):
    part = np.zeros(u.shape, np.int8)
    peak, door = -0.6 - 0.3 * p[0], -0.35 + 0.5 * p[1]
    part[_rect(u, v, 0.3, -0.8, 0.48, -0.3)] = 2
    part[_rect(u, v, -0.7, -0.1, 0.7, 0.9)] = 1
    part[_polygon(u, v, [(-0.92, -0.05), (0.0, peak), (0.92, -0.05)])] = 2
    part[_rect(u, v, door, 0.4, door + 0.25, 0.9)] = 3
    window = 0.2 if door < 0.0 else -0.5
    part[_rect(u, v, window, 0.15, window + 0.3, 0.45)] = 4
    return part


def _draw_star(u, v, p):
    part = np.zeros(u.shape, np.int8)
    points, inner = 5 + int(p[0] * 2), 0.38 + 0.2 * p[1]
    angles = -np.pi / 2 + np.pi * np.arange(2 * points) / points
    radii = np.where(np.arange(2 * points) % 2 == 0, 0.95, 0.95 * inner)
    part[_polygon(u, v, np.stack([radii * np.cos(angles), radii * np.sin(angles)], -1))] = 1
    if p[2] < 0.5:
        part[_ellipse(u, v, 0.0, 0.0, 0.45 * inner, 0.45 * inner)] = 2
    return part


def _draw_drone(u, v, p):
    part = np.zeros(u.shape, np.int8)
    corners = [(-0.62, -0.62), (0.62, -0.62), (-0.62, 0.62), (0.62, 0.62)]
    rotor = 0.24 + 0.06 * p[0]
    for cu, cv in corners:
        part[_ellipse(u, v, cu, cv, rotor, rotor)] = 3
    for cu, cv in corners:
        part[_segment(u, v, (0.0, 0.0), (cu, cv), 0.07)] = 2
        part[_ellipse(u, v, cu, cv, 0.08, 0.08)] = 2
    part[_rect(u, v, -0.22, -0.22, 0.22, 0.22, 0.08)] = 1
    return part


@dataclasses.dataclass(frozen=True)
class _ObjectClass:
    """How to draw one class: ``draw`` gives the part map, ``fixed`` part -> colour kind ('dark', 'glass',
    'skin', 'grey'), other parts get random colours; ``upright`` classes turn at most 20 degrees."""

    draw: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
    num_parts: int
    fixed: dict[int, str]
    upright: bool


_CLASSES: dict[str, _ObjectClass] = {
    "vehicle": _ObjectClass(_draw_vehicle, 4, {2: "glass", 3: "dark", 4: "grey"}, True),
    "person": _ObjectClass(_draw_person, 3, {3: "skin"}, True),
    "aircraft": _ObjectClass(_draw_aircraft, 3, {3: "glass"}, False),
    "ship": _ObjectClass(_draw_ship, 4, {4: "dark"}, True),
    "sign": _ObjectClass(_draw_sign, 4, {4: "grey"}, True),
    "house": _ObjectClass(_draw_house, 4, {4: "glass"}, True),
    "star": _ObjectClass(_draw_star, 2, {}, False),
    "drone": _ObjectClass(_draw_drone, 3, {3: "dark"}, False),
}


# ----------------------------------------------------------------------------------------------------------
# Objects: pose, appearance, rasterisation.


@dataclasses.dataclass(frozen=True)
class SceneObject:
    """One object of a scene; everything needed to re-render it alone (see ``render_object``).

    Attributes:
      label: index into ``DETECTION_CLASSES``.
      centre: (y, x) px of the local origin in the centre frame of the clip.
      velocity: (y, x) px per frame.
      half_size: px per local unit (the drawing spans [-1, 1]^2 before aspect).
      aspect: x / y stretch (x scaled by sqrt(aspect), y by 1 / sqrt(aspect)).
      angle: rotation, rad (clockwise on screen, y pointing down).
      mirror: flip the drawing left-right before posing it.
      seed: fixes shape variations, part colours and textures.
    """

    label: int
    centre: tuple[float, float]
    velocity: tuple[float, float]
    half_size: float
    aspect: float
    angle: float
    mirror: bool
    seed: int

    def extent(self) -> tuple[float, float]:
        """Half height and half width (px) of the posed [-1, 1]^2 square: bounds of the drawing."""
        su, sv = self.half_size * np.sqrt(self.aspect), self.half_size / np.sqrt(self.aspect)
        c, s = abs(np.cos(self.angle)), abs(np.sin(self.angle))
        return float(su * s + sv * c), float(su * c + sv * s)


def _random_colour(rng: np.random.Generator, kind: str | None = None) -> np.ndarray:
    if kind == "dark":
        return np.full(3, rng.uniform(0.03, 0.2))
    if kind == "grey":
        return np.full(3, rng.uniform(0.35, 0.75))
    if kind == "glass":
        return np.clip(np.array([0.55, 0.7, 0.85]) * rng.uniform(0.6, 1.15) + rng.normal(0, 0.04, 3), 0, 1)
    if kind == "skin":
        tones = np.array([[0.95, 0.8, 0.65], [0.8, 0.6, 0.45], [0.55, 0.38, 0.26], [0.35, 0.24, 0.16]])
        return np.clip(tones[rng.integers(len(tones))] * rng.uniform(0.9, 1.1), 0, 1)
    return np.array(colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0.25, 1.0), rng.uniform(0.3, 1.0)))


def _texture(rng: np.random.Generator, u: np.ndarray, v: np.ndarray, fixed: bool) -> np.ndarray:
    """A pattern in [0, 1] on local coordinates: flat, stripes, checker, smooth noise or gradient."""
    kind = "flat" if fixed and rng.uniform() < 0.7 else rng.choice(["flat", "stripes", "checker", "noise", "gradient"])
    theta = rng.uniform(0, np.pi)
    along = u * np.cos(theta) + v * np.sin(theta)
    if kind == "stripes":
        return 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.8, 2.5) * along + rng.uniform(0, 2 * np.pi))
    if kind == "checker":
        f = rng.uniform(1.5, 4.0)
        return ((np.floor(u * f) + np.floor(v * f)) % 2).astype(np.float64)
    if kind == "noise":
        n = 6
        grid = rng.uniform(size=(n, n))
        y, x = (np.clip(v, -1, 1) + 1) / 2 * (n - 1), (np.clip(u, -1, 1) + 1) / 2 * (n - 1)
        y0, x0 = np.minimum(np.floor(y).astype(int), n - 2), np.minimum(np.floor(x).astype(int), n - 2)
        fy, fx = y - y0, x - x0
        top = grid[y0, x0] * (1 - fx) + grid[y0, x0 + 1] * fx
        bottom = grid[y0 + 1, x0] * (1 - fx) + grid[y0 + 1, x0 + 1] * fx
        return top * (1 - fy) + bottom * fy
    if kind == "gradient":
        return (np.clip(along, -1, 1) + 1) / 2
    return np.zeros_like(u)


def _rasterise(obj: SceneObject, size: int, offset: float) -> tuple[int, int, np.ndarray, np.ndarray] | None:
    """Render ``obj`` displaced by ``offset`` frames: (top, left, alpha [h, w], premultiplied rgb [h, w, 3])
    of the pixel patch covering its posed square, or None if that patch is outside the image."""
    cls = _CLASSES[DETECTION_CLASSES[obj.label]]
    cy, cx = obj.centre[0] + obj.velocity[0] * offset, obj.centre[1] + obj.velocity[1] * offset
    ey, ex = obj.extent()
    top, bottom = max(int(np.floor(cy - ey)), 0), min(int(np.ceil(cy + ey)), size)
    left, right = max(int(np.floor(cx - ex)), 0), min(int(np.ceil(cx + ex)), size)
    if bottom <= top or right <= left:
        return None
    ss = SUPERSAMPLE
    ys = top + (np.arange((bottom - top) * ss) + 0.5) / ss - cy
    xs = left + (np.arange((right - left) * ss) + 0.5) / ss - cx
    dy, dx = np.meshgrid(ys, xs, indexing="ij")
    c, s = np.cos(obj.angle), np.sin(obj.angle)
    # Undo the rotation (x -> y is clockwise on screen, y pointing down), then the aspect and scale.
    u = (c * dx + s * dy) / (obj.half_size * np.sqrt(obj.aspect))
    v = (c * dy - s * dx) / (obj.half_size / np.sqrt(obj.aspect))
    if obj.mirror:
        u = -u
    rng = np.random.default_rng(obj.seed)
    shape_params = rng.uniform(size=4)
    part = cls.draw(u, v, shape_params)
    part[(np.abs(u) > 1.0) | (np.abs(v) > 1.0)] = 0
    colour = np.zeros((*u.shape, 3))
    for k in range(1, cls.num_parts + 1):
        kind = cls.fixed.get(k)
        base, other = _random_colour(rng, kind), _random_colour(rng, kind)
        amplitude = rng.uniform(0.3, 0.8)
        pattern = _texture(rng, u, v, fixed=kind is not None)
        mix = (amplitude * pattern)[..., None]
        colour = np.where((part == k)[..., None], base * (1 - mix) + other * mix, colour)
    h, w = bottom - top, right - left
    inside = (part > 0).astype(np.float64)
    alpha = inside.reshape(h, ss, w, ss).mean(axis=(1, 3))
    premult = (colour * inside[..., None]).reshape(h, ss, w, ss, 3).mean(axis=(1, 3))
    return top, left, alpha, premult


def render_object(obj: SceneObject, size: int, offset: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """One object rendered alone on a ``size`` x ``size`` canvas, ``offset`` frames from the centre frame.

    Returns ``alpha`` [size, size] (anti-aliased coverage in [0, 1]) and ``premultiplied`` [size, size, 3]
    (colour x coverage); composite with ``image * (1 - alpha[..., None]) + premultiplied``.
    """
    alpha = np.zeros((size, size), np.float32)
    premult = np.zeros((size, size, 3), np.float32)
    patch = _rasterise(obj, size, offset)
    if patch is not None:
        top, left, a, c = patch
        alpha[top : top + a.shape[0], left : left + a.shape[1]] = a
        premult[top : top + a.shape[0], left : left + a.shape[1]] = c
    return alpha, premult


def mask_box(alpha: np.ndarray, threshold: float = BOX_ALPHA_THRESHOLD) -> np.ndarray:
    """Tight box [4] (x0, y0, x1, y1), pixel-edge coordinates, of ``alpha`` [H, W] > ``threshold``;
    zeros if no pixel passes."""
    rows, cols = np.nonzero(alpha > threshold)
    if rows.size == 0:
        return np.zeros(4, np.float32)
    return np.array([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], np.float32)


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection of boxes (y0, x0, y1, x1) over the smaller one's area."""
    inter_h = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    inter_w = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return inter_h * inter_w / max(smaller, 1e-9)


def _place_objects(
    rng: np.random.Generator, size: int, max_objects: int, reach: int, max_object_px: float
) -> list[SceneObject]:
    """1..max_objects posed objects inside the image at the centre frame and over +-``reach`` frames."""
    objects: list[SceneObject] = []
    extents: list[tuple[float, float, float, float]] = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        label = int(rng.integers(len(DETECTION_CLASSES)))
        upright = _CLASSES[DETECTION_CLASSES[label]].upright
        seed = int(rng.integers(2**31))
        for _attempt in range(20):
            half = size * float(np.exp(rng.uniform(*np.log(SCALE_RANGE))))
            aspect = float(np.exp(rng.uniform(*np.log(ASPECT_RANGE))))
            angle = float(rng.uniform(-np.pi / 9, np.pi / 9) if upright else rng.uniform(-np.pi, np.pi))
            mirror = bool(rng.uniform() < 0.5)
            velocity = rng.uniform(-max_object_px, max_object_px, 2)
            draft = SceneObject(label, (0.0, 0.0), (0.0, 0.0), half, aspect, angle, mirror, seed)
            ey, ex = draft.extent()
            if max(ey, ex) > size / 2 - 1:
                continue
            cy, cx = rng.uniform(ey + 0.5, size - ey - 0.5), rng.uniform(ex + 0.5, size - ex - 0.5)
            box = (cy - ey, cx - ex, cy + ey, cx + ex)
            if any(_overlap(box, other) > MAX_OVERLAP for other in extents):
                continue
            # Slow the object down so that it stays inside the image over the whole clip.
            room = np.array([min(cy - ey, size - cy - ey), min(cx - ex, size - cx - ex)])
            speed = np.abs(velocity) * max(reach, 1)
            velocity = velocity * np.minimum(1.0, room / np.maximum(speed, 1e-9))
            objects.append(dataclasses.replace(draft, centre=(cy, cx), velocity=(velocity[0], velocity[1])))
            extents.append(box)
            break
    return objects


# ----------------------------------------------------------------------------------------------------------
# Backgrounds and scenes.


@functools.lru_cache(maxsize=64)
def _scene_still(name: str, side: int) -> np.ndarray:
    """An embedded scene centre-cropped and resized to [side, side, 3] (cached: read-only)."""
    still = _resize_square(_load(name), side)
    still.setflags(write=False)
    return still


def _crop(still: np.ndarray, top: float, left: float, size: int) -> np.ndarray:
    """The [size, size, 3] window of ``still`` at a sub-pixel (top, left), bilinear, clamped inside."""
    side = still.shape[0]
    top, left = float(np.clip(top, 0, side - size - 1)), float(np.clip(left, 0, side - size - 1))
    r, c = int(np.floor(top)), int(np.floor(left))
    fy, fx = top - r, left - c
    window = still[r : r + size + 1, c : c + size + 1]
    rows = window[:-1] * (1 - fy) + window[1:] * fy
    return rows[:, :-1] * (1 - fx) + rows[:, 1:] * fx


def _split_scenes(split: str, scenes: Sequence[str] | None) -> tuple[str, ...]:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}; got {split!r}.")
    names = tuple(scenes) if scenes is not None else (TRAIN_SCENES if split == "train" else TEST_SCENES)
    if not names:
        raise ValueError("scenes must name at least one embedded scene.")
    for name in names:
        if name not in EMBEDDED_SCENES:
            raise ValueError(f"embedded scene must be one of {EMBEDDED_SCENES}; got {name!r}.")
    return names


def detection_clip(
    index: int,
    *,
    num_frames: int = 5,
    size: int = 96,
    max_objects: int = 6,
    seed: int = 0,
    split: str = "train",
    scenes: Sequence[str] | None = None,
    max_camera_px: float = 0.5,
    max_object_px: float = 1.0,
    return_masks: bool = False,
) -> dict:
    """A clean clip with labelled objects, deterministic in (seed, split, index).

    The camera pans at up to ``max_camera_px`` px/frame per axis over a crop of one embedded scene (zoom,
    crop position, mirror, brightness and contrast drawn at random); each object moves at up to
    ``max_object_px`` px/frame per axis (less if it would leave the image). Frame ``num_frames // 2`` is
    the centre frame: there the background and the objects are at their drawn positions.

    Args:
      index: example index; with ``seed`` and ``split`` it fixes everything.
      num_frames: clip length T (>= 1); size: side, px (>= 16).
      max_objects: objects drawn before the occlusion rule (1..max_objects, uniformly). The topmost one
        always survives it for size >= 32; below that, tiny objects fail ``MIN_BOX_PIXELS`` and M may be 0.
      split: 'train' or 'test', which picks the default ``scenes`` and the random stream.
      scenes: embedded scene names for backgrounds (default: ``TRAIN_SCENES`` / ``TEST_SCENES``).
      return_masks: also return the alpha masks.

    Returns:
      dict with ``frames`` [T, size, size, 3] float32 in [0, 1]; ``boxes`` [T, M, 4] float32 xyxy px
      (pixel-edge coordinates, one box per kept object and frame); ``labels`` [M] int32; ``centre`` (int);
      ``objects`` (tuple of ``SceneObject``, drawing order, bottom first). With ``return_masks``: ``masks``
      [T, M, size, size] each object's own alpha rendered alone, and ``visible_masks`` (the same after
      occlusion by the objects drawn over it; boxes are the tight boxes of ``visible_masks`` > 0.5).
    """
    if num_frames < 1 or size < 16:
        raise ValueError(f"num_frames must be >= 1 and size >= 16 px; got {num_frames}, {size}.")
    if max_objects < 1:
        raise ValueError(f"max_objects must be >= 1; got {max_objects}.")
    names = _split_scenes(split, scenes)
    rng = np.random.default_rng((seed, SPLITS.index(split), int(index)))
    centre = num_frames // 2
    offsets = np.arange(num_frames) - centre

    # Background: a view of size px inside a still of side zoom * size + 2 * pad, panned by the camera.
    name, zoom = names[int(rng.integers(len(names)))], float(rng.choice(BACKGROUND_ZOOMS))
    still = _scene_still(name, int(round(size * zoom)) + 2 * BACKGROUND_PAD)
    origin = rng.uniform(BACKGROUND_PAD, still.shape[0] - BACKGROUND_PAD - size, 2)
    camera = rng.uniform(-max_camera_px, max_camera_px, 2)
    mirror = rng.uniform() < 0.5
    contrast, brightness = rng.uniform(0.6, 1.0), rng.uniform(0.85, 1.15)
    objects = _place_objects(rng, size, max_objects, max(centre, num_frames - 1 - centre), max_object_px)

    alphas = np.zeros((num_frames, len(objects), size, size), np.float32)
    premult = np.zeros((num_frames, len(objects), size, size, 3), np.float32)
    for t, offset in enumerate(offsets):
        for k, obj in enumerate(objects):
            alphas[t, k], premult[t, k] = render_object(obj, size, float(offset))

    def visibility(a: np.ndarray) -> np.ndarray:
        # Visible alpha of object k = alpha_k x prod_{j > k} (1 - alpha_j) (objects drawn later are on top).
        over = np.cumprod((1.0 - a)[:, ::-1], axis=1)[:, ::-1]
        return a * np.concatenate([over[:, 1:], np.ones_like(a[:, :1])], axis=1)

    visible = visibility(alphas)
    own_area, seen_area = alphas.sum(axis=(2, 3)), visible.sum(axis=(2, 3))
    box_pixels = (visible > BOX_ALPHA_THRESHOLD).sum(axis=(2, 3))
    keep = np.all((seen_area >= MIN_VISIBLE_FRACTION * own_area) & (box_pixels >= MIN_BOX_PIXELS), axis=0)
    alphas, premult = alphas[:, keep], premult[:, keep]
    objects = [obj for obj, k in zip(objects, keep, strict=True) if k]
    visible = visibility(alphas)

    frames = np.empty((num_frames, size, size, 3), np.float32)
    for t, offset in enumerate(offsets):
        view = _crop(still, *(origin + camera * offset), size)
        if mirror:
            view = view[:, ::-1]
        mean = view.mean()
        image = np.clip((view - mean) * contrast + mean * brightness, 0.0, 1.0)
        for k in range(len(objects)):
            image = image * (1.0 - alphas[t, k, ..., None]) + premult[t, k]
        frames[t] = np.clip(image, 0.0, 1.0)
    boxes = np.array([[mask_box(m) for m in frame] for frame in visible], np.float32).reshape(num_frames, -1, 4)
    out = {
        "frames": frames,
        "boxes": boxes,
        "labels": np.array([obj.label for obj in objects], np.int32),
        "centre": centre,
        "objects": tuple(objects),
    }
    if return_masks:
        out["masks"], out["visible_masks"] = alphas, visible.astype(np.float32)
    return out


def detection_scene(
    index: int,
    *,
    size: int = 96,
    max_objects: int = 6,
    seed: int = 0,
    split: str = "train",
    scenes: Sequence[str] | None = None,
    return_masks: bool = False,
) -> dict:
    """A still detection scene: ``detection_clip(..., num_frames=1)`` without the time axis.

    Returns ``image`` [size, size, 3] float32 in [0, 1], ``boxes`` [M, 4] float32 xyxy px (pixel edges),
    ``labels`` [M] int32, ``objects``; with ``return_masks`` also ``masks`` / ``visible_masks`` [M, size, size].
    """
    clip = detection_clip(
        index,
        num_frames=1,
        size=size,
        max_objects=max_objects,
        seed=seed,
        split=split,
        scenes=scenes,
        return_masks=return_masks,
    )
    out = {"image": clip["frames"][0], "boxes": clip["boxes"][0], "labels": clip["labels"], "objects": clip["objects"]}
    if return_masks:
        out["masks"], out["visible_masks"] = clip["masks"][0], clip["visible_masks"][0]
    return out


# ----------------------------------------------------------------------------------------------------------
# Turbulence.

DEGRADE_PARAM_KEYS = ("tilt_std_px", "fried_parameter", "exposure_time", "drift_px_per_frame")


@functools.lru_cache(maxsize=16)
def _degrader(spec: VideoSpec) -> Callable:
    def one(key, clip):
        out = synthesize_example(key, clip, spec)
        return {"degraded": out["degraded"], **{name: out[name] for name in DEGRADE_PARAM_KEYS}}

    return jax.jit(jax.vmap(one))


def degrade_scenes(
    keys: jax.Array,
    clips: np.ndarray | jnp.ndarray,
    *,
    settings: P.SynthesisSettings = DEFAULT_SETTINGS,
    max_drift_px: int = 32,
    fps: float = 30.0,
    wavelength: float = 550e-9,
    pixel_pitch: float = 5e-6,
) -> dict[str, jnp.ndarray]:
    """Turbulence videos of clean clips [N, T, H, W, 3] (H = W), one ET-Turb Table-1 draw per clip.

    Each clip gets its own ``sample_et_turb_params`` draw, a uniform wind direction and a frozen-flow
    ``synthesize_video`` degradation, exactly as an example of the ET-Turb video dataset
    (``turbjax.data.generate.synthesize_example``); the whole batch is one jitted vmap (compiled once per
    clip shape and settings). ``keys``: per-clip keys [N] (typed) or [N, 2] (raw uint32), or one key that
    is split into N. Per-clip keys make an example independent of the batch it is generated in.
    ``max_drift_px`` (static) is the frozen-flow drift the canvases are exact for; the Table-1 draws drift
    20-90 px/frame at 30 fps, beyond it, so successive frames are less correlated than the theory says.

    Returns ``degraded`` [N, T, H, W, 3] float32 in [0, 1] and, per clip [N], ``tilt_std_px`` (px),
    ``fried_parameter`` (m), ``exposure_time`` (s) and ``drift_px_per_frame`` (px).
    """
    clips = jnp.asarray(clips, jnp.float32)
    if clips.ndim != 5 or clips.shape[2] != clips.shape[3]:
        raise ValueError(f"clips must be [N, T, S, S, C]; got shape {clips.shape}.")
    n = clips.shape[0]
    keys = jnp.asarray(keys)
    typed = jnp.issubdtype(keys.dtype, jax.dtypes.prng_key)
    if keys.ndim == (0 if typed else 1):
        keys = jax.random.split(keys, n)
    if keys.shape[0] != n:
        raise ValueError(f"need one key per clip: {n} clips, {keys.shape[0]} keys.")
    if typed:
        keys = jax.random.key_data(keys)  # one compiled program for typed and raw keys
    spec = VideoSpec(
        num_frames=clips.shape[1],
        image_size=clips.shape[2],
        fps=fps,
        max_drift_px=max_drift_px,
        wavelength=wavelength,
        pixel_pitch=pixel_pitch,
        settings=settings,
    )
    out = _degrader(spec)(keys, clips)
    out["degraded"] = jnp.clip(out["degraded"], 0.0, 1.0)
    return out


# ----------------------------------------------------------------------------------------------------------
# Datasets.


def detection_dataset(
    num_examples: int,
    *,
    size: int = 96,
    num_frames: int = 5,
    seed: int = 0,
    split: str = "train",
    max_objects: int = 6,
    degrade: bool = True,
    batch_size: int = 16,
    settings: P.SynthesisSettings = DEFAULT_SETTINGS,
    max_drift_px: int = 32,
    scenes: Sequence[str] | None = None,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """``num_examples`` examples of ``split`` as stacked NumPy arrays (example i = ``detection_clip(i)``).

    Returns:
      ``clean`` [N, size, size, 3] float32 (the centre frame); ``boxes`` [N, max_objects, 4] float32 xyxy
      px of the centre frame, zero-padded; ``labels`` [N, max_objects] int32 padded with -1; ``num_boxes``
      [N] int32. With ``degrade``: ``degraded`` [N, num_frames, size, size, 3] float32 and the per-example
      parameters of ``degrade_scenes`` (``tilt_std_px`` ...). Boxes are those of the clean centre frame.

    The turbulence of example i comes from ``example_keys(seed, split, [i])`` (the ET-Turb dataset's key
    scheme), so it does not depend on ``batch_size``; batches are padded to ``batch_size`` so that one
    compiled program serves them all.
    """
    if num_examples < 1:
        raise ValueError(f"num_examples must be >= 1; got {num_examples}.")
    indices = range(num_examples)
    if progress:
        from tqdm.auto import tqdm

        indices = tqdm(indices, desc=f"detection scenes ({split})")
    clips, boxes = [], np.zeros((num_examples, max_objects, 4), np.float32)
    labels = np.full((num_examples, max_objects), -1, np.int32)
    num_boxes = np.zeros(num_examples, np.int32)
    for i in indices:
        clip = detection_clip(
            i, num_frames=num_frames, size=size, max_objects=max_objects, seed=seed, split=split, scenes=scenes
        )
        m = len(clip["labels"])
        boxes[i, :m], labels[i, :m], num_boxes[i] = clip["boxes"][clip["centre"]], clip["labels"], m
        clips.append(clip["frames"])
    clips_array = np.stack(clips)
    out = {"clean": clips_array[:, num_frames // 2].copy(), "boxes": boxes, "labels": labels, "num_boxes": num_boxes}
    if degrade:
        keys = example_keys(seed, split, np.arange(num_examples))
        parts: list[dict[str, np.ndarray]] = []
        for start in range(0, num_examples, batch_size):
            chunk = np.arange(start, min(start + batch_size, num_examples))
            padded = np.concatenate([chunk, np.full(batch_size - len(chunk), chunk[0])])
            result = degrade_scenes(keys[padded], clips_array[padded], settings=settings, max_drift_px=max_drift_px)
            parts.append({name: np.asarray(value)[: len(chunk)] for name, value in result.items()})
        out.update({name: np.concatenate([p[name] for p in parts]) for name in parts[0]})
    return out


def to_detr_targets(
    boxes: np.ndarray, labels: np.ndarray, num_boxes: np.ndarray, size: int | float
) -> dict[str, np.ndarray]:
    """Padded pixel xyxy boxes [B, M, 4] -> the targets of ``turbjax.losses.detection_loss``.

    Returns ``labels`` [B, M] int32 (padding set to 0), ``boxes`` [B, M, 4] float32 normalised cxcywh
    (divided by ``size``; padding set to 0) and ``num_boxes`` [B] int32; entries beyond ``num_boxes`` are
    padding (the loss ignores them).
    """
    boxes = np.asarray(boxes, np.float32) / np.float32(size)
    num_boxes = np.asarray(num_boxes, np.int32)
    real = np.arange(boxes.shape[-2])[None, :] < num_boxes[:, None]
    cxcywh = np.concatenate([(boxes[..., :2] + boxes[..., 2:]) / 2, boxes[..., 2:] - boxes[..., :2]], axis=-1)
    return {
        "labels": np.where(real, np.asarray(labels, np.int32), 0).astype(np.int32),
        "boxes": np.where(real[..., None], cxcywh, 0.0).astype(np.float32),
        "num_boxes": num_boxes,
    }
