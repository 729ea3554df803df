"""Blur-width statistics (ET-Turb eq. 14-16) and the spatially varying blur."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from turbjax import physics as P
from turbjax.physics.blur import width_mtf_fn
from turbjax.physics.mtf import rfrequency_grid

OPTICS = P.Optics(wavelength=550e-9, focal_length=0.4, f_number=5.6, pixel_pitch=5e-6)
ATMOS = P.Atmosphere(cn2=3e-13, distance=400.0, height=20.0, wind_speed=4.0)
TAU = 4e-3


def printed_eq14_15(lam, f, n, pitch, cn2, dist, wind, tau):
    """ET-Turb eq. 14-15 exactly as printed (angles), spherical r0; independent of turbjax."""
    d = f / n
    k = 2 * np.pi / lam
    r0 = (0.423 * k**2 * cn2 * dist * 3 / 8) ** (-0.6)
    x = (d / r0) ** (5 / 3)
    mean = 2.44 * lam / d * np.sqrt(1 + 0.268 * x + 1.792 * x / (1 + (6.97 * d / (wind * tau)) ** 0.607))
    std = 1.70 * r0 ** (1 / 3) / lam * np.sqrt(d * cn2 * dist) * (1 - 1 / (1 + (4.45 * d / (wind * tau)) ** 0.5))
    ifov = pitch / f
    return mean / ifov, std * lam / d / ifov  # std read in lambda / D


def test_stats_match_printed_equations():
    ref_mean, ref_std = printed_eq14_15(550e-9, 0.4, 5.6, 5e-6, 3e-13, 400.0, 4.0, TAU)
    mean, std = P.blur_width_stats(OPTICS, ATMOS, TAU, definition="paper")
    np.testing.assert_allclose([float(mean), float(std)], [ref_mean, ref_std], rtol=1e-4)
    fmean, fstd = P.blur_width_stats(OPTICS, ATMOS, TAU)
    np.testing.assert_allclose([float(fmean), float(fstd)], [ref_mean * 1.03 / 2.44, ref_std * 1.03 / 2.44], rtol=1e-4)


def test_stats_exposure_limits():
    still = ATMOS.replace(wind_speed=0.0)
    m0, s0 = P.blur_width_stats(OPTICS, still, TAU)
    assert np.isfinite(float(m0)) and np.isfinite(float(s0))
    means = [float(P.blur_width_stats(OPTICS, ATMOS, t)[0]) for t in (1e-4, 1e-3, 1e-2, 1e-1)]
    stds = [float(P.blur_width_stats(OPTICS, ATMOS, t)[1]) for t in (1e-4, 1e-3, 1e-2, 1e-1)]
    assert np.all(np.diff(means) > 0) and np.all(np.diff(stds) < 0)  # longer: wider, steadier


@functools.cache
def _fields(n_fields=64, size=128):
    keys = jax.random.split(jax.random.key(1), n_fields)
    fn = jax.jit(jax.vmap(lambda k: P.blur_width_field(k, (size, size), OPTICS, ATMOS, TAU)))
    return np.asarray(fn(keys))


def test_field_mean_and_std_match_stats():
    fields = _fields()
    mean, std = (float(v) for v in P.blur_width_stats(OPTICS, ATMOS, TAU))
    assert mean - 5 * std > 0.1  # the eps floor plays no part here
    np.testing.assert_allclose(fields.mean(), mean, rtol=0.05)
    np.testing.assert_allclose(np.sqrt(fields.var(axis=(1, 2), ddof=1).mean()), std, rtol=0.05)


def test_field_never_below_eps():
    mean = float(P.blur_width_stats(OPTICS, ATMOS, TAU)[0])
    field = np.asarray(P.blur_width_field(jax.random.key(2), (64, 64), OPTICS, ATMOS, TAU, eps=mean))
    assert field.min() >= mean - 1e-6
    assert (field <= mean + 1e-6).mean() > 0.2  # the floor is actually active


def test_field_is_spatially_correlated():
    field = _fields()[0]
    corr = lambda lag: np.corrcoef(field[:, :-lag].ravel(), field[:, lag:].ravel())[0, 1]  # noqa: E731
    assert corr(1) > corr(4) > corr(16)


def _test_image(size=48):
    from skimage import data, transform

    img = transform.resize(data.astronaut()[100:300, 150:350], (size, size), anti_aliasing=True)
    return np.asarray(img, np.float32)


def _direct_reference(image, widths, size=65):
    """Every output pixel = its own width's PSF (gather form), reflect boundary, NumPy."""
    flat = jnp.asarray(widths.ravel())
    kernels = np.asarray(jax.jit(jax.vmap(lambda w: P.psf_for_width(w, size, OPTICS, ATMOS, TAU)))(flat))
    half = size // 2
    padded = np.pad(image, ((half, half), (half, half), (0, 0)), mode="reflect")
    h, w, _ = image.shape
    out = np.empty_like(image)
    for idx in range(h * w):
        y, x = divmod(idx, w)
        patch = padded[y : y + size, x : x + size]
        out[y, x] = np.einsum("ij,ijc->c", kernels[idx][::-1, ::-1], patch)
    return out


@pytest.mark.parametrize("kind,num_psfs", [("simulated", 6), ("wide", 10)])
def test_spatially_varying_blur_matches_direct_reference(kind, num_psfs):
    """Within 1% of the direct per-pixel-kernel blur, on a simulated width field (the bank's
    default K = 6) and on a deliberately wide 1.5-5 px field (K grows with the log-range)."""
    image = _test_image()
    if kind == "simulated":
        widths = np.asarray(P.blur_width_field(jax.random.key(3), (48, 48), OPTICS, ATMOS, TAU))
    else:
        yy, xx = np.mgrid[:48, :48]
        widths = (1.5 + 3.5 * (0.5 + 0.5 * np.sin(xx / 7.0) * np.cos(yy / 9.0))).astype(np.float32)
    got = np.asarray(
        P.spatially_varying_blur(jnp.asarray(image), jnp.asarray(widths), OPTICS, ATMOS, TAU, num_psfs=num_psfs)
    )
    ref = _direct_reference(image, widths)
    assert np.abs(got - ref).max() < 0.01
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 0.01


@pytest.mark.parametrize("width", [2.0, 4.5])
def test_uniform_width_is_one_convolution(width):
    image = _test_image()
    widths = jnp.full((48, 48), width)
    got = np.asarray(P.spatially_varying_blur(jnp.asarray(image), widths, OPTICS, ATMOS, TAU, pad=32))
    # Exactly one FFT convolution with that width's OTF on the padded canvas ...
    r0 = P.local_fried_parameter(width, OPTICS, ATMOS, TAU)
    otf = width_mtf_fn(OPTICS, ATMOS, TAU)(rfrequency_grid(112, 112), r0)
    padded = np.pad(image, ((32, 32), (32, 32), (0, 0)), mode="reflect")
    one = np.fft.irfft2(np.fft.rfft2(padded, axes=(0, 1)) * np.asarray(otf)[..., None], s=(112, 112), axes=(0, 1))
    np.testing.assert_allclose(got, one[32:80, 32:80], atol=1e-5)
    # ... which is a direct convolution with its (65 px) kernel, up to the far tails: the
    # ~0.3% of a 4.5 px PSF's mass beyond 32 px wraps around the padded canvas.
    kernel = np.asarray(P.psf_for_width(width, 65, OPTICS, ATMOS, TAU))
    ref = np.stack([ndimage.convolve(image[..., c], kernel, mode="mirror") for c in range(3)], -1)
    np.testing.assert_allclose(got, ref, atol=3e-3)


def test_width_inversion_round_trips_over_table1_draws():
    """r0(w) reproduces w for widths across Table-1 draws, including slow, narrow-aperture optics
    (F/16, f = 0.55 m: D = 3.4 cm) where an unsafeguarded Newton iteration used to diverge."""
    from turbjax.physics.blur import bandlimited_fwhm

    def round_trip(key, fraction):
        optics, atmos, tau = P.sample_et_turb_params(key)
        mean, std = P.blur_width_stats(optics, atmos, tau)
        floor = bandlimited_fwhm(lambda f: width_mtf_fn(optics, atmos, tau)(f, 1e2), mean)
        width = jnp.maximum(mean + (fraction - 0.5) * 4.0 * std, 1.05 * floor)
        r0 = P.local_fried_parameter(width, optics, atmos, tau)
        return width, bandlimited_fwhm(lambda f: width_mtf_fn(optics, atmos, tau)(f, r0), width)

    keys = jax.random.split(jax.random.key(11), 256)
    fractions = jnp.linspace(0.0, 1.0, 256)
    want, got = jax.jit(jax.vmap(round_trip))(keys, fractions)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-3)
    # The case that diverged: widths between the diffraction floor and the seeing FWHM.
    optics = P.Optics(wavelength=550e-9, focal_length=0.5513, f_number=16.0, pixel_pitch=5e-6)
    atmos = P.Atmosphere(cn2=2.814e-13, distance=478.2, height=100.0, wind_speed=5.708)
    widths = jnp.asarray([2.45, 3.05, 3.8, 4.73, 5.9, 7.34])
    r0 = jax.vmap(lambda w: P.local_fried_parameter(w, optics, atmos, 1.659e-3))(widths)
    back = jax.vmap(lambda w, r: bandlimited_fwhm(lambda f: width_mtf_fn(optics, atmos, 1.659e-3)(f, r), w))(widths, r0)
    assert bool(jnp.all(jnp.diff(r0) < 0))  # wider PSF, smaller local r0
    np.testing.assert_allclose(np.asarray(back), np.asarray(widths), rtol=1e-3)


def test_width_inversion_gradient_is_the_implicit_derivative():
    """d r0 / d width by autodiff equals central differences of the (bisection) value."""
    fn = jax.jit(lambda w: jnp.log(P.local_fried_parameter(w, OPTICS, ATMOS, TAU)))
    width = 3.5
    grad = float(jax.grad(fn)(width))
    h = 0.02
    fd = (float(fn(width + h)) - float(fn(width - h))) / (2 * h)
    assert grad < 0
    np.testing.assert_allclose(grad, fd, rtol=0.03)
