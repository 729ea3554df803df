"""PSNR / SSIM against scikit-image, on RGB and on the BT.601 Y channel."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.color
import skimage.data
import skimage.metrics
import skimage.transform

from turbjax.metrics import image

# Jitted once per module: the images below share shapes, so each (metric, y_channel) compiles once.
psnr = jax.jit(image.psnr, static_argnames=("y_channel", "data_range"))
ssim = jax.jit(image.ssim, static_argnames=("y_channel", "data_range"))
rgb_to_y = image.rgb_to_y


def _clean_images(size=(48, 64)):
    images = [skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee()]
    return [skimage.transform.resize(im / 255.0, size, anti_aliasing=True) for im in images]


def _pairs():
    """(target, pred) float64 pairs in [0, 1]: natural images with noise, a shift and a contrast change."""
    rng = np.random.default_rng(0)
    pairs = []
    for i, clean in enumerate(_clean_images()):
        if i == 0:
            degraded = clean + rng.normal(0.0, 0.05, clean.shape)
        elif i == 1:
            degraded = np.roll(clean, 2, axis=1) + rng.normal(0.0, 0.01, clean.shape)
        else:
            degraded = 0.8 * clean + 0.1
        pairs.append((clean, np.clip(degraded, 0.0, 1.0)))
    pairs.append((rng.uniform(size=clean.shape), rng.uniform(size=clean.shape)))  # unrelated noise: SSIM ~ 0
    return pairs


def _sk_ssim(target, pred, channel_axis):
    return skimage.metrics.structural_similarity(
        target,
        pred,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=1.0,
        channel_axis=channel_axis,
    )


def _sk_y(rgb):
    return skimage.color.rgb2ycbcr(rgb)[..., 0] / 255.0


def test_rgb_to_y_matches_skimage():
    rgb = _clean_images()[0]
    np.testing.assert_allclose(rgb_to_y(jnp.asarray(rgb, jnp.float32)), _sk_y(rgb), atol=1e-6)
    np.testing.assert_allclose(rgb_to_y(jnp.zeros(3)), 16 / 255, rtol=1e-6)
    np.testing.assert_allclose(rgb_to_y(jnp.ones(3)), 235 / 255, rtol=1e-6)


@pytest.mark.parametrize("index", range(4))
def test_against_skimage(index):
    target, pred = _pairs()[index]
    t32, p32 = jnp.asarray(target, jnp.float32), jnp.asarray(pred, jnp.float32)
    ref_psnr = skimage.metrics.peak_signal_noise_ratio(target, pred, data_range=1.0)
    ref_ssim = _sk_ssim(target, pred, channel_axis=-1)
    np.testing.assert_allclose(psnr(p32, t32), ref_psnr, atol=1e-4)
    np.testing.assert_allclose(ssim(p32, t32), ref_ssim, atol=1e-3)

    yt, yp = _sk_y(target), _sk_y(pred)
    ref_psnr_y = skimage.metrics.peak_signal_noise_ratio(yt, yp, data_range=1.0)
    ref_ssim_y = _sk_ssim(yt, yp, channel_axis=None)
    np.testing.assert_allclose(psnr(p32, t32, y_channel=True), ref_psnr_y, atol=1e-4)
    np.testing.assert_allclose(ssim(p32, t32, y_channel=True), ref_ssim_y, atol=1e-3)


def test_grayscale_and_data_range():
    target, pred = _pairs()[0]
    t, p = target[..., :1] * 255.0, pred[..., :1] * 255.0
    ref = skimage.metrics.structural_similarity(
        t[..., 0], p[..., 0], gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255.0
    )
    np.testing.assert_allclose(ssim(jnp.asarray(p), jnp.asarray(t), data_range=255.0), ref, atol=1e-3)
    ref_psnr = skimage.metrics.peak_signal_noise_ratio(t, p, data_range=255.0)
    np.testing.assert_allclose(psnr(jnp.asarray(p), jnp.asarray(t), data_range=255.0), ref_psnr, atol=1e-4)


def test_batched_jitted_and_identical():
    pairs = _pairs()[:3]
    targets = jnp.asarray(np.stack([t for t, _ in pairs]), jnp.float32).reshape(3, 1, 48, 64, 3)
    preds = jnp.asarray(np.stack([p for _, p in pairs]), jnp.float32).reshape(3, 1, 48, 64, 3)
    for fn in (psnr, ssim):
        batched = fn(preds, targets, y_channel=True)
        assert batched.shape == (3, 1)
        single = [fn(preds[i, 0], targets[i, 0], y_channel=True) for i in range(3)]
        np.testing.assert_allclose(batched[:, 0], single, rtol=1e-5)
    assert np.isinf(psnr(targets, targets)).all()
    np.testing.assert_allclose(ssim(targets, targets), 1.0, atol=1e-5)


def test_errors():
    x = jnp.zeros((16, 16, 1))
    with pytest.raises(ValueError, match="RGB"):
        image.psnr(x, x, y_channel=True)
    with pytest.raises(ValueError, match="at least 11"):
        image.ssim(jnp.zeros((8, 16, 3)), jnp.zeros((8, 16, 3)))
    with pytest.raises(ValueError, match="same shape"):
        image.ssim(x, jnp.zeros((16, 16, 3)))
