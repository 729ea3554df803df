"""NIQE and BRISQUE against their reference implementations, their response to blur and noise, and input checks."""

import numpy as np
import pytest
from scipy import ndimage
from skimage import data

from turbjax.metrics import noref


def scene(name: str, height: int = 256, width: int = 256) -> np.ndarray:
    """A centred crop of a scikit-image sample, float64 in [0, 1] ([H, W] for camera, [H, W, 3] otherwise)."""
    image = np.asarray(getattr(data, name)(), np.float64) / 255.0
    top, left = (image.shape[0] - height) // 2, (image.shape[1] - width) // 2
    return image[top : top + height, left : left + width]


def degrade(image: np.ndarray, kind: str, level: float) -> np.ndarray:
    """Gaussian blur of std ``level`` px (per channel), or additive Gaussian noise of std ``level``, clipped."""
    if kind == "blur":
        return ndimage.gaussian_filter(image, (level, level) + (0,) * (image.ndim - 2)) if level else image
    if kind == "noise":
        noise = np.random.default_rng(0).standard_normal(image.shape)
        return np.clip(image + level * noise, 0.0, 1.0)
    return image


# Golden values (scene, height, width, degradation, level, NIQE, BRISQUE), computed once in a scratch virtualenv
# (Python 3.11, numpy 2.3.5, scipy 1.17.1, scikit-image 0.26.0, torch 2.13.0+cpu, opencv-python-headless 5.0.0.93,
# libsvm-official 3.37.0) on exactly the images that scene() and degrade() above make:
# - NIQE: basicsr 1.4.2 (PyPI sdist), basicsr.metrics.niqe.calculate_niqe(img * 255, crop_border=0), with the RGB
#   images flipped to BGR and input_order='HWC', convert_to='y', and camera (gray) with input_order='HW'. basicsr's
#   modules were imported from the unpacked sdist without its package __init__ (which needs training-only deps).
# - BRISQUE: brisque 0.2.0 (PyPI wheel), brisque.BRISQUE(url=False).score(img) on the float RGB image (camera
#   replicated to 3 channels, as skimage.color.rgb2gray needs RGB). numpy < 2.4 is needed there: 0.2.0 calls
#   float() on 1-element arrays.
GOLDEN = [
    ("camera", 256, 256, "clean", 0, 3.577382, 9.236703),
    ("camera", 256, 256, "blur", 1.0, 7.008079, 41.226744),
    ("camera", 256, 256, "blur", 2.0, 9.234476, 67.146483),
    ("camera", 256, 256, "noise", 0.02, 6.769200, 26.753188),
    ("camera", 256, 256, "noise", 0.05, 9.523934, 46.522305),
    ("astronaut", 256, 256, "clean", 0, 3.927589, -0.945267),
    ("astronaut", 256, 256, "blur", 1.0, 7.111408, 29.664467),
    ("astronaut", 256, 256, "blur", 2.0, 7.728604, 60.685886),
    ("astronaut", 256, 256, "noise", 0.02, 5.552956, 13.435025),
    ("astronaut", 256, 256, "noise", 0.05, 8.510691, 32.743246),
    ("coffee", 256, 384, "clean", 0, 5.256895, -5.158208),
    ("chelsea", 256, 256, "clean", 0, 3.401715, 4.071261),
    ("chelsea", 256, 256, "blur", 1.5, 7.328931, 53.963142),
    ("chelsea", 256, 256, "noise", 0.03, 4.970353, 14.410745),
]
# basicsr NIQE of camera replicated to RGB (input_order='HWC', convert_to='y'), same environment as above.
GOLDEN_NIQE_CAMERA_RGB = [("clean", 0, 3.649995), ("blur", 1.0, 6.943902), ("noise", 0.05, 9.295556)]


@pytest.mark.parametrize("name,height,width,kind,level,niqe_ref,brisque_ref", GOLDEN)
def test_matches_reference_implementations(name, height, width, kind, level, niqe_ref, brisque_ref):
    image = degrade(scene(name, height, width), kind, level)
    assert noref.niqe(image) == pytest.approx(niqe_ref, rel=0.01)
    assert noref.brisque(image) == pytest.approx(brisque_ref, rel=0.01)


@pytest.mark.parametrize("kind,level,niqe_ref", GOLDEN_NIQE_CAMERA_RGB)
def test_gray_and_rgb_paths(kind, level, niqe_ref):
    gray = degrade(scene("camera"), kind, level)
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    # NIQE takes the BT.601 Y of RGB (16..235), a gray image as is: the two differ, each matching basicsr.
    assert noref.niqe(rgb) == pytest.approx(niqe_ref, rel=0.01)
    assert noref.niqe(rgb) != pytest.approx(noref.niqe(gray), rel=1e-6)
    assert noref.niqe_luminance(rgb) == pytest.approx(16.0 + 219.0 * gray)
    # BRISQUE's gray weights sum to one: a replicated gray image scores as the gray image.
    assert noref.brisque(rgb) == pytest.approx(noref.brisque(gray), rel=1e-9)
    # One channel is a gray image; a fourth (alpha) channel is ignored.
    assert noref.niqe(gray[..., None]) == noref.niqe(gray)
    assert noref.brisque(gray[..., None]) == noref.brisque(gray)
    rgba = np.concatenate([rgb, np.full(gray.shape + (1,), 0.3)], axis=-1)
    assert noref.niqe(rgba) == noref.niqe(rgb) and noref.brisque(rgba) == noref.brisque(rgb)


# Monotonic response on natural photographs (camera, astronaut, chelsea). The levels are a blur std of 0, 1, 2, 3 px
# and a noise std of 0, 0.02, 0.04, 0.08: at every step each score rises by more than 0.5 (NIQE) and 2.5 (BRISQUE)
# on these scenes (smallest steps: astronaut blur 1 -> 2 px, NIQE +0.62; chelsea noise 0 -> 0.02, BRISQUE +3.0).
# Finer steps are not monotone in general and are not tested: a 0.5 px blur lowers NIQE on chelsea (3.40 -> 3.37)
# and coffee (8.6 -> 7.2), a 0.01 noise lowers it on coffee and rocket, and textures such as brick, whose NIQE falls
# from 15.0 to 8.8 between 0.5 and 1 px of blur, do not follow the natural-scene statistics both models are built on.
@pytest.mark.parametrize("name", ["camera", "astronaut", "chelsea"])
@pytest.mark.parametrize("kind,levels", [("blur", (0.0, 1.0, 2.0, 3.0)), ("noise", (0.0, 0.02, 0.04, 0.08))])
def test_scores_rise_with_blur_and_noise(name, kind, levels):
    images = np.stack([degrade(scene(name), kind, level) for level in levels])
    niqe = noref.niqe_batch(images)
    brisque = noref.brisque_batch(images)
    assert np.all(np.diff(niqe) > 0.5), niqe
    assert np.all(np.diff(brisque) > 2.5), brisque


def test_batches_equal_single_images():
    images = [scene("astronaut"), degrade(scene("astronaut"), "blur", 1.0)]
    np.testing.assert_allclose(noref.niqe_batch(np.stack(images)), [noref.niqe(x) for x in images], rtol=1e-12)
    np.testing.assert_allclose(noref.brisque_batch(np.stack(images)), [noref.brisque(x) for x in images], rtol=1e-9)
    mixed = [scene("chelsea", 200, 250), scene("camera", 128, 96)]  # a list may mix sizes and gray/RGB
    assert noref.niqe_batch(mixed).shape == (2,) and noref.brisque_batch(mixed).shape == (2,)
    assert noref.niqe_batch([]).shape == (0,) and noref.brisque_batch([]).shape == (0,)


def test_float32_and_jax_inputs():
    import jax.numpy as jnp

    image = scene("coffee")
    assert noref.niqe(image.astype(np.float32)) == pytest.approx(noref.niqe(image), rel=1e-3)
    assert noref.brisque(jnp.asarray(image, jnp.float32)) == pytest.approx(noref.brisque(image), rel=1e-3)


def test_crop_border_and_single_block():
    image = scene("astronaut")
    # crop_border drops pixels on every side before blocking: 256 - 2 * 16 = 224 px -> 2 x 2 blocks as before.
    assert noref.niqe(image, crop_border=16) == pytest.approx(noref.niqe(image[16:-16, 16:-16]), rel=1e-12)
    # One 96x96 block: basicsr's covariance is undefined (NaN); turbjax scores against the pristine covariance.
    assert np.isfinite(noref.niqe(image[:96, :150]))


def test_small_or_invalid_inputs_raise_clear_errors():
    image = scene("astronaut")
    with pytest.raises(ValueError, match=r"image must be at least 96x96 .* got 95x256"):
        noref.niqe(image[:95])
    with pytest.raises(ValueError, match=r"crop_border=20; got 88x216"):
        noref.niqe(image[:128, :256], crop_border=20)
    with pytest.raises(ValueError, match="crop_border must be a non-negative integer"):
        noref.niqe(image, crop_border=-1)
    with pytest.raises(ValueError, match=r"image must be at least 16x16 px for BRISQUE"):
        noref.brisque(image[:15, :40])
    with pytest.raises(ValueError, match=r"image must lie in \[0, 1\]"):
        noref.brisque(image * 255.0)
    with pytest.raises(ValueError, match="integer dtype uint8"):
        noref.niqe(data.camera())
    with pytest.raises(ValueError, match="image must be finite"):
        noref.brisque(np.full((64, 64), np.nan))
    with pytest.raises(ValueError, match=r"\[H, W\] or \[H, W, C\]"):
        noref.niqe(image[..., :2])
    with pytest.raises(ValueError, match="images must be"):
        noref.niqe_batch(np.zeros((4, 4)))


def test_model_files_are_plain_arrays():
    niqe_model, brisque_model = noref._niqe_model(), noref._brisque_model()
    assert niqe_model["mu"].shape == (36,) and niqe_model["cov"].shape == (36, 36)
    np.testing.assert_allclose(niqe_model["window"].sum(), 1.0)
    assert brisque_model["support_vectors"].shape == (770, 36) and brisque_model["dual_coef"].shape == (770,)
    assert float(brisque_model["gamma"]) == 0.05 and float(brisque_model["rho"]) == -155.845
    assert (noref.DATA_DIR / "NOTICE").is_file()
