"""Satellite simulator: outputs, (an)isoplanatism, noise, tilt variance against the generator and
Kolmogorov theory, gradients by finite differences, input validation, PSF conventions."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from turbjax import physics as P
from turbjax.physics import satellite as SA
from turbjax.physics import screens as S

T, H, W = 3, 32, 32


def _texture(h: int, w: int, c: int) -> jnp.ndarray:
    """A smooth, textured test image with values in [0.3, 0.7] (no clipping with noise of 0.025)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    channels = [
        0.5 + 0.12 * np.sin(2 * np.pi * x / (5 + i)) * np.cos(2 * np.pi * y / (7 + 2 * i)) + 0.06 * np.cos(x + y + i)
        for i in range(c)
    ]
    return jnp.asarray(np.stack(channels, axis=-1))


PARAMS = SA.satellite_params(0.05, wind_speed=(2.0, 3.0, 4.0), wind_direction=(0.0, 1.0, 2.0))
SETTINGS = SA.SatelliteSettings(grid=3)
SETTINGS = dataclasses.replace(SETTINGS, screen_size=SA.required_screen_size(PARAMS, (H, W), SETTINGS))
IMAGE = _texture(H, W, 3)


@pytest.fixture(scope="module")
def video():
    return P.synthesize_satellite_video(jax.random.key(0), IMAGE, PARAMS, SETTINGS, num_frames=T)


def test_outputs_shapes_ranges_and_parameters(video):
    for name in ("clean", "tilt_only", "blur_only", "degraded"):
        images = np.asarray(getattr(video, name))
        assert images.shape == (T, H, W, 3), name
        assert np.all(np.isfinite(images)) and images.min() >= 0 and images.max() <= 1, name
    assert video.tilt_field.shape == (T, H, W, 2) and np.all(np.isfinite(video.tilt_field))
    assert video.blur_width.shape == (T, H, W) and np.all(np.isfinite(video.blur_width))
    # Seeing-limited width ~ lambda / r0 = 5.5 px at r0 = 5 cm; tilt-removed short exposures are narrower.
    assert 1.5 < float(jnp.mean(video.blur_width)) < 6.0
    assert 0.2 < float(jnp.std(video.tilt_field)) < 5.0
    np.testing.assert_allclose(video.clean[1], IMAGE)
    assert float(jnp.abs(video.degraded - video.clean).mean()) > 0.005
    assert isinstance(video.atmosphere, P.LayerAtmosphere)
    np.testing.assert_allclose(float(video.atmosphere.r0), 0.05)
    np.testing.assert_allclose(float(video.optics.ifov), 2e-6, rtol=1e-6)  # GSD 1 m from 500 km
    assert float(video.exposure_time) == 0.0
    # Frozen flow: consecutive frames differ but stay correlated (0.1-0.2 m of wind per frame vs D = 0.5 m).
    t0, t1 = np.asarray(video.tilt_field[0]).ravel(), np.asarray(video.tilt_field[1]).ravel()
    assert 0.3 < np.corrcoef(t0, t1)[0, 1] < 0.9999


def test_layers_at_the_ground_are_isoplanatic(video):
    """All layers at altitude 0: every pixel sees the same footprint, so the tilt and blur are uniform
    over the frame; the TMTS layers (up to 20 km, theta0 = 1.4 px) give a varying field."""
    atmosphere = PARAMS.atmosphere.replace(altitude=jnp.zeros(3))
    flat = P.synthesize_satellite_video(
        jax.random.key(0), IMAGE, PARAMS.replace(atmosphere=atmosphere), SETTINGS, num_frames=T
    )
    spread = np.ptp(np.asarray(flat.tilt_field), axis=(1, 2))
    assert np.all(spread < 1e-4), spread
    assert np.all(np.ptp(np.asarray(flat.blur_width), axis=(1, 2)) < 1e-4)
    assert np.all(np.ptp(np.asarray(video.tilt_field), axis=(1, 2)) > 0.2)


def test_noise_level_follows_noise_sigma(video):
    """Same key, sigma 0.025 instead of 0.015: the difference is (0.025 - 0.015) x the same normals."""
    low = P.synthesize_satellite_video(
        jax.random.key(0), IMAGE, PARAMS.replace(noise_sigma=jnp.float32(0.015)), SETTINGS, num_frames=T
    )
    high = P.synthesize_satellite_video(
        jax.random.key(0), IMAGE, PARAMS.replace(noise_sigma=jnp.float32(0.025)), SETTINGS, num_frames=T
    )
    np.testing.assert_allclose(high.tilt_only, low.tilt_only)
    np.testing.assert_allclose(float(jnp.std(high.degraded - low.degraded)), 0.01, rtol=0.05)
    residual = np.asarray(video.degraded - video.blur_only)  # noise + the tilt's effect on the blurred image
    assert residual.std() > 0.015


TV_FRAMES, TV_SIZE = 1500, 24


def test_tilt_variance_matches_generator_and_theory():
    """Independent frames (alpha = 0), one field point (tilt is per pixel anyway).

    Per-axis Z-tilt variance in px^2 against (1) the generator's exact expectation for these screens
    (``discrete_tilt_variance``) within 3 sigma of sampling, sigma = sqrt(2 / 1500) = 3.7% per axis
    (frames are independent; the pixels of a frame are strongly correlated and add little; measured
    seed-to-seed: 0.88-1.12 at 600 frames) and (2) Kolmogorov theory 0.1822 lambda^2 D^(-1/3)
    r0^(-5/3) / ifov^2 = (1.60 px)^2: the finite screen (3.3 apertures wide) misses the lowest
    frequencies even with 6 subharmonic levels, the exact expectation is 0.915 of theory, so it must
    lie in [0.85, 1.0] and the measurement in [0.8, 1.05] of theory."""
    settings = SA.SatelliteSettings(grid=1, psf_size=16, alpha=0.0, noise=False)  # coarser pupil: 4x cheaper
    image = jnp.full((TV_SIZE, TV_SIZE, 1), 0.5, jnp.float32)
    video = P.synthesize_satellite_video(jax.random.key(1), image, PARAMS, settings, num_frames=TV_FRAMES)
    tilt = np.asarray(video.tilt_field, np.float64)
    measured = np.mean(tilt**2, axis=(0, 1, 2))  # (x, y), zero-mean process

    n_s = SA.required_screen_size(PARAMS, (TV_SIZE, TV_SIZE), settings)
    dx = float(SA.pupil_sample_spacing(PARAMS, settings))
    mask = S.circular_pupil(settings.pupil_window, 0.5 / dx)
    per_sample = float(S.discrete_tilt_variance(n_s, dx, 0.05, mask, levels=settings.subharmonic_levels))
    expected = per_sample * (settings.psf_size / (2 * np.pi)) ** 2
    theory = 0.1822 * 550e-9**2 * 0.5 ** (-1 / 3) * 0.05 ** (-5 / 3) / float(PARAMS.optics.ifov) ** 2
    sigma = math.sqrt(2 / TV_FRAMES)
    np.testing.assert_allclose(measured, expected, rtol=3 * sigma)
    assert 0.85 < expected / theory < 1.0
    assert np.all((measured / theory > 0.8) & (measured / theory < 1.05))


def test_gradients_match_finite_differences():
    """d loss / d r0 and d loss / d (20 km wind x) by autodiff against central differences (float32),
    loss = mean squared difference between degraded and clean frames.

    The bilinear warp is piecewise linear in the displacement, so a difference whose step moves pixels
    across a sample boundary averages two slopes. With a coherent loss these few pixels hardly matter
    (measured: 0.1-0.2% from autodiff at steps of 1% of r0 and 0.02 m/s); a loss of random-sign
    weights cancels to a residual they dominate (5-8% off). float32 round-off of the loss (~1e-9) is
    < 0.1% of the loss change at these steps. Tolerance 2%."""

    def loss(params):  # the shapes of the `video` fixture: its compiled forward is reused
        video = P.synthesize_satellite_video(jax.random.key(3), IMAGE, params, SETTINGS, num_frames=T)
        return jnp.mean((video.degraded - video.clean) ** 2)

    def loss_of(r0, wind):  # differentiate w.r.t. r0 and the winds only (a smaller backward pass)
        return loss(PARAMS.replace(atmosphere=PARAMS.atmosphere.replace(r0=r0, wind=wind)))

    grad_r0, grad_wind = jax.jit(jax.grad(loss_of, argnums=(0, 1)))(PARAMS.atmosphere.r0, PARAMS.atmosphere.wind)

    def with_r0(r0):
        return PARAMS.replace(atmosphere=PARAMS.atmosphere.replace(r0=jnp.asarray(r0, jnp.float32)))

    def with_wind(vx):
        return PARAMS.replace(atmosphere=PARAMS.atmosphere.replace(wind=PARAMS.atmosphere.wind.at[2, 0].set(vx)))

    h = 5e-4
    fd_r0 = (float(loss(with_r0(0.05 + h))) - float(loss(with_r0(0.05 - h)))) / (2 * h)
    vx, dv = float(PARAMS.atmosphere.wind[2, 0]), 0.02
    fd_wind = (float(loss(with_wind(vx + dv))) - float(loss(with_wind(vx - dv)))) / (2 * dv)
    assert fd_r0 < 0 and abs(fd_wind) > 1e-6  # stronger turbulence (smaller r0) degrades more
    np.testing.assert_allclose(float(grad_r0), fd_r0, rtol=0.02)
    np.testing.assert_allclose(float(grad_wind[2, 0]), fd_wind, rtol=0.02)
    assert np.all(np.isfinite(np.asarray(grad_wind)))


@pytest.mark.parametrize(
    "change, name",
    [
        (lambda p: p.replace(atmosphere=p.atmosphere.replace(r0=jnp.asarray(0.2))), "r0"),
        (lambda p: p.replace(atmosphere=p.atmosphere.replace(wind=p.atmosphere.wind.at[1].set(6.0))), "wind"),
        (lambda p: p.replace(orbit_altitude=jnp.asarray(300e3)), "orbit_altitude"),
        (lambda p: p.replace(noise_sigma=jnp.asarray(0.05)), "noise_sigma"),
        (lambda p: p.replace(atmosphere=p.atmosphere.replace(weight=jnp.array([0.5, 0.3, 0.1]))), "weight"),
        (lambda p: p.replace(atmosphere=p.atmosphere.replace(altitude=jnp.array([1e3, 4e3, 40e3]))), "altitude"),
        (lambda p: p.replace(frame_interval=jnp.asarray(0.0)), "frame_interval"),
    ],
)
def test_bad_parameters_raise(change, name):
    with pytest.raises(ValueError, match=name):
        P.synthesize_satellite_video(jax.random.key(0), IMAGE, change(PARAMS), SETTINGS, num_frames=2)


def test_bad_images_and_settings_raise():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="num_frames"):
        P.synthesize_satellite_video(key, IMAGE, PARAMS, SETTINGS)
    with pytest.raises(ValueError, match="rank"):
        P.synthesize_satellite_video(key, IMAGE[..., 0], PARAMS, SETTINGS, num_frames=2)
    with pytest.raises(ValueError, match="exceed"):
        P.synthesize_satellite_video(key, IMAGE[:8, :8], PARAMS, SETTINGS, num_frames=2)
    with pytest.raises(ValueError, match="psf_size"):
        SA.SatelliteSettings(psf_size=31)
    with pytest.raises(ValueError, match="oversample"):  # the 58-sample pupil cannot fit M/2 - 1 = 31 at q = 2
        P.synthesize_satellite_video(key, IMAGE, PARAMS, dataclasses.replace(SETTINGS, oversample=2), num_frames=2)
    with pytest.raises(ValueError, match="psf_size"):  # 8 px: pupil samples of 3.4 cm cannot resolve r0 = 3 cm
        small = dataclasses.replace(SETTINGS, psf_size=8, oversample=16, screen_size=None)
        p = PARAMS.replace(atmosphere=PARAMS.atmosphere.replace(r0=jnp.asarray(0.03)))
        P.synthesize_satellite_video(key, IMAGE, p, small, num_frames=2)
    with pytest.raises(ValueError, match="screen_size"):
        P.synthesize_satellite_video(key, IMAGE, PARAMS, dataclasses.replace(SETTINGS, screen_size=64), num_frames=2)
    with pytest.raises(ValueError, match="weights"):
        SA.satellite_params(weights="flat")


def test_weight_options_and_sampler():
    """'hufnagel-valley' integrates HV5/7 over the slabs of the TMTS altitudes; the printed weights give
    theta0 = 2.74 microrad, the HV-integrated ones 6.3 (HV5/7 itself: 6.89) at r0 = 5 cm."""
    tmts = SA.satellite_params(0.05)
    hv = SA.satellite_params(0.05, weights="hufnagel-valley")
    np.testing.assert_allclose(hv.atmosphere.weight, P.hufnagel_valley_weights(), rtol=1e-6)
    np.testing.assert_allclose(float(P.layer_isoplanatic_angle(tmts.atmosphere)), 2.74e-6, rtol=0.01)
    np.testing.assert_allclose(float(P.layer_isoplanatic_angle(hv.atmosphere)), 6.3e-6, rtol=0.02)
    np.testing.assert_allclose(float(tmts.ground_sample_distance), 1.0, rtol=1e-6)

    batch = jax.jit(jax.vmap(SA.sample_satellite_params))(jax.random.split(jax.random.key(4), 64))
    r0 = np.asarray(batch.atmosphere.r0)
    speed = np.linalg.norm(np.asarray(batch.atmosphere.wind), axis=-1)
    assert r0.min() >= 0.03 and r0.max() <= 0.10 and np.ptp(r0) > 0.04
    assert speed.max() <= 5.0 + 1e-5 and speed.shape == (64, 3)
    assert 400e3 <= float(batch.orbit_altitude.min()) and float(batch.orbit_altitude.max()) <= 600e3
    assert 0.015 <= float(batch.noise_sigma.min()) and float(batch.noise_sigma.max()) <= 0.025
    SA.check_satellite_params(batch)  # the whole batch is in range


def test_pupil_psf_is_centred_and_tilt_units_match():
    """Zero phase: the diffraction PSF is symmetric about pixel (K/2, K/2). A phase ramp of b rad per
    pupil sample moves the PSF by b K / (2 pi) px along +x (what the tilt field is built from)."""
    settings = SA.SatelliteSettings()
    k = settings.psf_size
    mask = S.circular_pupil(settings.pupil_window, 29.0)
    psf_of = jax.jit(lambda phase: SA.pupil_psf(phase, mask, settings))
    psf = np.asarray(psf_of(jnp.zeros(mask.shape)))
    np.testing.assert_allclose(psf.sum(), 1.0, rtol=1e-5)
    np.testing.assert_allclose(psf[1:, 1:], psf[1:, 1:][::-1, ::-1], atol=1e-6)
    assert np.unravel_index(psf.argmax(), psf.shape) == (k // 2, k // 2)

    b = 2 * np.pi * 1.5 / k  # 1.5 px
    ramp = b * (jnp.arange(settings.pupil_window)[None, :] + 0.0 * jnp.arange(settings.pupil_window)[:, None])
    shifted = np.asarray(psf_of(ramp))
    cols = np.arange(k)
    centroid_shift = (shifted.sum(0) @ cols) - (psf.sum(0) @ cols)
    np.testing.assert_allclose(centroid_shift, 1.5, atol=0.05)
    np.testing.assert_allclose(float(SA._shift_px(jnp.asarray(b), settings)), 1.5, rtol=1e-6)
    tilt = S.ztilt(ramp * mask, mask)
    np.testing.assert_allclose(np.asarray(tilt), [b, 0.0], atol=1e-5)


def test_blend_weights_are_a_smooth_partition_of_unity():
    weights = np.asarray(SA.blend_weights(33, 5))
    np.testing.assert_allclose(weights.sum(0), 1.0, rtol=1e-6)
    np.testing.assert_allclose(weights[:, ::8], np.eye(5), atol=1e-6)  # 1 at its own field point
    assert np.abs(np.diff(weights, axis=1)).max() < 0.2  # no jumps
