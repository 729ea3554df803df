"""Physical parameters from video: gradient descent through the differentiable simulators.

Given a degraded clip and its clean source, find the ``cn2`` (m^(-2/3)), ``exposure_time`` (s)
and optionally ``wind_speed`` (m/s) of the ET-Turb model, or the ``r0`` (m) of the satellite
model, that make the simulator reproduce the clip. Two regimes:

- **key known** (``fit_known_key``): with its random key fixed, a simulator is a deterministic,
  differentiable function of its parameters, and the clip is matched pixel by pixel (mean
  squared error, :func:`pixel_residuals`). The truth is then an exact zero of the loss; the only
  error is the optimiser's.
- **key unknown** (``fit_statistics``): the pixels depend on the draw, so they cannot be matched.
  What the key does not fix is the distribution, so the fit matches summary statistics of the
  clip against their expectation over simulations, the method of simulated moments.
  :func:`clip_statistics` measures, per frame and in radial frequency bands (cycles/px),
  the degraded-to-clean power ratio (the blur's mean squared MTF, on a log scale) and the
  degraded-to-clean cross-spectrum (the average transfer function: blur MTF x the tilt's
  characteristic function exp(-2 pi^2 sigma^2 f^2), so it carries the tilt variance). Both are
  averages over frames of per-frame quantities, so their expectation does not depend on the
  clip length, and a few short simulated clips estimate it. The simulated draws are fixed for
  the whole fit (common random numbers), so the objective is smooth and deterministic. The
  error is then the estimator's: it falls as the observed clip gets longer (more frames,
  larger frames) and as the number of simulated draws grows.

Parameters are optimised in log space through a logistic map onto their bounds,
log p = log lo + (log hi - log lo) sigmoid(u), so every iterate respects the bounds and a
factor error weighs the same at every scale. Both objectives are least squares, so the default optimiser
is Levenberg-Marquardt with the Jacobian from forward-mode autodiff (a handful of parameters, a
narrow curved valley in the statistics fit); optax's L-BFGS and Adam are the alternatives.

When the clean source is unknown the fit has nothing to compare with; :func:`signature_cn2`
gives the starting Cn2 from the turbulence signature of the clip alone (seed eq. 4, via
``turbjax.physics.estimate_cn2``), which is how a blind pipeline would start.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from turbjax.physics.checks import check_positive
from turbjax.physics.optics import Atmosphere, Optics
from turbjax.physics.satellite import (
    SatelliteParams,
    SatelliteSettings,
    required_screen_size,
    synthesize_satellite_video,
)
from turbjax.physics.signature import estimate_cn2, luminance
from turbjax.physics.synth import Degradation, SynthesisSettings
from turbjax.physics.video import synthesize_video

Params = Mapping[str, jnp.ndarray]
Bounds = Mapping[str, tuple[float, float]]
Simulator = Callable[[jax.Array, Params], Degradation]

ET_TURB_PARAMETERS = ("cn2", "exposure_time", "wind_speed")
SATELLITE_PARAMETERS = ("r0",)


# --------------------------------------------------------------------------------------------
# Bounded log-space parametrisation


def check_bounds(init: Mapping[str, float], bounds: Bounds) -> None:
    """ValueError unless ``init`` and ``bounds`` name the same parameters, 0 < lo < hi, lo <= init <= hi."""
    if set(init) != set(bounds):
        raise ValueError(f"init and bounds must name the same parameters; got {sorted(init)} and {sorted(bounds)}.")
    for name, (lo, hi) in bounds.items():
        if not 0.0 < lo < hi or not np.isfinite(hi):
            raise ValueError(f"bounds[{name!r}] must satisfy 0 < lo < hi < inf (log space); got ({lo}, {hi}).")
        value = float(init[name])
        if not lo <= value <= hi:
            raise ValueError(f"init[{name!r}] = {value:g} is outside its bounds [{lo:g}, {hi:g}].")


def to_unconstrained(values: Mapping[str, float], bounds: Bounds) -> dict[str, jnp.ndarray]:
    """u with log v = log lo + (log hi - log lo) sigmoid(u); values at a bound map to +-9 (sigmoid 1e-4 away)."""
    out = {}
    for name, (lo, hi) in bounds.items():
        z = (np.log(float(values[name])) - np.log(lo)) / (np.log(hi) - np.log(lo))
        z = float(np.clip(z, 1.2e-4, 1.0 - 1.2e-4))
        out[name] = jnp.asarray(np.log(z / (1.0 - z)), jnp.float32)
    return out


def to_physical(u: Params, bounds: Bounds) -> dict[str, jnp.ndarray]:
    """The physical values of the unconstrained ``u`` (inverse of :func:`to_unconstrained`), inside the bounds."""
    return {
        name: jnp.exp(np.log(lo) + (np.log(hi) - np.log(lo)) * jax.nn.sigmoid(u[name]))
        for name, (lo, hi) in bounds.items()
    }


# --------------------------------------------------------------------------------------------
# The optimiser


@dataclasses.dataclass
class FitResult:
    """Outcome of :func:`fit_parameters`.

    Attributes:
      params: the recovered physical values.
      loss: [n + 1] the objective (mean squared residual) at the start and after every step.
      trajectory: name -> [n + 1] physical values at the start and after every step.
      steps: optimiser steps taken.
      converged: the stopping rule fired before ``steps`` ran out.
    """

    params: dict[str, float]
    loss: np.ndarray
    trajectory: dict[str, np.ndarray]
    steps: int
    converged: bool


METHODS = ("lm", "lbfgs", "adam")
_MAX_LM_STEP = 1.0  # largest Levenberg-Marquardt step per unconstrained coordinate


def fit_parameters(
    residual_fn: Callable[[Params], jnp.ndarray],
    init: Mapping[str, float],
    bounds: Bounds,
    *,
    steps: int = 40,
    method: str = "lm",
    learning_rate: float = 0.05,
    tolerance: float = 1e-5,
    progress: bool = False,
) -> FitResult:
    """Minimise mean(residual_fn(physical_params)^2) over the bounded log-space parameters.

    Args:
      residual_fn: differentiable function of a dict of physical values (jax arrays) -> residuals [N].
      init: starting physical values; bounds: name -> (lo, hi), 0 < lo < hi.
      steps: maximum optimiser steps.
      method: 'lm' (default): Levenberg-Marquardt on the residuals, the Jacobian by forward-mode
        autodiff (one pass per parameter) and a damped Gauss-Newton step, so long curved valleys
        (parameters that trade against each other) are followed in a few steps and float32 noise in
        the objective cannot stall a line search; 'lbfgs': optax L-BFGS with zoom line search on the
        mean square; 'adam': optax Adam with ``learning_rate`` in the unconstrained coordinates.
      tolerance: stop when no parameter's log changes by more than this in a step (after 2 steps),
        or, for 'lm', when no damping gives a descent step.
      progress: show a tqdm bar.
    """
    check_bounds(init, bounds)
    if steps < 1:
        raise ValueError(f"steps must be >= 1; got {steps}.")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}.")
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0; got {learning_rate}.")
    names = list(bounds)

    def residuals(x):  # x: unconstrained vector in the order of ``names``
        return residual_fn(to_physical(dict(zip(names, x, strict=True)), bounds))

    def objective(x):
        return jnp.mean(jnp.square(residuals(x)))

    evaluate = jax.jit(objective)
    x = jnp.stack([v for v in to_unconstrained(init, bounds).values()])
    losses = [float(evaluate(x))]
    values = {name: [float(init[name])] for name in names}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc=f"fit ({method})", unit="step")
    step = _make_stepper(method, residuals, objective, evaluate, learning_rate)
    state = step.init(x)
    converged, taken = False, 0
    for taken in range(1, steps + 1):
        new_x, new_loss, state, stalled = step(x, losses[-1], state)
        if stalled:
            converged = True
            taken -= 1
            break
        if not np.isfinite(new_loss):
            raise FloatingPointError(f"the fit's loss became {new_loss} at step {taken}; check the bounds.")
        physical = jax.device_get(to_physical(dict(zip(names, new_x, strict=True)), bounds))
        change = max(abs(np.log(float(physical[n])) - np.log(values[n][-1])) for n in names)
        x = new_x
        losses.append(new_loss)
        for name in names:
            values[name].append(float(physical[name]))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{new_loss:.3e}")
        if taken >= 2 and change < tolerance:
            converged = True
            break
    if bar is not None:
        bar.close()
    return FitResult(
        params={name: values[name][-1] for name in names},
        loss=np.asarray(losses),
        trajectory={name: np.asarray(v) for name, v in values.items()},
        steps=taken,
        converged=converged,
    )


@dataclasses.dataclass
class _Stepper:
    """init(x) -> state; __call__(x, loss, state) -> (new x, its loss, state, stalled)."""

    init: Callable
    call: Callable

    def __call__(self, x, loss, state):
        return self.call(x, loss, state)


def _make_stepper(method: str, residuals, objective, evaluate, learning_rate: float) -> _Stepper:
    if method == "lm":
        linearise = jax.jit(lambda x: (residuals(x), jax.jacfwd(residuals)(x)))

        def lm_step(x, loss, damping):
            r, jac = (np.asarray(a, np.float64) for a in linearise(x))
            jac = jac.reshape(r.size, -1)
            r = r.reshape(-1)
            normal = jac.T @ jac
            gradient = jac.T @ r
            scale = np.diag(normal) + 1e-12 * max(np.max(np.diag(normal)), 1e-30)
            for _ in range(12):  # raise the damping until the step descends
                delta = np.linalg.solve(normal + damping * np.diag(scale), -gradient)
                # Trust region in the unconstrained coordinates: a step of 1 moves a log parameter by at
                # most a quarter of its log range, so a first step cannot jump onto a bound, where the
                # logistic map's slope vanishes and the fit would stay stuck.
                delta *= min(1.0, _MAX_LM_STEP / max(float(np.max(np.abs(delta))), 1e-30))
                trial = x + jnp.asarray(delta, x.dtype)
                trial_loss = float(evaluate(trial))
                if trial_loss < loss:
                    return trial, trial_loss, max(damping / 3.0, 1e-9), False
                damping *= 4.0
            return x, loss, damping, True

        return _Stepper(init=lambda x: 1e-3, call=lm_step)

    optimizer = optax.lbfgs() if method == "lbfgs" else optax.adam(learning_rate)
    if method == "lbfgs":
        value_and_grad = optax.value_and_grad_from_state(objective)

        @jax.jit
        def update(x, state):
            value, grad = value_and_grad(x, state=state)
            updates, state = optimizer.update(grad, state, x, value=value, grad=grad, value_fn=objective)
            return optax.apply_updates(x, updates), state

    else:

        @jax.jit
        def update(x, state):
            updates, state = optimizer.update(jax.grad(objective)(x), state, x)
            return optax.apply_updates(x, updates), state

    def optax_step(x, loss, state):
        new_x, state = update(x, state)
        return new_x, float(evaluate(new_x)), state, False

    return _Stepper(init=optimizer.init, call=optax_step)


# --------------------------------------------------------------------------------------------
# Simulators as functions of a parameter dict


def et_turb_simulator(
    clean: jnp.ndarray,
    optics: Optics,
    atmosphere: Atmosphere,
    exposure_time: float,
    *,
    num_frames: int | None = None,
    fps: float = 30.0,
    wind_direction: float = 0.0,
    max_drift_px: int = 64,
    settings: SynthesisSettings = SynthesisSettings(),
) -> Simulator:
    """``simulate(key, params) -> Degradation``: ``turbjax.physics.synthesize_video`` of ``clean``
    (a clip [T, H, W, C] or a still [H, W, C] with ``num_frames``) where ``params`` may override
    ``cn2`` (m^(-2/3)), ``exposure_time`` (s) and ``wind_speed`` (m/s); everything else is fixed.
    The wind direction (rad) is fixed so that the key draws only the turbulence."""

    def simulate(key: jax.Array, params: Params) -> Degradation:
        unknown = set(params) - set(ET_TURB_PARAMETERS)
        if unknown:
            raise ValueError(f"ET-Turb parameters are {ET_TURB_PARAMETERS}; got {sorted(unknown)}.")
        air = atmosphere.replace(
            cn2=params.get("cn2", atmosphere.cn2), wind_speed=params.get("wind_speed", atmosphere.wind_speed)
        )
        return synthesize_video(
            key,
            clean,
            optics,
            air,
            params.get("exposure_time", exposure_time),
            fps,
            num_frames=num_frames,
            wind_direction=wind_direction,
            max_drift_px=max_drift_px,
            settings=settings,
        )

    return simulate


def satellite_simulator(
    clean: jnp.ndarray,
    params: SatelliteParams,
    settings: SatelliteSettings = SatelliteSettings(),
    *,
    num_frames: int | None = None,
) -> Simulator:
    """``simulate(key, {'r0': r0}) -> Degradation``: ``turbjax.physics.synthesize_satellite_video`` of
    ``clean`` with the total Fried parameter r0 (m) replaced; the layers keep their weights and winds.

    The layer screens' size is fixed once from ``params`` (it depends on the geometry, not on r0),
    so the simulator can be traced with r0 a tracer."""
    if settings.screen_size is None:
        frames = jnp.asarray(clean)
        settings = dataclasses.replace(
            settings, screen_size=required_screen_size(params, frames.shape[-3:-1], settings)
        )

    def simulate(key: jax.Array, values: Params) -> Degradation:
        unknown = set(values) - set(SATELLITE_PARAMETERS)
        if unknown:
            raise ValueError(f"satellite parameters are {SATELLITE_PARAMETERS}; got {sorted(unknown)}.")
        current = params.replace(atmosphere=params.atmosphere.replace(r0=values.get("r0", params.atmosphere.r0)))
        return synthesize_satellite_video(key, clean, current, settings, num_frames=num_frames)

    return simulate


# --------------------------------------------------------------------------------------------
# Objectives


def pixel_residuals(simulate: Simulator, key: jax.Array, observed: jnp.ndarray, clean: jnp.ndarray) -> Callable:
    """Residuals [N] between ``simulate(key, params).degraded`` and ``observed`` [T, H, W, C], scaled so
    that their mean square is the mean squared difference divided by that of the clean source: ~1 with
    no turbulence modelled, 0 at the truth."""
    observed = jnp.asarray(observed, jnp.float32)
    scale = jnp.sqrt(jnp.maximum(jnp.mean(jnp.square(observed - jnp.asarray(clean, jnp.float32))), 1e-12))

    def residuals(params: Params) -> jnp.ndarray:
        return jnp.ravel(simulate(key, params).degraded - observed) / scale

    return residuals


def frequency_bands(shape: tuple[int, int], num_bands: int, band_range: tuple[float, float]) -> np.ndarray:
    """[num_bands, H, W] masks of log-spaced radial bands of the FFT grid; ``band_range`` in cycles/px."""
    lo, hi = band_range
    if not 0.0 < lo < hi <= 0.5 * np.sqrt(2.0):
        raise ValueError(f"band_range must satisfy 0 < lo < hi <= 0.707 cycles/px; got {band_range}.")
    if num_bands < 1:
        raise ValueError(f"num_bands must be >= 1; got {num_bands}.")
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.fftfreq(shape[1])[None, :]
    radius = np.hypot(fy, fx)
    edges = np.geomspace(lo, hi, num_bands + 1)
    masks = (radius[None] >= edges[:-1, None, None]) & (radius[None] < edges[1:, None, None])
    if not np.all(masks.any(axis=(1, 2))):
        raise ValueError(f"a frequency band of {band_range} with {num_bands} bands is empty on a {shape} grid.")
    return masks.astype(np.float32)


def clip_statistics(
    degraded: jnp.ndarray,
    clean: jnp.ndarray,
    *,
    num_bands: int = 6,
    band_range: tuple[float, float] = (0.02, 0.35),
) -> jnp.ndarray:
    """Key-independent statistics [2 num_bands] of a degraded clip [T, H, W, C] against its clean source.

    Per radial band b (cycles/px, log-spaced over ``band_range``), with F the 2-D FFT of the
    Hann-windowed luminance minus the clean mean:

    - log power ratio: log( sum_b mean_t |F_deg,t|^2 / sum_b |F_clean|^2 ), the blur's mean squared MTF;
    - transfer: sum_b mean_t Re(F_deg,t conj F_clean,t) / sum_b |F_clean|^2, the average transfer
      function (blur MTF x tilt characteristic function).

    ``clean`` is a still [H, W, C] or a clip [T, H, W, C] (moving scenes pair frame by frame).
    """
    degraded = jnp.asarray(degraded, jnp.float32)
    clean = jnp.asarray(clean, jnp.float32)
    if degraded.ndim != 4:
        raise ValueError(f"degraded must be a clip [T, H, W, C]; got shape {degraded.shape}.")
    if clean.ndim == 3:
        clean = clean[None]
    if clean.shape[1:] != degraded.shape[1:] or clean.shape[0] not in (1, degraded.shape[0]):
        raise ValueError(f"clean {clean.shape} does not match degraded {degraded.shape}.")
    h, w = degraded.shape[1:3]
    masks = jnp.asarray(frequency_bands((h, w), num_bands, band_range))
    window = jnp.asarray(np.outer(np.hanning(h), np.hanning(w)), jnp.float32)
    lum_clean = luminance(clean)
    offset = jnp.mean(lum_clean, axis=(-2, -1), keepdims=True)
    spec_clean = jnp.fft.fft2((lum_clean - offset) * window)
    spec_deg = jnp.fft.fft2((luminance(degraded) - offset) * window)
    clean_power = jnp.mean(jnp.abs(spec_clean) ** 2, axis=0)
    deg_power = jnp.mean(jnp.abs(spec_deg) ** 2, axis=0)
    cross = jnp.mean(jnp.real(spec_deg * jnp.conj(spec_clean)), axis=0)
    band = lambda x: jnp.einsum("bhw,hw->b", masks, x)  # noqa: E731
    reference = band(clean_power)
    return jnp.concatenate([jnp.log(band(deg_power) / reference), band(cross) / reference])


def statistics_residuals(
    simulate: Simulator,
    keys: jax.Array,
    observed: jnp.ndarray,
    clean: jnp.ndarray,
    *,
    weight_params: Params | None = None,
    variance_floor: float = 1e-4,
    **statistics_kwargs,
) -> Callable:
    """Weighted residuals [S] between the observed :func:`clip_statistics` and their mean over
    simulations with the fixed ``keys`` [K] (common random numbers).

    The simulated clips may be shorter than the observed one: the statistics are per-frame averages.
    Weights: with ``weight_params`` (e.g. the starting point) each statistic is divided by its standard
    deviation across the K simulations there (variance plus ``variance_floor``), computed once, so that
    bands dominated by the draw (high frequencies, the global tilt of a frame) do not drown the
    informative ones; K >= 2. Without it every statistic weighs 1.
    """
    target = clip_statistics(observed, clean, **statistics_kwargs)

    def simulated(params: Params) -> jnp.ndarray:
        return jax.vmap(lambda k: clip_statistics(simulate(k, params).degraded, clean, **statistics_kwargs))(keys)

    weights = jnp.ones_like(target)
    if weight_params is not None:
        if keys.shape[0] < 2:
            raise ValueError(f"weighting by the simulated variance needs num_keys >= 2; got {keys.shape[0]}.")
        spread = jnp.var(jax.jit(simulated)(dict(weight_params)), axis=0, ddof=1)
        weights = 1.0 / (spread + variance_floor)
        weights = weights / jnp.mean(weights)

    def residuals(params: Params) -> jnp.ndarray:
        return jnp.sqrt(weights) * (jnp.mean(simulated(params), axis=0) - target)

    return residuals


def recover(
    make_simulator: Callable[[int], Simulator],
    observed: jnp.ndarray,
    clean: jnp.ndarray,
    init: Mapping[str, float],
    bounds: Bounds,
    *,
    key: jax.Array | None = None,
    seed: int = 0,
    num_keys: int = 4,
    sim_frames: int = 8,
    steps: int = 40,
    method: str = "lm",
    grid_points: int = 0,
    grid_span: float = 4.0,
    num_starts: int = 1,
    progress: bool = False,
    **statistics_kwargs,
) -> FitResult:
    """Recover the parameters named in ``init`` from ``observed`` [T, H, W, C] and its clean source.

    ``make_simulator(num_frames)`` returns the simulator of ``clean`` (see :func:`et_turb_simulator`,
    :func:`satellite_simulator`). With ``key`` (the observation's own key) the fit matches pixels
    (:func:`pixel_residuals`); without it, it matches statistics (:func:`statistics_residuals`) against
    ``num_keys`` simulated clips of ``sim_frames`` frames drawn from ``seed``, weighted by their
    spread at ``init``; ``clean`` must then be a still [H, W, C] unless ``sim_frames`` = T.

    The statistics objective has a long, narrow, curved valley along which Cn2 and the exposure time
    trade (both widen the blur; only Cn2 moves the tilt): the default Levenberg-Marquardt follows it;
    first-order methods zig-zag and L-BFGS's line search stalls on the objective's float32 noise.
    Its floor also has shallow side minima (measured: from a start 3x away, LM can stop at ~1.3x the
    true Cn2 and ~0.35x the exposure time with a loss ~5x the global minimum's). ``grid_points`` > 0
    first evaluates the objective on a grid of that many points per parameter spanning ``init`` /
    ``grid_span`` to ``init`` x ``grid_span`` (log-spaced, clipped to the bounds), runs the fit from
    the ``num_starts`` best points and returns the fit of lowest final loss.
    """
    observed = jnp.asarray(observed, jnp.float32)
    if observed.ndim != 4:
        raise ValueError(f"observed must be a clip [T, H, W, C]; got shape {observed.shape}.")
    check_bounds(init, bounds)
    t_count = observed.shape[0]
    if key is not None:
        residuals = pixel_residuals(make_simulator(t_count), key, observed, clean)
    else:
        if sim_frames < 2:
            raise ValueError(f"sim_frames must be >= 2; got {sim_frames}.")
        if jnp.ndim(clean) == 4 and sim_frames != t_count:
            raise ValueError(f"a moving clean clip needs sim_frames = T = {t_count}; got {sim_frames}.")
        start = {name: jnp.asarray(value, jnp.float32) for name, value in init.items()}
        residuals = statistics_residuals(
            make_simulator(sim_frames),
            simulation_keys(jax.random.key(seed), num_keys),
            observed,
            clean,
            weight_params=start,
            **statistics_kwargs,
        )
    starts = [dict(init)]
    if grid_points:
        starts = grid_starts(residuals, init, bounds, grid_points, grid_span, num_starts)
    fits = [fit_parameters(residuals, start, bounds, steps=steps, method=method, progress=progress) for start in starts]
    return min(fits, key=lambda fit: fit.loss[-1])


def grid_starts(
    residual_fn: Callable[[Params], jnp.ndarray],
    init: Mapping[str, float],
    bounds: Bounds,
    points: int,
    span: float,
    count: int = 1,
) -> list[dict[str, float]]:
    """The ``count`` points of lowest mean squared ``residual_fn`` on a log-spaced grid of ``points`` per
    parameter over [init / span, init x span], clipped to ``bounds`` (``points``^P evaluations for P
    parameters), best first."""
    if points < 2 or not span > 1.0 or count < 1:
        raise ValueError(f"grid_points must be >= 2, grid_span > 1 and starts >= 1; got {points}, {span}, {count}.")
    names = list(init)
    axes = [np.clip(float(init[n]) * np.geomspace(1.0 / span, span, points), *bounds[n]) for n in names]
    evaluate = jax.jit(lambda p: jnp.mean(jnp.square(residual_fn(p))))
    scored = []
    for values in itertools.product(*axes):
        candidate = dict(zip(names, (float(v) for v in values), strict=True))
        scored.append((float(evaluate({n: jnp.asarray(v, jnp.float32) for n, v in candidate.items()})), candidate))
    scored.sort(key=lambda item: item[0])
    return [candidate for _, candidate in scored[:count]]


def signature_cn2(observed: jnp.ndarray, optics: Optics, distance: float) -> float:
    """Cn2 (m^(-2/3)) from the clip alone: the median over textured pixels of seed eq. 4 (consistent form).

    Reads high when blur changes from frame to frame or noise is present (``estimate_cn2``'s doc);
    a starting point for a blind fit, not an estimate to report."""
    check_positive("distance", distance, "m")
    value = float(estimate_cn2(observed, optics, distance, reduce="median"))
    if not np.isfinite(value):
        raise ValueError("the observed clip has no textured pixel: the turbulence signature cannot start the fit.")
    return value


def clip_to_bounds(values: Mapping[str, float], bounds: Bounds) -> dict[str, float]:
    """``values`` clipped into their bounds (a signature start can fall outside them)."""
    return {name: float(np.clip(values[name], *bounds[name])) for name in bounds}


def relative_errors(recovered: Mapping[str, float], truth: Mapping[str, float]) -> dict[str, float]:
    """|recovered / truth - 1| per parameter."""
    return {name: abs(float(recovered[name]) / float(truth[name]) - 1.0) for name in recovered}


def simulation_keys(key: jax.Array, count: int) -> jax.Array:
    """``count`` simulation keys for :func:`statistics_residuals` (independent of the observation's key)."""
    if count < 1:
        raise ValueError(f"num_keys must be >= 1; got {count}.")
    return jax.random.split(jax.random.fold_in(key, 0x51), count)
