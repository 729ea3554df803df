"""Frozen-flow turbulence video (ET-Turb section 3.3, eq. 18).

Taylor's frozen flow: the turbulence is a fixed pattern carried by the wind, so the degradation
of frame t is that of frame 0 displaced on the sensor by f v t / L (ET-Turb eq. 18; the seed
places the moving pattern at the scene distance L), i.e. by ``frame_drift_px`` =
f v / (L fps pitch) pixels per frame along the wind direction. One tilt field and one blur-width
field are drawn on periodic canvases larger than the frame and every frame reads a window
shifted by its drift (bilinear for sub-pixel drifts, exact for integer ones).

Canvas size. The tilt canvas is an embedding of ``embed_factor`` x (frame + ``max_drift_px``)
whose covariance is exact up to separations of frame + ``max_drift_px``: frames whose drift
from frame 0 stays below that are correlated exactly as the spatial theory says at the drift
distance. Beyond it the correlation runs through the embedding's taper, and the canvas is
periodic: a drift of a whole canvas side repeats the pattern. ``max_drift_px`` is static (it
sets array shapes); choose it >= (T - 1) x the largest drift per frame of the parameters used.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from turbjax.physics.blur import blur_correlation_px, blur_width_stats, lowpass_unit_canvas
from turbjax.physics.checks import as_clip, check_positive, is_concrete
from turbjax.physics.optics import Atmosphere, Optics, check_parameters
from turbjax.physics.synth import (
    Degradation,
    SynthesisSettings,
    blur_and_assemble,
    blur_exposure_time,
    check_strength_map,
    strength_atmosphere,
)
from turbjax.physics.tilt import embedding_canvas, tilt_canvas
from turbjax.physics.warp import warp


def frame_drift_px(optics: Optics, atmosphere: Atmosphere, fps) -> jnp.ndarray:
    """Frozen-flow displacement on the sensor per frame, px: f v / (L fps pitch)."""
    speed_m_per_s = (
        jnp.asarray(optics.focal_length) * jnp.asarray(atmosphere.wind_speed) / jnp.asarray(atmosphere.distance)
    )
    return speed_m_per_s / (jnp.asarray(fps) * jnp.asarray(optics.pixel_pitch))


def periodic_window(canvas: jnp.ndarray, offset_yx: jnp.ndarray, shape: tuple[int, int]) -> jnp.ndarray:
    """The [h, w, ...] window of a periodic ``canvas`` starting at the sub-pixel ``offset_yx``.

    A uniform shift, so bilinear interpolation mixes four integer-shifted windows with one set
    of weights; indices wrap modulo the canvas size. Integer offsets return exact copies.
    """
    h, w = shape
    base = jnp.floor(offset_yx)
    frac = offset_yx - base
    base = base.astype(jnp.int32)
    rows = jnp.arange(h)
    cols = jnp.arange(w)

    def window(dy, dx):
        r = jnp.mod(rows + base[0] + dy, canvas.shape[0])
        c = jnp.mod(cols + base[1] + dx, canvas.shape[1])
        return jnp.take(jnp.take(canvas, r, axis=0), c, axis=1)

    fy, fx = frac[0], frac[1]
    return (1 - fy) * ((1 - fx) * window(0, 0) + fx * window(0, 1)) + fy * ((1 - fx) * window(1, 0) + fx * window(1, 1))


def synthesize_video(
    key: jax.Array,
    frames: jnp.ndarray,
    optics: Optics,
    atmosphere: Atmosphere,
    exposure_time,
    fps=30.0,
    *,
    num_frames: int | None = None,
    wind_direction=None,
    max_drift_px: int = 256,
    settings: SynthesisSettings = SynthesisSettings(),
    strength_map: jnp.ndarray | None = None,
) -> Degradation:
    """Degrade a clip [T, H, W, C] (moving scene) or a still [H, W, C] (with ``num_frames``).

    Returns a ``Degradation`` whose images and fields lead with T. The wind blows along
    ``wind_direction`` (rad from the +x axis; drawn uniformly from ``key`` when None) at
    ``atmosphere.wind_speed``; with wind 0 every frame has the same degradation. Exposure noise
    (``settings.noise``) is drawn independently per frame. ``strength_map`` [H, W] (>= 0, None =
    uniform) multiplies Cn2 per pixel, fixed in the image while the turbulence drifts (see
    ``turbjax.physics.synth``). Validation as in ``synthesize_frame``.
    """
    frames = as_clip(frames, num_frames)
    t_count, h, w, _ = frames.shape
    if min(h, w) <= settings.blur_pad:
        raise ValueError(f"frame height and width must exceed settings.blur_pad={settings.blur_pad}; got {h}x{w}.")
    if max_drift_px < 0:
        raise ValueError(f"max_drift_px must be >= 0; got {max_drift_px}.")
    if strength_map is not None:
        strength_map = check_strength_map(strength_map, (h, w))
    if is_concrete((optics, atmosphere, exposure_time, fps)):
        check_parameters(optics, atmosphere, exposure_time)
        check_positive("fps", fps, "frames/s")
    frames = frames.astype(jnp.float32)
    k_dir, k_tilt, k_blur, k_noise = jax.random.split(key, 4)
    if wind_direction is None:
        wind_direction = jax.random.uniform(k_dir, (), minval=0.0, maxval=2.0 * jnp.pi)
    step = frame_drift_px(optics, atmosphere, fps)
    direction_yx = jnp.stack([jnp.sin(wind_direction), jnp.cos(wind_direction)])
    offsets = jnp.arange(t_count, dtype=jnp.float32)[:, None] * step * direction_yx  # [T, 2] (y, x)

    reach = max(h, w) + max_drift_px
    side = embedding_canvas((reach, reach), settings.tilt_embed_factor)
    tilt = tilt_canvas(k_tilt, side, float(reach), optics, atmosphere, settings.wave)
    fields = jax.vmap(lambda o: periodic_window(tilt, o, (h, w)))(offsets)
    blur_atmosphere = atmosphere
    if strength_map is not None:
        fields = fields * jnp.sqrt(strength_map)[..., None]
        blur_atmosphere = strength_atmosphere(atmosphere, strength_map)

    blur_tau = blur_exposure_time(exposure_time, optics, atmosphere, settings)
    mean, std = blur_width_stats(optics, blur_atmosphere, blur_tau, settings.wave)
    corr = settings.blur_correlation_px
    if corr is None:
        corr = blur_correlation_px(optics, atmosphere, settings.wave)
    corr = jnp.clip(corr, 1.0, settings.max_blur_correlation_px)
    pad = int(4 * settings.max_blur_correlation_px)
    unit = lowpass_unit_canvas(k_blur, (h + max_drift_px + pad, w + max_drift_px + pad), corr)
    widths = jnp.maximum(settings.blur_eps, mean + std * jax.vmap(lambda o: periodic_window(unit, o, (h, w)))(offsets))

    tilt_only = warp(frames, fields)
    return blur_and_assemble(k_noise, frames, tilt_only, fields, widths, optics, atmosphere, exposure_time, settings)
