"""Frozen-flow video: exact integer shifts, frozen degradation without wind, temporal
correlation equal to the spatial correlation at the drift distance."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from turbjax import physics as P

SIZE = 40
SETTINGS = P.SynthesisSettings(blur_pad=8, num_psfs=4)
OPTICS = P.Optics(wavelength=550e-9, focal_length=0.5, f_number=8.0, pixel_pitch=5e-6)
ATMOS = P.Atmosphere(cn2=5e-14, distance=390.625, height=20.0, wind_speed=3.0)  # 1/16 aperture per px
TAU = 5e-3


def _fps_for(step_px):
    """Frame rate at which the frozen flow moves ``step_px`` pixels per frame."""
    return 0.5 * 3.0 / (390.625 * step_px * 5e-6)


@functools.cache
def _image():
    from skimage import data, transform

    return np.asarray(transform.resize(data.astronaut()[:256, :256], (SIZE, SIZE), anti_aliasing=True), np.float32)


def test_drift_per_frame():
    np.testing.assert_allclose(float(P.frame_drift_px(OPTICS, ATMOS, _fps_for(2.0))), 2.0, rtol=1e-5)


def test_integer_shift_is_exact():
    out = P.synthesize_video(
        jax.random.key(0), _image(), OPTICS, ATMOS, TAU, _fps_for(2.0),
        num_frames=4, wind_direction=0.0, max_drift_px=8, settings=SETTINGS,
    )  # fmt: skip
    assert out.degraded.shape == (4, SIZE, SIZE, 3) and out.tilt_field.shape == (4, SIZE, SIZE, 2)
    for t in range(3):  # frame t+1 reads the canvas 2 px further along +x
        np.testing.assert_allclose(out.tilt_field[t + 1][:, :-2], out.tilt_field[t][:, 2:], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(out.blur_width[t + 1][:, :-2], out.blur_width[t][:, 2:], rtol=1e-6)
    out_y = P.synthesize_video(
        jax.random.key(0), _image(), OPTICS, ATMOS, TAU, _fps_for(3.0),
        num_frames=2, wind_direction=np.pi / 2, max_drift_px=8, settings=SETTINGS,
    )  # fmt: skip
    np.testing.assert_allclose(out_y.tilt_field[1][:-3], out_y.tilt_field[0][3:], rtol=1e-5, atol=1e-5)


def test_no_wind_freezes_the_degradation():
    still = ATMOS.replace(wind_speed=0.0)
    out = P.synthesize_video(jax.random.key(1), _image(), OPTICS, still, TAU, 30.0, num_frames=3, settings=SETTINGS)
    for t in (1, 2):
        np.testing.assert_array_equal(np.asarray(out.degraded[t]), np.asarray(out.degraded[0]))
    moving = P.synthesize_video(jax.random.key(1), _image(), OPTICS, ATMOS, TAU, 30.0, num_frames=3, settings=SETTINGS)
    assert float(jnp.abs(moving.degraded[2] - moving.degraded[0]).max()) > 1e-3


def test_clip_input_and_errors():
    clip = np.stack([_image(), _image()[::-1]])
    out = P.synthesize_video(jax.random.key(2), clip, OPTICS, ATMOS, TAU, settings=SETTINGS, max_drift_px=16)
    np.testing.assert_array_equal(np.asarray(out.clean), clip)
    with pytest.raises(ValueError, match="num_frames"):
        P.synthesize_video(jax.random.key(2), _image(), OPTICS, ATMOS, TAU, settings=SETTINGS)
    with pytest.raises(ValueError, match="fps must be finite"):
        P.synthesize_video(jax.random.key(2), clip, OPTICS, ATMOS, TAU, 0.0, settings=SETTINGS)


def test_temporal_correlation_follows_spatial_theory():
    """Frozen flow along x at 4 px/frame: the x-tilt at a pixel correlates between frames 0 and t
    as the longitudinal spatial correlation at a 4t px lag, and falls as v t grows."""
    fps = _fps_for(4.0)
    fn = jax.jit(
        jax.vmap(
            lambda k: (
                P.synthesize_video(
                    k,
                    _image(),
                    OPTICS,
                    ATMOS,
                    TAU,
                    fps,
                    num_frames=9,
                    wind_direction=0.0,
                    max_drift_px=32,
                    settings=SETTINGS,
                ).tilt_field
            )
        )
    )
    keys = jax.random.split(jax.random.key(3), 400).reshape(4, -1)
    fields = np.concatenate([np.asarray(fn(k)) for k in keys]).astype(np.float64)[..., 0]  # [N, T, H, W]
    var = (fields[:, 0] ** 2).mean()
    corr = [(fields[:, 0] * fields[:, t]).mean() / var for t in (2, 4, 8)]
    theory = [float(P.path_tilt_correlation(jnp.asarray(4.0 * t / 16.0))[0]) for t in (2, 4, 8)]
    assert corr[0] > corr[1] > corr[2]
    np.testing.assert_allclose(corr, theory, atol=0.06)
