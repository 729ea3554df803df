"""Full-reference image quality: PSNR and SSIM, on RGB or on the BT.601 luma (Y) channel, in JAX.

Images are ``[..., H, W, C]`` floats in ``[0, data_range]`` (turbjax's images are in [0, 1]); every leading
axis is a batch axis, and the result has the leading shape (one value per image). Both functions are pure
``jnp`` code: they jit, vmap and run on accelerators, so evaluation does not leave the device.

Y channel. Restoration papers (the JDATT seed's Tables 1 and 3, TMTS, BasicSR's ``test_y_channel``) report PSNR
and SSIM on the luma of MATLAB's ``rgb2ycbcr``, i.e. ITU-R BT.601 "studio swing":
``Y = 16 + 65.481 R + 128.553 G + 24.966 B`` for R, G, B in [0, 1], giving Y in [16, 235] (8-bit levels).
scikit-image's ``skimage.color.rgb2ycbcr`` uses the same matrix and offset, and BasicSR's ``rgb2ycbcr(y_only)``
the same formula. We return it rescaled to the input's unit, ``Y / 255`` (so in ``[16/255, 235/255]`` for
``data_range = 1``), and measure it with the same ``data_range``: BasicSR likewise evaluates Y (in 0..255
units) with a peak of 255, not 219. No 8-bit rounding is applied; quantise the images beforehand to
reproduce numbers computed on saved PNGs.

PSNR. ``10 log10(data_range^2 / MSE)`` with the MSE over H, W and C of each image (``inf`` for identical images),
as ``skimage.metrics.peak_signal_noise_ratio``.

SSIM (Wang et al., IEEE TIP 2004). Local means, variances and covariance are taken with an 11 x 11 Gaussian
window of sigma 1.5 (normalised, separable), ``K1 = 0.01``, ``K2 = 0.03``, population (not sample)
covariances, and the SSIM map is averaged over the positions where the window fits inside the image ("valid",
H - 10 by W - 10); for RGB, over channels too. This is ``skimage.metrics.structural_similarity(...,
gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=...)`` (whose window is 11 wide via
``truncate=3.5``, and whose reflect-padded map is cropped by 5 pixels, i.e. also "valid"), and the formula of
Wang's MATLAB code and BasicSR's ``calculate_ssim``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
_BT601_Y = (65.481, 128.553, 24.966)  # per unit of R, G, B in [0, 1], output in 8-bit levels
_BT601_Y_OFFSET = 16.0


def rgb_to_y(rgb: Array, data_range: float = 1.0) -> Array:
    """BT.601 studio-swing luma of ``[..., 3]`` RGB in ``[0, data_range]`` -> ``[...]`` in the same unit.

    ``Y = data_range * (16 + 65.481 r + 128.553 g + 24.966 b) / 255`` with ``r = R / data_range`` etc.,
    i.e. ``skimage.color.rgb2ycbcr(rgb / data_range)[..., 0] * data_range / 255``.
    """
    rgb = _as_float(rgb)
    if rgb.shape[-1] != 3:
        raise ValueError(f"the Y channel needs RGB input [..., 3], got {rgb.shape}")
    weights = jnp.asarray(_BT601_Y, rgb.dtype) / 255.0
    return rgb @ weights + jnp.asarray(_BT601_Y_OFFSET / 255.0 * data_range, rgb.dtype)


def _as_float(x: Array) -> Array:
    x = jnp.asarray(x)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _prepare(pred: Array, target: Array, y_channel: bool, data_range: float) -> tuple[Array, Array]:
    pred, target = _as_float(pred), _as_float(target)
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {pred.shape} and {target.shape}")
    if pred.ndim < 3:
        raise ValueError(f"images must be [..., H, W, C], got {pred.shape}")
    if y_channel:
        pred = rgb_to_y(pred, data_range)[..., None]
        target = rgb_to_y(target, data_range)[..., None]
    return pred, target


def psnr(pred: Array, target: Array, *, y_channel: bool = False, data_range: float = 1.0) -> Array:
    """Peak signal-to-noise ratio in dB of ``[..., H, W, C]`` images -> ``[...]``.

    Args:
      pred, target: images in ``[0, data_range]``, same shape; C = 3 when ``y_channel``.
      y_channel: measure the BT.601 luma (see the module docstring) instead of all channels.
      data_range: peak value (1 for turbjax's [0, 1] images).
    """
    pred, target = _prepare(pred, target, y_channel, data_range)
    mse = jnp.mean(jnp.square(pred - target), axis=(-3, -2, -1))
    return 10.0 * jnp.log10(jnp.asarray(data_range, mse.dtype) ** 2 / mse)


def _gaussian_window(size: int, sigma: float) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    w = np.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def _filter_valid(x: Array, window: np.ndarray) -> Array:
    """Separable 'valid' correlation of ``[..., H, W, C]`` with ``window`` along H and W (shift-and-add)."""
    size = len(window)
    h, w = x.shape[-3], x.shape[-2]
    rows = sum(float(window[i]) * x[..., i : h - size + 1 + i, :, :] for i in range(size))
    return sum(float(window[i]) * rows[..., :, i : w - size + 1 + i, :] for i in range(size))


def ssim(pred: Array, target: Array, *, y_channel: bool = False, data_range: float = 1.0) -> Array:
    """Mean structural similarity of ``[..., H, W, C]`` images -> ``[...]`` (Gaussian 11x11, sigma 1.5).

    ``SSIM = (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2))`` with
    ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2``, ``L = data_range``, averaged over valid positions and channels.

    Args:
      pred, target: images in ``[0, data_range]``, same shape, H and W >= 11; C = 3 when ``y_channel``.
      y_channel: measure the BT.601 luma instead of averaging over the RGB channels.
      data_range: dynamic range L of the images.
    """
    pred, target = _prepare(pred, target, y_channel, data_range)
    h, w = pred.shape[-3], pred.shape[-2]
    if h < SSIM_WINDOW or w < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW}, got {h}x{w}")
    window = _gaussian_window(SSIM_WINDOW, SSIM_SIGMA)
    mu_x = _filter_valid(pred, window)
    mu_y = _filter_valid(target, window)
    var_x = _filter_valid(pred * pred, window) - mu_x * mu_x
    var_y = _filter_valid(target * target, window) - mu_y * mu_y
    cov = _filter_valid(pred * target, window) - mu_x * mu_y
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    ssim_map = ((2.0 * mu_x * mu_y + c1) * (2.0 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return jnp.mean(ssim_map, axis=(-3, -2, -1))
