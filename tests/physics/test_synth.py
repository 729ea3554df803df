"""Frame synthesis: contract, jit/vmap/sharding equivalence, gradients, input checks, sampler."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as PS

from turbjax import physics as P

SIZE = 48
SETTINGS = P.SynthesisSettings(blur_pad=16, num_psfs=6)
OPTICS = P.Optics(wavelength=550e-9, focal_length=0.3, f_number=4.0, pixel_pitch=5e-6)
ATMOS = P.Atmosphere(cn2=2e-13, distance=300.0, height=10.0, wind_speed=3.0)
TAU = 5e-3


@functools.cache
def _image():
    from skimage import data, transform

    return np.asarray(transform.resize(data.chelsea()[50:250, 100:300], (SIZE, SIZE), anti_aliasing=True), np.float32)


@functools.cache
def _batched():
    return jax.jit(jax.vmap(lambda k, im, o, a, t: P.synthesize_frame(k, im, o, a, t, SETTINGS)))


def _batch(n, seed=0):
    keys = jax.random.split(jax.random.key(seed), n)
    optics, atmos, tau = jax.vmap(P.sample_et_turb_params)(keys)
    images = jnp.broadcast_to(_image(), (n, SIZE, SIZE, 3))
    return keys, images, optics, atmos, tau


def test_degradation_contract():
    out = P.synthesize_frame(jax.random.key(0), _image(), OPTICS, ATMOS, TAU, SETTINGS)
    assert out.clean.shape == out.tilt_only.shape == out.blur_only.shape == out.degraded.shape == (SIZE, SIZE, 3)
    assert out.tilt_field.shape == (SIZE, SIZE, 2) and out.blur_width.shape == (SIZE, SIZE)
    for image in (out.tilt_only, out.blur_only, out.degraded):
        assert image.dtype == jnp.float32
        assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    np.testing.assert_allclose(out.tilt_only, P.warp(jnp.asarray(_image()), out.tilt_field), atol=1e-6)
    # both parts degrade, and the full frame is the blurred tilt image, not either part alone
    err = lambda x, y: float(jnp.mean((x - y) ** 2))  # noqa: E731
    assert err(out.tilt_only, out.clean) > 1e-4 and err(out.blur_only, out.clean) > 1e-4
    assert err(out.degraded, out.tilt_only) > 1e-4 and err(out.degraded, out.blur_only) > 1e-4


def test_jit_and_vmap_equal_eager():
    keys, images, optics, atmos, tau = _batch(3)
    batched = _batched()(keys, images, optics, atmos, tau)
    for i in range(3):
        optics_i, atmos_i = jax.tree_util.tree_map(lambda x, i=i: x[i], (optics, atmos))
        eager = P.synthesize_frame(keys[i], images[i], optics_i, atmos_i, tau[i], SETTINGS)
        # jit fuses transcendental functions differently (~5e-7 relative in the covariance);
        # the float32 embedding turns that into ~1e-4 of the tilt std, which moves pixel values
        # by up to a few 1e-4 at sharp edges.
        scale = float(jnp.std(eager.tilt_field))
        np.testing.assert_allclose(batched.tilt_field[i], eager.tilt_field, atol=1e-3 * scale)
        np.testing.assert_allclose(batched.degraded[i], eager.degraded, atol=1e-3)


def test_sharded_batch_equals_single_device():
    assert jax.device_count() == 8
    args = _batch(8, seed=1)
    single = _batched()(*args)
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    sharding = NamedSharding(mesh, PS("data"))
    sharded_args = jax.device_put(args, sharding)
    sharded = _batched()(*sharded_args)
    assert len(sharded.degraded.sharding.device_set) == 8
    np.testing.assert_allclose(np.asarray(sharded.degraded), np.asarray(single.degraded), atol=1e-4)


def _scalar_loss(scale, which):
    optics, atmos, tau = OPTICS, ATMOS, TAU
    if which == "cn2":
        atmos = atmos.replace(cn2=atmos.cn2 * scale)
    elif which == "exposure_time":
        tau = tau * scale
    else:
        optics = optics.replace(focal_length=optics.focal_length * scale)
    out = P.synthesize_frame(jax.random.key(3), jnp.asarray(_image()), optics, atmos, tau, SETTINGS)
    return jnp.mean(jnp.square(out.degraded - out.clean))


@pytest.mark.parametrize("which", ["cn2", "exposure_time", "focal_length"])
def test_gradient_matches_finite_differences(which):
    """d loss / d log(parameter) by autodiff and by central differences (h = 0.5%)."""
    loss = jax.jit(functools.partial(_scalar_loss, which=which))
    grad = float(jax.grad(loss)(1.0))
    h = 0.005
    fd = (float(loss(1.0 + h)) - float(loss(1.0 - h))) / (2 * h)
    assert np.isfinite(grad) and abs(grad) > 1e-6
    np.testing.assert_allclose(grad, fd, rtol=0.05)


@pytest.mark.parametrize(
    "change,match",
    [
        (dict(atmosphere=ATMOS.replace(cn2=-1e-14)), r"atmosphere\.cn2 must be finite and in \(0, 1e-09\]"),
        (dict(atmosphere=ATMOS.replace(cn2=float("nan"))), r"atmosphere\.cn2"),
        (dict(exposure_time=0.0), r"exposure_time must be finite and in \(0, inf\] s"),
        (dict(image=np.full((SIZE, SIZE, 3), 1.5, np.float32)), r"image must be finite and in \[0, 1\]"),
        (dict(image=np.zeros((SIZE, SIZE), np.float32)), r"image must have rank 3"),
        (dict(image=np.zeros((SIZE, SIZE, 3), np.uint8)), r"image must be a float array"),
        (dict(optics=OPTICS.replace(f_number=0.0)), r"optics\.f_number"),
    ],
)
def test_bad_input_raises_before_compute(change, match):
    kwargs = dict(image=_image(), optics=OPTICS, atmosphere=ATMOS, exposure_time=TAU)
    kwargs.update(change)
    with pytest.raises(ValueError, match=match):
        P.synthesize_frame(jax.random.key(0), settings=SETTINGS, **kwargs)


def test_no_nan_over_1000_table1_draws():
    fn = jax.jit(jax.vmap(lambda k, im: P.synthesize_frame(k, im, *P.sample_et_turb_params(k), SETTINGS)))
    image = jnp.broadcast_to(_image()[8:40, 8:40], (100, 32, 32, 3))
    for chunk in range(10):
        keys = jax.random.split(jax.random.key(100 + chunk), 100)
        out = fn(keys, image)
        for leaf in (out.degraded, out.tilt_only, out.blur_only, out.tilt_field, out.blur_width):
            assert bool(jnp.all(jnp.isfinite(leaf)))


def test_sampler_follows_table1():
    keys = jax.random.split(jax.random.key(11), 4000)
    optics, atmos, tau = jax.vmap(P.sample_et_turb_params)(keys)
    dist = np.asarray(atmos.distance)
    fnum = np.asarray(optics.f_number, np.float64)
    seen = set()
    for row in P.ET_TURB_TABLE1:
        lo, hi = row["distance"]
        in_row = (dist >= lo) & (dist <= hi)
        seen.add((lo, hi))
        assert in_row.mean() > 0.1  # two configurations of 12 share each distance range
    assert len(seen) == 6
    assert set(np.round(fnum, 1).tolist()) == {2.8, 4.0, 5.6, 8.0, 11.0, 16.0, 18.0, 24.0}
    assert np.asarray(atmos.cn2).min() >= 0.5e-14 * 0.999 and np.asarray(atmos.cn2).max() <= 500e-14 * 1.001
    assert np.asarray(tau).min() >= 0.5e-3 * 0.999 and np.asarray(tau).max() <= 40e-3 * 1.001
    # the f/24 set belongs only to the longest paths
    assert dist[np.isclose(fnum, 24.0)].min() >= 800


def test_exposure_noise_level():
    noisy_settings = P.SynthesisSettings(blur_pad=16, num_psfs=6, noise=True)
    gray = np.full((SIZE, SIZE, 3), 0.5, np.float32)
    clean = P.synthesize_frame(jax.random.key(0), gray, OPTICS, ATMOS, 1e-3, SETTINGS)
    noisy = P.synthesize_frame(jax.random.key(0), gray, OPTICS, ATMOS, 1e-3, noisy_settings)
    np.testing.assert_allclose(float(jnp.std(noisy.degraded - clean.degraded)), 0.001, rtol=0.05)
    np.testing.assert_allclose(float(P.exposure_noise_sigma(0.5e-3)), 0.001 / np.sqrt(0.5), rtol=1e-6)


@pytest.mark.parametrize("model", ["continuous", "fixed", "binary"])
def test_exposure_models_give_the_mtfs_they_claim(model):
    """Table 3 ablation: the blur sees the ET-MTF of tau, of 1 ms, or the SE / LE limit."""
    settings = P.SynthesisSettings(exposure_model=model)
    freq = jnp.linspace(0.0, 0.5, 33)
    se = np.asarray(P.mtf_short_exposure(freq, OPTICS, ATMOS))
    le = np.asarray(P.mtf_long_exposure(freq, OPTICS, ATMOS))
    for tau in (5e-4, 4e-2):  # v tau = 1.5 mm < D = 75 mm, and 120 mm > D
        used = P.blur_exposure_time(tau, OPTICS, ATMOS, settings)
        mtf = np.asarray(P.mtf_exposure(freq, OPTICS, ATMOS, used))
        if model == "continuous":
            expected = np.asarray(P.mtf_exposure(freq, OPTICS, ATMOS, tau))
        elif model == "fixed":
            expected = np.asarray(P.mtf_exposure(freq, OPTICS, ATMOS, 1e-3))
        else:
            expected = se if tau * 3.0 < 0.3 / 4.0 else le
        np.testing.assert_allclose(np.log(mtf), np.log(expected), rtol=2e-3, atol=1e-6)


def test_fixed_exposure_blur_ignores_tau():
    fixed = P.SynthesisSettings(blur_pad=16, num_psfs=6, exposure_model="fixed")
    a = P.synthesize_frame(jax.random.key(4), _image(), OPTICS, ATMOS, 5e-4, fixed)
    b = P.synthesize_frame(jax.random.key(4), _image(), OPTICS, ATMOS, 3e-2, fixed)
    np.testing.assert_allclose(np.asarray(a.degraded), np.asarray(b.degraded), atol=1e-6)
    c = P.synthesize_frame(jax.random.key(4), _image(), OPTICS, ATMOS, 3e-2, SETTINGS)
    assert float(jnp.abs(c.degraded - a.degraded).max()) > 1e-3


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(num_psfs=1), "num_psfs"),
        (dict(tilt_embed_factor=2.0), "tilt_embed_factor"),
        (dict(exposure_model="random"), "exposure_model"),
        (dict(fixed_exposure_s=0.0), "fixed_exposure_s"),
    ],
)
def test_bad_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        P.SynthesisSettings(**kwargs)
