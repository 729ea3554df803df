"""Turbulence signature (TMTS section 2.1, eq. 4) and per-pixel Cn2 estimation from video.

Physics. Angle-of-arrival jitter moves the image of a scene point by a random displacement d
(pixels) with per-axis variance sigma_img^2. To first order in d (Taylor), the intensity seen
at a fixed pixel is I(x + d) ~ I(x) + grad I . d, so over a window of frames of a static scene

    sigma_I^2 = I_x^2 sigma_x^2 + I_y^2 sigma_y^2 + 2 I_x I_y cov(d_x, d_y)
              = (I_x^2 + I_y^2) sigma_img^2     (isotropic tilt, cov(d_x, d_y) = 0 at a point)

and the turbulence signature S = sigma_I^2 / (I_x^2 + I_y^2) estimates sigma_img^2 (px^2)
pixel by pixel: no external data, just the video. It is large where the local turbulence is
strong, and because the tilt variance is linear in Cn2 it maps Cn2 up to constants of the
imaging system (seed eq. 4).

Estimator choices (the seed does not print them):

- intensity: luminance of RGB clips with the Rec.601 weights (0.299, 0.587, 0.114); a
  single-channel clip is used as is. Other channel counts are refused.
- sigma_I^2: unbiased (ddof = 1) temporal variance over all T frames of the window.
- I_x, I_y: central differences (px^-1) of the temporal mean frame, one-sided on the border
  rows and columns. The mean frame is the best available stand-in for the "ideal image" of
  eq. 3, but it is the clean image smoothed by the tilt distribution (and by the bilinear
  resampling of sub-pixel shifts): at 0.4 px tilt std its |grad I|^2 is ~12% below the clean
  one's on band-limited scenes, so S reads ~12% high. x is along the width (the tilt field's
  channel 0), y along the height.
- eps: S = sigma_I^2 / (I_x^2 + I_y^2 + eps), with eps = 1e-4 (intensity^2 / px^2, images in
  [0, 1]) by default. Textured pixels have |grad I|^2 ~ 1e-3 to 3e-2, so eps biases S there by
  at most ~10% (1% or less on most of them), while on flat patches, where eq. 3 carries no
  information, S stays finite: it is sigma_I^2 / eps, i.e. the noise variance / 1e-4.

Units and accuracy. sigma_I^2 is intensity^2 and |grad I|^2 intensity^2 / px^2, so S is px^2:
on a tilt-only video S is the per-axis tilt variance in pixels^2. Measured on ET-Turb tilt-only
clips (64 px scenes smoothed by a 1 px Gaussian, 0.38 px tilt std, 32 independent frames), the
median of S over textured pixels is 0.8-1.4x the tilt variance per clip (the numerator matches
the Taylor prediction to 1%; the spread is the per-pixel variance of 32 spatially correlated
tilt fields, the offset the gradient bias above). The Taylor step needs the image smooth on
the scale of the tilt: on pixel-scale texture (unsmoothed brick or gravel at 64 px) S is
1.5-3x high, and larger tilt adds second-order terms. Blur varying from frame to frame and
sensor noise also add to sigma_I^2 and raise S, which is why TMTS reads it as a relative
"distortion" map rather than as a calibrated tilt variance.

Cn2 (seed eq. 4). Per axis, sigma_img^2 = sigma_alpha^2 / PFOV^2 with PFOV = pixel pitch /
focal length (rad/px). The printed eq. 2, sigma_img^2 = sigma_alpha^2 x PFOV^(-1), is
dimensionally inconsistent (rad^2 / (rad / px) is not px^2); eq. 4 uses PFOV^2 and is
consistent: PFOV^2 D^(1/3) S / (2.914 L) has units rad^2 m^(1/3) m^-1 = m^(-2/3). Its
constant 2.914 is a plane-wave, uniform-path angle-of-arrival law (PHYSICS.md: between the
G-tilt 2.84 and the Z-tilt 3.04). The simulators in this package draw Z-tilt with the
spherical-wave path weighting (``turbjax.physics.tilt``, per axis 0.1822 lambda^2 D^(-1/3)
r0^(-5/3) = 3.04 x 3/8 x D^(-1/3) Cn2 L for a uniform path), which eq. 4 underestimates
by a factor 2.914 / (3.04 x 3/8) = 2.55. So :func:`estimate_cn2` has two forms:

- ``form="consistent"`` (default): invert that tilt law exactly, Cn2 = Cn2_ref S /
  tilt_std_px(Cn2_ref)^2 (the tilt variance is linear in Cn2), with the path weighting of
  ``wave`` ('spherical' default, as the simulators; 'plane' gives the constant 3.04).
- ``form="paper"``: eq. 4 as printed, Cn2 = PFOV^2 D^(1/3) S / (2.914 L), for reproduction.

Both return a per-pixel map (m^(-2/3)), or with ``reduce="median"`` the median over textured
pixels, the robust whole-window estimate.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from turbjax.physics.checks import check_image, check_positive, check_range
from turbjax.physics.optics import Atmosphere, Optics, Wave
from turbjax.physics.tilt import tilt_std_px

Cn2Form = Literal["consistent", "paper"]
Reduce = Literal["none", "median"]

DEFAULT_EPS = 1e-4  # intensity^2 / px^2 for images in [0, 1]; textured |grad I|^2 ~ 1e-3 to 3e-2
DEFAULT_MIN_GRADIENT_SQ = 1e-3  # intensity^2 / px^2: "textured" pixels for reduce="median"
REC601_WEIGHTS = (0.299, 0.587, 0.114)  # luminance of R, G, B
PAPER_AOA_CONSTANT = 2.914  # seed eq. 1 / 4: plane-wave per-axis AOA variance / (D^(-1/3) Int Cn2 dz)
_CN2_REFERENCE = 1e-14  # m^(-2/3): any in-range value; the tilt variance is linear in Cn2


def luminance(clip: jnp.ndarray) -> jnp.ndarray:
    """Intensity [..., H, W] of images [..., H, W, C]: Rec.601 luma for C = 3, the channel for C = 1."""
    channels = clip.shape[-1]
    if channels == 1:
        return clip[..., 0]
    if channels == 3:
        return jnp.tensordot(clip, jnp.asarray(REC601_WEIGHTS, clip.dtype), axes=([-1], [0]))
    raise ValueError(f"clip must have 1 (intensity) or 3 (RGB) channels; got {channels}.")


def _difference(image: jnp.ndarray, axis: int) -> jnp.ndarray:
    """d image / d index along ``axis`` (px^-1): central inside, one-sided on the two borders."""
    n = image.shape[axis]
    take = lambda start, stop: jax.lax.slice_in_dim(image, start, stop, axis=axis)  # noqa: E731
    inner = 0.5 * (take(2, n) - take(0, n - 2))
    first = take(1, 2) - take(0, 1)
    last = take(n - 1, n) - take(n - 2, n - 1)
    return jnp.concatenate([first, inner, last], axis=axis)


def _check_clip(clip: jnp.ndarray | np.ndarray) -> jnp.ndarray:
    check_image("clip", clip, min_rank=4)
    t, h, w, c = np.shape(clip)[-4:]
    if c not in (1, 3):
        raise ValueError(f"clip must have 1 (intensity) or 3 (RGB) channels; got {c}.")
    if t < 2:
        raise ValueError(f"clip must hold T >= 2 frames ([..., T, H, W, C]) for a temporal variance; got T = {t}.")
    if min(h, w) < 2:
        raise ValueError(f"clip frames must be at least 2 x 2 pixels for gradients; got {h} x {w}.")
    return jnp.asarray(clip, jnp.float32)


@jax.jit
def _terms(clip: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    # Compiled once per shape: called eagerly, the dozen small ops would each dispatch alone.
    intensity = luminance(clip)  # [..., T, H, W]
    mean = jnp.mean(intensity, axis=-3)
    variance = jnp.sum(jnp.square(intensity - mean[..., None, :, :]), axis=-3) / (intensity.shape[-3] - 1)
    gradient_sq = jnp.square(_difference(mean, -1)) + jnp.square(_difference(mean, -2))
    return variance, gradient_sq


def signature_terms(clip: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(sigma_I^2 [..., H, W] in intensity^2, |grad I|^2 [..., H, W] in intensity^2 / px^2).

    The temporal variance (ddof = 1) of the luminance of ``clip`` [..., T, H, W, C] and the
    squared central-difference gradient of its temporal mean: the numerator and denominator
    of the signature, e.g. to select textured pixels. Validation as :func:`turbulence_signature`.
    """
    return _terms(_check_clip(clip))


def turbulence_signature(clip: jnp.ndarray, eps: float = DEFAULT_EPS) -> jnp.ndarray:
    """Turbulence signature S = sigma_I^2 / (I_x^2 + I_y^2 + eps), px^2, shape [..., H, W].

    ``clip`` is a window of frames [..., T, H, W, C] (float in [0, 1], T >= 2, C = 1 or 3; any
    leading axes are batch axes) of a static scene. On a tilt-only video S estimates the
    per-axis image-motion variance in pixels^2 at textured pixels (first-order Taylor); blur
    changes and noise raise it. ``eps`` (intensity^2 / px^2, > 0) regularises flat pixels; see
    the module doc for every choice and its size. For TMTS's per-frame S_t pass a sliding
    window of frames as a batch axis.

    Raises ValueError (naming the parameter and its range) for a wrong rank, dtype, channel
    count, T < 2 or frames smaller than 2 x 2 (always) and for values outside [0, 1] or
    eps <= 0 (on concrete values; under jit only the shapes are checked).
    """
    check_positive("eps", eps, "intensity^2/px^2")
    variance, gradient_sq = signature_terms(clip)
    return variance / (gradient_sq + eps)


def _cn2_per_px2(optics: Optics, distance, form: Cn2Form, wave: Wave) -> jnp.ndarray:
    """Cn2 (m^(-2/3)) per px^2 of per-axis image-motion variance."""
    if form == "paper":
        ifov = optics.ifov  # the seed's PFOV, rad/px
        return ifov**2 * optics.aperture ** (1.0 / 3.0) / (PAPER_AOA_CONSTANT * jnp.asarray(distance))
    reference = Atmosphere(cn2=_CN2_REFERENCE, distance=distance, height=0.0, wind_speed=0.0)
    return _CN2_REFERENCE / jnp.square(tilt_std_px(optics, reference, wave))


def estimate_cn2(
    clip: jnp.ndarray,
    optics: Optics,
    distance: jnp.ndarray | float,
    *,
    form: Cn2Form = "consistent",
    wave: Wave = "spherical",
    eps: float = DEFAULT_EPS,
    reduce: Reduce = "none",
    min_gradient_sq: float = DEFAULT_MIN_GRADIENT_SQ,
) -> jnp.ndarray:
    """Path-averaged Cn2 (m^(-2/3)) from a tilt-dominated video, seed eq. 4.

    Args:
      clip: frames [..., T, H, W, C] of a static scene, float in [0, 1].
      optics: the camera (PFOV = pixel_pitch / focal_length, D = focal_length / f_number).
      distance: path length L from the aperture to the scene, m (> 0).
      form: 'consistent' (default) inverts the Z-tilt law the simulators use
        (``turbjax.physics.tilt``) for a uniform path with the ``wave`` weighting;
        'paper' is eq. 4 as printed (plane-wave constant 2.914), 2.55x lower for a
        spherical-wave uniform path. See the module doc.
      wave: 'spherical' (scene points, default) or 'plane'; only for form='consistent'.
      eps: the signature's regulariser, intensity^2 / px^2.
      reduce: 'none' gives the per-pixel map [..., H, W] of eq. 4; 'median' gives [...], the
        median over the textured pixels (|grad I|^2 >= ``min_gradient_sq``, intensity^2 / px^2),
        where eq. 3 holds; NaN when no pixel is textured.

    Cn2 is linear in S through an exact conversion, so it inherits S's accuracy (module doc:
    0.8-1.4x per clip on band-limited tilt-only video with sub-pixel tilt), and is biased high
    by pixel-scale texture, frame-to-frame blur changes and noise.
    Raises ValueError naming the parameter for out-of-range inputs (as
    :func:`turbulence_signature`, plus the optics, distance, form, wave and reduce).
    """
    if form not in ("consistent", "paper"):
        raise ValueError(f"form must be 'consistent' or 'paper'; got {form!r}.")
    if wave not in ("spherical", "plane"):
        raise ValueError(f"wave must be 'spherical' or 'plane'; got {wave!r}.")
    if reduce not in ("none", "median"):
        raise ValueError(f"reduce must be 'none' or 'median'; got {reduce!r}.")
    check_positive("optics.wavelength", optics.wavelength, "m")
    check_positive("optics.focal_length", optics.focal_length, "m")
    check_positive("optics.f_number", optics.f_number)
    check_positive("optics.pixel_pitch", optics.pixel_pitch, "m")
    check_positive("distance", distance, "m")
    check_positive("eps", eps, "intensity^2/px^2")
    check_range("min_gradient_sq", min_gradient_sq, 0.0, None, unit="intensity^2/px^2")
    variance, gradient_sq = signature_terms(clip)
    per_px2 = _cn2_per_px2(optics, distance, form, wave)[..., None, None]  # batched optics broadcast
    cn2 = variance / (gradient_sq + eps) * per_px2
    if reduce == "none":
        return cn2
    textured = gradient_sq >= min_gradient_sq
    return jnp.nanmedian(jnp.where(textured, cn2, jnp.nan), axis=(-2, -1))
