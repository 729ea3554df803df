"""Phase screens: spectrum constants, structure functions against the generator's own spectrum and
against theory, the 0.134 law, autoregressive frozen flow, layered atmospheres (PHYSICS.md)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, special

from turbjax import physics as P
from turbjax.physics import optics as O
from turbjax.physics import screens as S

N, DX, R0 = 64, 0.02, 0.1  # screens of 1.28 m; lags up to N/8 = 8 samples = 16 cm
NUM_SCREENS = 256  # PHYSICS.md: >= 200 for +-3% near N/8
LAGS = np.arange(1, N // 8 + 1)


def _structure_function(screens: jnp.ndarray, lags) -> jnp.ndarray:
    """Mean squared difference at each lag (samples), x and y pooled, non-wrapping pairs only
    (subharmonic screens are not periodic)."""
    return jnp.stack(
        [
            0.5 * (jnp.mean((screens[..., :, r:] - screens[..., :, :-r]) ** 2))
            + 0.5 * (jnp.mean((screens[..., r:, :] - screens[..., :-r, :]) ** 2))
            for r in lags
        ]
    )


@pytest.fixture(scope="module")
def measured():
    """Empirical D(r) of NUM_SCREENS screens for each (subharmonics, L0) configuration."""

    def batch(subharmonics):
        @jax.jit
        def run(key, outer_scale):
            keys = jax.random.split(key, NUM_SCREENS)
            screens = jax.vmap(lambda k: P.phase_screen(k, N, DX, R0, outer_scale, subharmonics=subharmonics))(keys)
            return _structure_function(screens, LAGS)

        return run

    plain, sub = batch(False), batch(True)
    return {
        (False, math.inf): np.asarray(plain(jax.random.key(0), math.inf), np.float64),
        (True, math.inf): np.asarray(sub(jax.random.key(1), math.inf), np.float64),
        (True, 25.0): np.asarray(sub(jax.random.key(2), 25.0), np.float64),
    }


def test_psd_constant_gives_kolmogorov_structure_function():
    """D(r) = 4 pi c Int f^(-8/3) (1 - J0(2 pi f r)) df must be 6.8839 (r / r0)^(5/3) (quadrature; the
    f^(-2/3) singularity at 0 is handled by quad's algebraic weight, the tail beyond f = 1e4 analytically)."""
    r = 0.3

    def smooth(x):  # integrand / x^(-2/3); (1 - J0(u)) / x^2 -> (pi r)^2 at 0
        u = 2 * np.pi * x * r
        return (np.pi * r) ** 2 * (1 - u**2 / 16) if u < 1e-3 else (1 - special.j0(u)) / x**2

    head = integrate.quad(smooth, 0, 0.1, weight="alg", wvar=(-2 / 3, 0))[0]
    body = sum(
        integrate.quad(lambda x: x ** (-8 / 3) * (1 - special.j0(2 * np.pi * x * r)), a, b, limit=500)[0]
        for a, b in [(0.1, 1), (1, 10), (10, 100), (100, 1e4)]
    )
    got = 4 * np.pi * S.PSD_CONSTANT * R0 ** (-5 / 3) * (head + body + 0.6 * 1e4 ** (-5 / 3))
    np.testing.assert_allclose(got, 6.8839 * (r / R0) ** (5 / 3), rtol=1e-3)
    np.testing.assert_allclose(S.PSD_CONSTANT, 0.0229, rtol=2e-3)


@pytest.mark.parametrize("r", [0.05, 1.0, 20.0])
def test_von_karman_closed_form_matches_quadrature(r):
    """Quadrature up to f = 400 / r (200 oscillations of J0), then the tail Int f (f^2 + f0^2)^(-11/6) df
    = (3/5) (f^2 + f0^2)^(-5/6) analytically (the J0 part there is ~1e-6 of D)."""
    L0 = 25.0
    f = lambda x: (x**2 + L0**-2) ** (-11 / 6) * (1 - special.j0(2 * np.pi * x * r)) * x  # noqa: E731
    cut = 400 / r
    edges = np.concatenate([[0.0], np.geomspace(1e-3, cut, 12)])
    integral = sum(integrate.quad(f, a, b, limit=400)[0] for a, b in zip(edges[:-1], edges[1:], strict=True))
    integral += 0.6 * (cut**2 + L0**-2) ** (-5 / 6)
    quad = 4 * np.pi * S.PSD_CONSTANT * R0 ** (-5 / 3) * integral
    np.testing.assert_allclose(S.von_karman_structure_function(r, R0, L0), quad, rtol=2e-3)


def test_von_karman_tends_to_kolmogorov():
    r = np.array([0.01, 0.1])
    np.testing.assert_allclose(S.von_karman_structure_function(r, R0, 1e7), 6.8839 * (r / R0) ** (5 / 3), rtol=5e-3)
    assert np.all(S.von_karman_structure_function(r, R0, 25.0) < 0.95 * 6.8839 * (r / R0) ** (5 / 3))


@pytest.mark.parametrize("config", [(False, math.inf), (True, math.inf), (True, 25.0)])
def test_structure_function_matches_own_discrete_spectrum(measured, config):
    """PHYSICS.md: +-3% for 4 <= r <= N/8 with >= 200 screens (exact expectation, sampling error only)."""
    subharmonics, outer_scale = config
    expected = np.asarray(S.discrete_structure_function(LAGS * DX, N, DX, R0, outer_scale, subharmonics=subharmonics))
    np.testing.assert_allclose(measured[config][3:], expected[3:], rtol=0.03)
    expected_y = np.asarray(
        S.discrete_structure_function(LAGS * DX, N, DX, R0, outer_scale, subharmonics=subharmonics, axis=0)
    )
    np.testing.assert_allclose(expected_y, expected, rtol=1e-5)


def test_structure_function_matches_von_karman_theory(measured):
    """Subharmonics, L0 = 25 m: +-6% of von Karman theory for 2 <= r <= N/8 (PHYSICS.md).
    Without subharmonics the screen misses the low frequencies and falls far short at N/8."""
    theory = S.von_karman_structure_function(LAGS * DX, R0, 25.0)
    np.testing.assert_allclose(measured[(True, 25.0)][1:], theory[1:], rtol=0.06)
    kolmogorov = S.von_karman_structure_function(LAGS * DX, R0, math.inf)
    assert measured[(False, math.inf)][-1] < 0.6 * kolmogorov[-1]
    # L0 = inf with 3 levels: 0.80-1.02 of Kolmogorov for 2 <= r <= N/16 (PHYSICS.md), checked on the
    # generator's exact expectation (the measurement matches it, test above; with sampling noise added
    # the measured ratio itself would sit at the edge of that band at N = 64).
    lags = LAGS[1 : N // 16]
    expected = np.asarray(S.discrete_structure_function(lags * DX, N, DX, R0))
    ratio = expected / S.von_karman_structure_function(lags * DX, R0, math.inf)
    assert np.all((ratio > 0.8) & (ratio < 1.02)), ratio


APERTURE_N, APERTURE_DX, APERTURE_R0, APERTURE_SAMPLES = 64, 0.01, 0.05, 16
NUM_APERTURE_SCREENS = 1000  # per-screen relative scatter ~0.45: 1.4% standard error


@pytest.fixture(scope="module")
def aperture_stats():
    mask = S.circular_pupil(APERTURE_N, APERTURE_SAMPLES)
    area = float(jnp.sum(mask))
    kernels_mask = S.circular_pupil(APERTURE_SAMPLES + 2, APERTURE_SAMPLES)

    @jax.jit
    def run(key):
        def one(k):
            phase = P.phase_screen(k, APERTURE_N, APERTURE_DX, APERTURE_R0)
            window = phase[: APERTURE_SAMPLES + 2, : APERTURE_SAMPLES + 2]
            return (
                jnp.sum(S.remove_piston_tilt(phase, mask, tilt=False) ** 2) / area,
                jnp.sum(S.remove_piston_tilt(phase, mask) ** 2) / area,
                S.ztilt(window, kernels_mask),
            )

        return jax.vmap(one)(jax.random.split(key, NUM_APERTURE_SCREENS))

    piston, tilt_removed, tilt = run(jax.random.key(3))
    diameter = 2 * math.sqrt(area / math.pi) * APERTURE_DX  # equal-area diameter of the sampled disc
    return {
        "piston": float(jnp.mean(piston)),
        "tilt_removed": float(jnp.mean(tilt_removed)),
        "tilt": np.asarray(tilt),
        "diameter": diameter,
        "tilt_mask": kernels_mask,
    }


def test_tilt_removed_aperture_variance_0134_law(aperture_stats):
    """Noll: piston and tip/tilt removed 0.134 (D/r0)^(5/3), +-5% (PHYSICS.md: robust even without
    subharmonics, the aperture check). The piston-removed variance 1.03 (D/r0)^(5/3) needs the lowest
    frequencies (L0 = inf): a finite screen gets 0.8-0.9 of it with subharmonics, reported not asserted."""
    scale = (aperture_stats["diameter"] / APERTURE_R0) ** (5 / 3)
    np.testing.assert_allclose(aperture_stats["tilt_removed"], 0.134 * scale, rtol=0.05)
    assert 0.7 < aperture_stats["piston"] / (1.0299 * scale) < 1.02


def test_discrete_tilt_variance_matches_screens(aperture_stats):
    """The generator's exact Z-tilt variance (used by the satellite test) against 1000 screens, x and y
    pooled: +-12% (tilt lives in the few lowest modes; the measured seed-to-seed scatter is ~4%)."""
    expected = float(S.discrete_tilt_variance(APERTURE_N, APERTURE_DX, APERTURE_R0, aperture_stats["tilt_mask"]))
    np.testing.assert_allclose(np.mean(aperture_stats["tilt"] ** 2), expected, rtol=0.12)
    # Kolmogorov Z-tilt 0.4496 (D/r0)^(5/3) rad^2 for the Noll a2 = slope D / 4 (slope in rad/m)
    d = aperture_stats["diameter"]
    theory = 0.4496 * (d / APERTURE_R0) ** (5 / 3) * (4 / d) ** 2 * APERTURE_DX**2
    assert 0.75 < expected / theory < 1.0  # finite screen: low frequencies below df / 54 missing


def test_discrete_tilt_variance_by_explicit_sum():
    """The FFT/closed-form helper against a plain sum over every mode of s_k^2 |sum_rho K(rho) e^(2 pi i f.rho)|^2."""
    n, dx, r0 = 16, 0.01, 0.05
    mask = S.circular_pupil(6, 6.0)

    @jax.jit
    def pieces():
        fx, fy = (jnp.broadcast_to(f, (n, n)).ravel() for f in S._grid_frequencies(n, dx))
        return (
            S.ztilt_kernels(mask)[1],
            S._mode_amplitudes(n, dx, math.inf, 3),
            (fx, fy),
            S._subharmonic_frequencies(n, dx, 3),
        )

    kernel, (grid, sub), (fx, fy), (sx, sy, _) = jax.tree.map(lambda a: np.asarray(a, np.float64), pieces())
    fx, fy, amp = np.concatenate([fx, sx]), np.concatenate([fy, sy]), np.concatenate([grid.ravel(), sub])
    rho = np.arange(6) * dx
    waves = np.exp(2j * np.pi * (fx[:, None, None] * rho[None, None, :] + fy[:, None, None] * rho[None, :, None]))
    expected = r0 ** (-5 / 3) * np.sum(amp**2 * np.abs(np.sum(kernel * waves, axis=(1, 2))) ** 2)
    np.testing.assert_allclose(float(S.discrete_tilt_variance(n, dx, r0, mask)), expected, rtol=1e-4)


def test_phase_screen_gradient_wrt_r0():
    """r0 enters as the factor r0^(-5/6): d phase / d r0 = -(5/6) phase / r0 exactly."""
    key = jax.random.key(4)

    @jax.jit
    def phase_and_grad(r0):
        phase = P.phase_screen(key, 16, DX, r0)
        return phase, jax.grad(lambda r: jnp.sum(P.phase_screen(key, 16, DX, r) * jax.lax.stop_gradient(phase)))(r0)

    phase, grad = phase_and_grad(R0)
    np.testing.assert_allclose(float(grad), -5 / 6 * float(jnp.sum(phase**2)) / R0, rtol=1e-4)


@pytest.mark.parametrize("subharmonics", [False, True])
def test_frozen_flow_integer_shift_is_exact(subharmonics):
    """alpha = 1, v dt = (+2, -1) samples per step: after 3 steps the screen is the first one shifted
    by (+6, -3) samples on the overlap (exact: Fourier phases of whole samples), both with and without
    the (non-periodic) subharmonics."""
    dt = 0.01

    @jax.jit
    def run(key):
        k0, k1 = jax.random.split(key)
        velocity = (2 * DX / dt, -DX / dt)
        state = P.ar_screen_init(k0, 32, DX, R0, velocity=velocity, dt=dt, alpha=1.0, subharmonics=subharmonics)
        return P.ar_screen_run(k1, state, 4)[1]

    screens = run(jax.random.key(5))
    first, later = np.asarray(screens[0]), np.asarray(screens[3])
    std = first.std()
    np.testing.assert_allclose(later[:-3, 6:], first[3:, :-6], rtol=0, atol=2e-5 * std)
    assert np.abs(later - first).max() > 0.5 * std  # it did move


def test_ar_screen_run_starts_from_the_given_state():

    @jax.jit
    def run(key):
        k0, k1 = jax.random.split(key)
        state = P.ar_screen_init(k0, 16, DX, R0, velocity=(1.0, 0.5), dt=0.01, alpha=0.9)
        final, screens = P.ar_screen_run(k1, state, 3)
        manual = state
        for k in jax.random.split(k1, 3):
            manual = P.ar_screen_step(k, manual)
        return screens, P.ar_screen_phase(state), final.coeffs, manual.coeffs

    screens, first, final, manual = run(jax.random.key(7))
    np.testing.assert_allclose(screens[0], first, rtol=1e-6)
    np.testing.assert_allclose(final, manual, rtol=1e-5, atol=1e-9)


AR_N, AR_STEPS, AR_CHAINS = 32, 1000, 32
AR_LAGS = np.array([1, 2, 4])  # up to N/8


def test_ar_structure_function_is_stationary():
    """Over 1000 steps (wind and renewal, alpha = 0.9) D(r) stays within +-3% of the stationary
    expectation of step 0 (PHYSICS.md), averaged over steps 0-299 and 700-999 of 32 chains.

    Grid modes only: the 24 subharmonics carry much of D(N/8) in a few large modes, which would need
    ~10x the chains for +-3%; they follow the same update, and their lag correlations are checked in
    the next test."""

    def d_of(state):
        return _structure_function(P.ar_screen_phase(state), AR_LAGS)

    @jax.jit
    def chains(key):
        def one(k):
            k0, k1 = jax.random.split(k)
            state = P.ar_screen_init(k0, AR_N, DX, R0, velocity=(0.7, 0.3), dt=0.01, alpha=0.9, subharmonics=False)
            return P.ar_screen_run(k1, state, AR_STEPS, observe=d_of)[1]

        return jax.vmap(one)(jax.random.split(key, AR_CHAINS))

    d = np.asarray(chains(jax.random.key(9)))  # [chains, steps, lags]
    expected = np.asarray(S.discrete_structure_function(AR_LAGS * DX, AR_N, DX, R0, subharmonics=False))
    np.testing.assert_allclose(d[:, :300].mean(axis=(0, 1)), expected, rtol=0.03)
    np.testing.assert_allclose(d[:, 700:].mean(axis=(0, 1)), expected, rtol=0.03)


def test_ar_lag_autocorrelation_is_alpha_to_the_n():
    """Per-mode lag-n correlation (grid modes and subharmonics), after undoing the wind's phase
    exp(-2 pi i f.v n dt), is alpha^n +- 0.02 (PHYSICS.md); a wrong advection sign would leave a residual
    phase and fail. The mode power stays at its stationary value (E|a|^2 = 2 s^2)."""
    velocity, dt, alpha = np.array([0.7, 0.3]), 0.01, 0.95

    @jax.jit
    def run(key):
        k0, k1 = jax.random.split(key)
        state = P.ar_screen_init(k0, AR_N, DX, R0, velocity=velocity, dt=dt, alpha=alpha)
        return P.ar_screen_run(k1, state, 300, observe=lambda st: (st.coeffs, st.sub_coeffs))[1]

    coeffs, sub_coeffs = run(jax.random.key(10))
    grid, sub = (np.asarray(a) for a in S._mode_amplitudes(AR_N, DX, math.inf, 3))
    fx, fy = (np.broadcast_to(np.asarray(f), (AR_N, AR_N)) for f in S._grid_frequencies(AR_N, DX))
    sx, sy, _ = (np.asarray(a) for a in S._subharmonic_frequencies(AR_N, DX, 3))
    live = grid > 0
    unit = np.concatenate([np.asarray(coeffs)[:, live] / grid[live], np.asarray(sub_coeffs) / sub], axis=1)
    fx, fy = np.concatenate([fx[live], sx]), np.concatenate([fy[live], sy])
    angle = 2 * np.pi * (fx * velocity[0] + fy * velocity[1]) * dt
    power = np.mean(np.abs(unit) ** 2)
    np.testing.assert_allclose(power, 2.0, rtol=0.03)
    for lag in (1, 5, 20):
        corr = np.mean(unit[lag:] * np.conj(unit[:-lag]) * np.exp(1j * angle * lag)) / power
        assert abs(corr.real - alpha**lag) <= 0.02, (lag, corr)
        assert abs(corr.imag) <= 0.02, (lag, corr)


# ---------------------------------------------------------------------------------------------
# Layered atmosphere


def test_layer_fried_parameters_combine_to_total():
    atmosphere = P.layers_from_weights(0.05)  # TMTS 1 / 4 / 20 km, 0.6 / 0.3 / 0.1
    r0_i = np.asarray(P.layer_fried_parameters(atmosphere))
    np.testing.assert_allclose(r0_i, 0.05 * np.array([0.6, 0.3, 0.1]) ** (-3 / 5), rtol=1e-6)
    np.testing.assert_allclose(float(P.combined_fried_parameter(r0_i)), 0.05, rtol=1e-6)
    spherical = P.layer_fried_parameters(atmosphere, "spherical", distance=30e3)
    np.testing.assert_allclose(float(P.combined_fried_parameter(spherical)), 0.05, rtol=1e-6)
    assert spherical[2] > r0_i[2]  # the layer near the source counts less for a spherical wave
    # Independent layer screens add: sum_i D_i(r; r0_i) = D(r; r0) for the same grid.
    r = np.array([0.02, 0.1])
    total = sum(np.asarray(S.discrete_structure_function(r, 32, DX, float(ri))) for ri in r0_i)
    np.testing.assert_allclose(total, np.asarray(S.discrete_structure_function(r, 32, DX, 0.05)), rtol=1e-5)


def test_layer_screens_carry_layer_r0_and_wind():
    wind = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]])
    atmosphere = P.layers_from_weights(0.05, wind=wind)
    state = jax.jit(lambda k, a: S.layer_screens_init(k, a, 8, DX, dt=0.04, alpha=0.9))(jax.random.key(12), atmosphere)
    np.testing.assert_allclose(state.r0, P.layer_fried_parameters(atmosphere), rtol=1e-6)
    np.testing.assert_allclose(state.velocity, wind)
    assert jax.vmap(P.ar_screen_phase)(state).shape == (3, 8, 8)


def test_tmts_layer_isoplanatic_angle():
    """PHYSICS.md: the printed TMTS layers give theta0 = 2.74 microrad at r0 = 5 cm (= 0.314 r0 / h_bar)."""
    atmosphere = P.layers_from_weights(0.05)
    h_bar = (0.6 * 1000 ** (5 / 3) + 0.3 * 4000 ** (5 / 3) + 0.1 * 20000 ** (5 / 3)) ** (3 / 5)
    theta0 = float(P.layer_isoplanatic_angle(atmosphere))
    np.testing.assert_allclose(theta0, 0.314 * 0.05 / h_bar, rtol=2e-3)
    np.testing.assert_allclose(theta0, 2.74e-6, rtol=0.01)


def test_layers_from_hufnagel_valley_keep_r0_and_theta0():
    """HV5/7 at 500 nm, zenith: r0 = 4.96 cm, theta0 = 6.89 microrad, 89% of Int Cn2 below 2 km
    (PHYSICS.md); slabs at their effective altitudes keep theta0 exactly."""
    atmosphere = P.layers_from_cn2_profile(np.linspace(0.0, 30e3, 61))
    np.testing.assert_allclose(float(atmosphere.r0), 0.0496, rtol=0.01)
    np.testing.assert_allclose(float(P.layer_isoplanatic_angle(atmosphere)), 6.89e-6, rtol=0.01)
    np.testing.assert_allclose(float(np.sum(atmosphere.weight[:4])), 0.89, atol=0.01)
    heights = np.linspace(0.0, 30e3, 30001)
    profile_theta0 = O.isoplanatic_angle_from_profile(heights, O.hufnagel_valley(heights), 500e-9)
    np.testing.assert_allclose(float(P.layer_isoplanatic_angle(atmosphere)), float(profile_theta0), rtol=2e-3)
    weights = P.hufnagel_valley_weights()
    np.testing.assert_allclose(weights.sum(), 1.0, rtol=1e-9)
    assert 0.88 < weights[0] < 0.93 and weights[2] < 0.05


@pytest.mark.parametrize("wave", ["plane", "spherical"])
def test_layer_theta0_matches_optics_for_a_uniform_path(wave):
    """Many equal layers along a uniform horizontal path reproduce optics.py's r0 and theta0, for the
    plane and the spherical conventions alike."""
    distance, cn2, wavelength = 1000.0, 1e-14, 550e-9
    optics = O.Optics(wavelength=wavelength, focal_length=0.5, f_number=5.0, pixel_pitch=5e-6)
    path = O.Atmosphere(cn2=cn2, distance=distance, height=10.0, wind_speed=1.0)
    num = 4000
    heights = (np.arange(num) + 0.5) * distance / num
    atmosphere = P.layers_from_weights(O.fried_parameter(optics, path, wave), heights, np.full(num, 1.0 / num))
    got = P.layer_isoplanatic_angle(atmosphere, wave, distance=distance)
    np.testing.assert_allclose(float(got), float(O.isoplanatic_angle(optics, path, wave)), rtol=5e-3)
    integrals = S.layer_cn2_integrals(atmosphere, wavelength, wave, distance=distance)
    np.testing.assert_allclose(float(jnp.sum(integrals)), cn2 * distance, rtol=5e-3)


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: P.phase_screen(jax.random.key(0), 16, DX, -0.1), "r0"),
        (lambda: P.phase_screen(jax.random.key(0), 16, 0.0, R0), "dx"),
        (lambda: P.phase_screen(jax.random.key(0), 16, DX, R0, -5.0), "outer_scale"),
        (lambda: P.phase_screen(jax.random.key(0), 1, DX, R0), "n must"),
        (lambda: P.ar_screen_init(jax.random.key(0), 16, DX, R0, alpha=1.5), "alpha"),
        (lambda: P.layers_from_weights(0.05, weights=(0.6, 0.3, 0.05)), "weight"),
        (lambda: P.layers_from_weights(0.05, wind=np.zeros((2, 2))), "wind"),
        (lambda: P.layers_from_weights(0.05, altitudes=(-1.0, 4e3, 2e4)), "altitude"),
        (lambda: P.layers_from_cn2_profile([0.0, 0.0, 1e3]), "boundaries"),
        (lambda: P.layer_isoplanatic_angle(P.layers_from_weights(0.05), "spherical"), "distance"),
    ],
)
def test_bad_inputs_raise(call, name):
    with pytest.raises(ValueError, match=name):
        call()
