"""Inverse problems through the simulators (turbjax.physics.inverse).

Tolerances: with the key known the simulator is a deterministic function and the truth an exact
zero of the pixel loss, so 1% (the issue's figure) leaves a wide margin over the optimiser's
float32 error (measured ~1e-6 for ET-Turb). With the key unknown the error is the estimator's:
20% on a 32-frame 256^2 clip, measured ~1% for Cn2 and ~10% for the exposure time.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs.invert import get_config
from turbjax.inverse_demo import et_turb_problem, satellite_problem, start_values
from turbjax.physics import inverse

CONFIG = get_config("tiny")
ET_TRUTH = {"cn2": CONFIG.et_turb.truth.cn2, "exposure_time": CONFIG.et_turb.truth.exposure_time}
ET_BOUNDS = {name: tuple(CONFIG.et_turb.bounds[name]) for name in ET_TRUTH}
# Bounds hold to float32 rounding (float32(0.03) = 0.029999999).
_F32_LOW, _F32_HIGH = 1 - 1e-6, 1 + 1e-6
STATS = dict(num_bands=CONFIG.fit.num_bands, band_range=tuple(CONFIG.fit.band_range))


def _as_arrays(values):
    return {k: jnp.asarray(v, jnp.float32) for k, v in values.items()}


def test_bounded_log_parametrisation_round_trips_and_stays_inside():
    bounds = {"a": (1e-3, 10.0), "b": (2.0, 3.0)}
    values = {"a": 0.05, "b": 2.5}
    back = inverse.to_physical(inverse.to_unconstrained(values, bounds), bounds)
    np.testing.assert_allclose([float(back["a"]), float(back["b"])], [0.05, 2.5], rtol=1e-5)
    extreme = inverse.to_physical({"a": jnp.float32(-1e3), "b": jnp.float32(1e3)}, bounds)
    assert float(extreme["a"]) >= _F32_LOW * 1e-3 and float(extreme["b"]) <= _F32_HIGH * 3.0


@pytest.mark.parametrize(
    "init, bounds, match",
    [
        ({"a": 5.0}, {"a": (1.0, 2.0)}, "outside its bounds"),
        ({"a": 1.0}, {"a": (0.0, 2.0)}, "0 < lo < hi"),
        ({"a": 1.0}, {"b": (0.5, 2.0)}, "same parameters"),
    ],
)
def test_bad_bounds_are_refused_before_any_work(init, bounds, match):
    with pytest.raises(ValueError, match=match):
        inverse.fit_parameters(lambda p: jnp.float32(0.0), init, bounds)


@pytest.mark.parametrize("method", inverse.METHODS)
def test_fit_finds_an_analytic_minimum_and_respects_bounds(method):
    def residuals(p):  # minimum at a = 0.02, b = 7; a curved valley (a b^2 fixed) as in the statistics fit
        return jnp.stack([jnp.log(p["a"] / 0.02) + 2.0 * jnp.log(p["b"] / 7.0), 0.3 * jnp.log(p["b"] / 7.0)])

    steps = 3000 if method == "adam" else 60
    options = dict(method=method, steps=steps, learning_rate=0.02, tolerance=1e-7)
    free = inverse.fit_parameters(residuals, {"a": 0.06, "b": 21.0}, {"a": (1e-4, 1.0), "b": (1.0, 100.0)}, **options)
    np.testing.assert_allclose([free.params["a"], free.params["b"]], [0.02, 7.0], rtol=2e-3)
    assert free.loss[-1] < 1e-5 * free.loss[0]
    clipped = inverse.fit_parameters(
        residuals, {"a": 0.06, "b": 21.0}, {"a": (0.03, 1.0), "b": (1.0, 100.0)}, **options
    )
    assert np.all(clipped.trajectory["a"] >= _F32_LOW * 0.03)  # never past its bound
    if method != "adam":  # the constrained optimum is on the bound (Adam crawls along the flat valley)
        assert clipped.params["a"] < 0.0301


def test_statistics_of_the_clean_clip_are_zero_power_loss_and_unit_transfer():
    clean, *_ = et_turb_problem(CONFIG, 64)
    stats = np.asarray(inverse.clip_statistics(jnp.stack([clean, clean]), clean, **STATS))
    np.testing.assert_allclose(stats[: STATS["num_bands"]], 0.0, atol=1e-5)
    np.testing.assert_allclose(stats[STATS["num_bands"] :], 1.0, atol=1e-5)


def test_statistics_follow_a_known_gaussian_blur():
    """A blur acting on the windowed image multiplies every Fourier mode by its MTF: the transfer
    statistic is then the band average of the MTF weighted by the clean power, and the log power ratio
    the log of the weighted band average of MTF^2 (here checked against NumPy directly)."""
    rng = np.random.default_rng(0)
    lum = rng.random((64, 64))
    window = np.outer(np.hanning(64), np.hanning(64))
    windowed = (lum - lum.mean()) * window  # what clip_statistics transforms
    f = np.hypot(np.fft.fftfreq(64)[:, None], np.fft.fftfreq(64)[None, :])
    mtf = np.exp(-2 * np.pi**2 * 1.2**2 * f**2)  # Gaussian, sigma 1.2 px
    blurred_windowed = np.real(np.fft.ifft2(np.fft.fft2(windowed) * mtf))
    # The degraded frame whose windowed version is blurred_windowed (np.hanning is 0 only on the border,
    # where the window erases whatever the frame holds).
    degraded = np.where(window > 0, blurred_windowed / np.where(window > 0, window, 1.0), 0.0) + lum.mean()
    stats = np.asarray(
        inverse.clip_statistics(
            jnp.asarray(degraded[None, ..., None], jnp.float32), jnp.asarray(lum[..., None], jnp.float32), **STATS
        )
    )
    masks = inverse.frequency_bands((64, 64), **STATS)
    power = np.abs(np.fft.fft2(windowed)) ** 2
    expected_transfer = (masks * mtf * power).sum((1, 2)) / (masks * power).sum((1, 2))
    expected_power = np.log((masks * mtf**2 * power).sum((1, 2)) / (masks * power).sum((1, 2)))
    np.testing.assert_allclose(stats[STATS["num_bands"] :], expected_transfer, atol=3e-3)
    np.testing.assert_allclose(stats[: STATS["num_bands"]], expected_power, atol=3e-2)


def test_et_turb_recovered_within_1_percent_with_the_key_known():
    clean, _, _, make_simulator = et_turb_problem(CONFIG, 64)
    key = jax.random.key(3)
    observed = make_simulator(4)(key, _as_arrays(ET_TRUTH)).degraded
    init = start_values(ET_TRUTH, 3.0, ET_BOUNDS)
    assert init["cn2"] == pytest.approx(3 * ET_TRUTH["cn2"]) and init["exposure_time"] == pytest.approx(
        ET_TRUTH["exposure_time"] / 3
    )
    result = inverse.recover(make_simulator, observed, clean, init, ET_BOUNDS, key=key, steps=CONFIG.fit.steps)
    errors = inverse.relative_errors(result.params, ET_TRUTH)
    assert max(errors.values()) < 0.01, errors
    for name, (lo, hi) in ET_BOUNDS.items():
        assert np.all((result.trajectory[name] >= _F32_LOW * lo) & (result.trajectory[name] <= _F32_HIGH * hi))


def test_wind_speed_joins_the_known_key_fit_from_a_start_inside_its_basin():
    clean, _, _, make_simulator = et_turb_problem(CONFIG, 64)
    truth = dict(ET_TRUTH, wind_speed=CONFIG.et_turb.truth.wind_speed)
    bounds = {name: tuple(CONFIG.et_turb.bounds[name]) for name in truth}
    key = jax.random.key(1)
    observed = make_simulator(4)(key, _as_arrays(truth)).degraded
    init = start_values(truth, 3.0, bounds, {"wind_speed": CONFIG.et_turb.wind_init_factor})
    result = inverse.recover(make_simulator, observed, clean, init, bounds, key=key, steps=CONFIG.fit.steps)
    errors = inverse.relative_errors(result.params, truth)
    assert max(errors.values()) < 0.01, errors


def test_satellite_r0_recovered_within_1_percent_with_the_key_known():
    clean, make_simulator = satellite_problem(CONFIG)
    truth, bounds = {"r0": CONFIG.satellite.r0}, {"r0": tuple(CONFIG.satellite.bounds)}
    key = jax.random.key(4)
    observed = make_simulator(3)(key, _as_arrays(truth)).degraded
    init = start_values(truth, 3.0, bounds)
    assert init["r0"] == pytest.approx(truth["r0"] / 3)
    result = inverse.recover(make_simulator, observed, clean, init, bounds, key=key, steps=CONFIG.fit.steps)
    assert inverse.relative_errors(result.params, truth)["r0"] < 0.01, result.params
    low, high = bounds["r0"]
    assert np.all((result.trajectory["r0"] >= _F32_LOW * low) & (result.trajectory["r0"] <= _F32_HIGH * high))


def test_et_turb_recovered_within_20_percent_with_the_key_unknown_on_a_32_frame_256px_clip():
    clean, _, _, make_simulator = et_turb_problem(CONFIG, 256)
    observed = make_simulator(32)(jax.random.key(CONFIG.seed), _as_arrays(ET_TRUTH)).degraded
    init = start_values(ET_TRUTH, 3.0, ET_BOUNDS)
    fit = CONFIG.fit
    # One fit from the best grid point: the config's second start guards shorter clips against the
    # statistics' side minima; here both starts end at the same point (measured), at twice the cost.
    result = inverse.recover(
        make_simulator, observed, clean, init, ET_BOUNDS, seed=CONFIG.seed, num_keys=fit.num_keys,
        sim_frames=fit.sim_frames, steps=fit.steps, grid_points=fit.grid_points, grid_span=fit.grid_span,
        num_starts=1, **STATS
    )  # fmt: skip
    errors = inverse.relative_errors(result.params, ET_TRUTH)
    assert max(errors.values()) < 0.20, errors


def test_recover_refuses_bad_clips_and_lengths():
    clean, _, _, make_simulator = et_turb_problem(CONFIG, 64)
    with pytest.raises(ValueError, match="observed must be a clip"):
        inverse.recover(make_simulator, clean, clean, ET_TRUTH, ET_BOUNDS)
    moving = jnp.stack([clean] * 4)
    with pytest.raises(ValueError, match="sim_frames"):
        inverse.recover(make_simulator, moving, moving, ET_TRUTH, ET_BOUNDS, sim_frames=2)
    with pytest.raises(ValueError, match="band_range"):
        inverse.frequency_bands((64, 64), 4, (0.3, 0.1))


def test_signature_start_is_the_right_order_of_magnitude():
    """The blind start (seed eq. 4 on the clip alone) reads high by blur changes (module doc) but lands
    within a factor 3 of the truth here, i.e. inside the fit's basin."""
    clean, optics, atmosphere, make_simulator = et_turb_problem(CONFIG, 64)
    observed = make_simulator(16)(jax.random.key(5), _as_arrays(ET_TRUTH)).degraded
    start = inverse.signature_cn2(observed, optics, CONFIG.et_turb.distance)
    assert ET_TRUTH["cn2"] / 3 < start < 3 * ET_TRUTH["cn2"], start
    with pytest.raises(ValueError, match="textured"):
        inverse.signature_cn2(jnp.full((4, 32, 32, 3), 0.5), optics, CONFIG.et_turb.distance)
