"""Turbulence signature and Cn2 estimation (TMTS eq. 4), and the simulator's strength map.

The statistical tests run the ET-Turb simulator on four embedded scenes, 64 px, 32 frames each
with independent tilt draws (so the temporal variance at a pixel samples the tilt variance).
The scenes are smoothed by a 1 px Gaussian, standing in for the optics' band limit: the
signature rests on a first-order Taylor expansion, which pixel-scale texture (brick, gravel at
64 px) breaks (S is then 1.5-3x the tilt variance). Per-axis tilt std 0.38 px.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage, stats

from turbjax import physics as P
from turbjax.physics.blur import blur_correlation_px
from turbjax.physics.signature import PAPER_AOA_CONSTANT, signature_terms
from turbjax.physics.synth import blur_and_assemble, blur_exposure_time

SIZE, FRAMES = 64, 32
SCENES = ("astronaut", "coffee", "camera", "chelsea")
SETTINGS = P.SynthesisSettings(blur_pad=8, num_psfs=4)
OPTICS = P.Optics(wavelength=550e-9, focal_length=0.3, f_number=4.0, pixel_pitch=5e-6)
ATMOS = P.Atmosphere(cn2=5e-14, distance=300.0, height=10.0, wind_speed=3.0)
TAU = 5e-3
TEXTURED = 1e-3  # |grad I|^2 (intensity^2 / px^2) of the pixels where eq. 3 is tested
STRONG, WEAK = 2.0, 0.5  # Cn2 multipliers of the two halves of the strength map


@pytest.fixture(scope="module")
def scenes():
    from turbjax.data.samples import embedded_images

    images = embedded_images(SIZE, SCENES)
    return np.clip(ndimage.gaussian_filter(images, (0, 1.0, 1.0, 0), mode="reflect"), 0.0, 1.0)


def _keys(seed):
    return jax.random.split(jax.random.key(seed), (len(SCENES), FRAMES))


@pytest.fixture(scope="module")
def tilt_clips(scenes):
    """Tilt-only clips [4, T, H, W, 3] of the uniform path (strength map None)."""
    one = lambda k, im: P.synthesize_frame(k, im, OPTICS, ATMOS, TAU, SETTINGS).tilt_only  # noqa: E731
    fn = jax.jit(jax.vmap(jax.vmap(one, in_axes=(0, None))))
    return np.asarray(fn(_keys(0), scenes))


@pytest.fixture(scope="module")
def strength_map():
    m = np.full((SIZE, SIZE), WEAK, np.float32)
    m[:, : SIZE // 2] = STRONG
    return m


@pytest.fixture(scope="module")
def map_videos(scenes, strength_map):
    """Full degradations [4, T, ...] with the half-strong / half-weak strength map."""
    one = lambda k, im, m: P.synthesize_frame(k, im, OPTICS, ATMOS, TAU, SETTINGS, strength_map=m)  # noqa: E731
    fn = jax.jit(jax.vmap(jax.vmap(one, in_axes=(0, None, None)), in_axes=(0, 0, None)))
    return jax.tree_util.tree_map(np.asarray, fn(_keys(1), scenes, strength_map))


def _reference_signature(clip, eps):
    """NumPy restatement of the documented estimator: Rec.601 luma, ddof = 1, np.gradient."""
    luma = np.asarray(clip, np.float64) @ np.array([0.299, 0.587, 0.114])
    mean = luma.mean(axis=-3)
    grad_sq = np.gradient(mean, axis=-1) ** 2 + np.gradient(mean, axis=-2) ** 2
    return luma.var(axis=-3, ddof=1) / (grad_sq + eps)


def test_signature_matches_its_definition():
    clip = np.random.default_rng(0).random((5, 9, 11, 3)).astype(np.float32)
    np.testing.assert_allclose(P.turbulence_signature(clip, eps=1e-3), _reference_signature(clip, 1e-3), rtol=2e-4)
    gray = clip[..., :1]
    np.testing.assert_allclose(
        P.turbulence_signature(gray), _reference_signature(np.repeat(gray, 3, -1), 1e-4), rtol=2e-4
    )


def test_signature_of_a_shifted_ramp_is_the_shift_variance():
    """I_t(x, y) = c + a (x + dx_t) + b (y + dy_t): eq. 3 holds exactly (also on the border, where
    the one-sided differences of a ramp are exact), so S = the shift variance along grad I."""
    rng = np.random.default_rng(1)
    a, b, t = 0.01, -0.02, 12
    dx, dy = rng.normal(0.0, 0.7, t), rng.normal(0.0, 0.4, t)
    y, x = np.mgrid[:16, :20]
    clip = 0.5 + a * (x[None] + dx[:, None, None]) + b * (y[None] + dy[:, None, None])
    s = np.asarray(P.turbulence_signature(clip[..., None].astype(np.float32), eps=1e-12))
    cov = np.cov(dx, dy)  # ddof = 1, as the signature
    expected = (a * a * cov[0, 0] + b * b * cov[1, 1] + 2 * a * b * cov[0, 1]) / (a * a + b * b)
    np.testing.assert_allclose(s, expected, rtol=2e-3)


def test_batched_signature_equals_per_clip():
    clips = np.random.default_rng(2).random((2, 3, 4, 8, 10, 3)).astype(np.float32)
    batched = np.asarray(jax.jit(P.turbulence_signature)(clips))
    assert batched.shape == (2, 3, 8, 10)
    for i in range(2):
        for j in range(3):
            np.testing.assert_allclose(batched[i, j], P.turbulence_signature(clips[i, j]), rtol=1e-5)
    cn2 = np.asarray(P.estimate_cn2(clips, OPTICS, 300.0, reduce="median", min_gradient_sq=0.0))
    assert cn2.shape == (2, 3)
    single = P.estimate_cn2(clips[1, 2], OPTICS, 300.0, reduce="median", min_gradient_sq=0.0)
    np.testing.assert_allclose(cn2[1, 2], single, rtol=1e-5)


def test_signature_estimates_the_tilt_variance(tilt_clips):
    """Median of S over the textured pixels of four clips vs the per-axis tilt variance (px^2)
    the simulator used, within a factor 1.5. Expected bias: the mean frame's |grad I|^2 is ~12%
    below the clean one (averaging over the tilt smooths it), and the per-pixel variance of 32
    spatially correlated tilt fields scatters by ~25% per clip (~12% over four)."""
    s = np.asarray(P.turbulence_signature(tilt_clips))
    textured = np.asarray(signature_terms(tilt_clips)[1]) >= TEXTURED
    assert textured.mean() > 0.2
    truth = float(P.tilt_std_px(OPTICS, ATMOS)) ** 2
    ratio = float(np.median(s[textured])) / truth
    assert 1 / 1.5 < ratio < 1.5, ratio


def test_estimate_cn2_recovers_the_cn2(tilt_clips):
    """Cn2 is linear in S with an exact conversion, so it inherits S's factor 1.5."""
    per_clip = np.asarray(P.estimate_cn2(tilt_clips, OPTICS, ATMOS.distance, reduce="median"))
    assert per_clip.shape == (len(SCENES),)
    ratio = float(np.median(per_clip)) / ATMOS.cn2
    assert 1 / 1.5 < ratio < 1.5, ratio
    # the map form is the per-pixel eq. 4
    cn2_map = np.asarray(P.estimate_cn2(tilt_clips[0], OPTICS, ATMOS.distance))
    textured = np.asarray(signature_terms(tilt_clips[0])[1]) >= TEXTURED
    np.testing.assert_allclose(np.median(cn2_map[textured]), per_clip[0], rtol=1e-5)


def test_cn2_conversions_follow_the_tilt_laws():
    """consistent/spherical: per axis sigma^2 = 3.04 x 3/8 D^(-1/3) Cn2 L (PHYSICS.md), px^2 =
    rad^2 / PFOV^2; plane: 3.04 D^(-1/3) Cn2 L; paper: eq. 4 with 2.914."""
    clip = np.random.default_rng(3).random((4, 8, 8, 1)).astype(np.float32)
    s = np.asarray(P.turbulence_signature(clip))
    pfov, d, length = 5e-6 / 0.3, 0.3 / 4.0, 300.0
    per_px2 = pfov**2 * d ** (1 / 3) / length
    cases = {"spherical": 3.0427 * 3 / 8, "plane": 3.0427}
    for wave, constant in cases.items():
        got = np.asarray(P.estimate_cn2(clip, OPTICS, length, wave=wave))
        np.testing.assert_allclose(got, s * per_px2 / constant, rtol=1e-3)
    paper = np.asarray(P.estimate_cn2(clip, OPTICS, length, form="paper"))
    np.testing.assert_allclose(paper, s * per_px2 / PAPER_AOA_CONSTANT, rtol=1e-5)


def test_signature_follows_the_strength_map(map_videos, strength_map):
    """Strong half (Cn2 x 2) vs weak half (x 0.5): Spearman of S with the map >= 0.5 on the
    textured pixels of every clip, tilt-only and fully degraded (a two-valued map caps the
    rank correlation at 0.87), and the strong/weak ratio of median S near the variance ratio 4."""
    for which in ("tilt_only", "degraded"):
        clips = getattr(map_videos, which)
        s = np.asarray(P.turbulence_signature(clips))
        textured = np.asarray(signature_terms(clips)[1]) >= TEXTURED
        for i in range(len(SCENES)):
            rho = stats.spearmanr(s[i][textured[i]], strength_map[textured[i]]).statistic
            assert rho >= 0.5, (which, SCENES[i], rho)
        strong = textured & (strength_map == STRONG)
        weak = textured & (strength_map == WEAK)
        ratio = np.median(s[strong]) / np.median(s[weak])
        assert 4 / 1.5 < ratio < 4 * 1.5, (which, ratio)
    # the blur follows the map too
    widths = map_videos.blur_width
    assert widths[..., : SIZE // 2].mean() > 1.2 * widths[..., SIZE // 2 :].mean()


@pytest.fixture(scope="module")
def frame_variants(scenes):
    """One frame (40 px) without a map, from the primitives the simulator is built of (the code
    before the map existed), with a map of ones, and with a 0 | 2.25 map, in one compile."""
    image = jnp.asarray(scenes[0, :40, :40])
    h, w = image.shape[:2]
    ones = jnp.ones((h, w))
    split = jnp.ones((h, w)).at[:, : w // 2].set(0.0).at[:, w // 2 :].set(2.25)

    def reference(key):
        k_tilt, k_blur, k_noise = jax.random.split(key, 3)
        field = P.tilt_field(k_tilt, (h, w), OPTICS, ATMOS, wave=SETTINGS.wave, embed_factor=SETTINGS.tilt_embed_factor)
        tau = blur_exposure_time(TAU, OPTICS, ATMOS, SETTINGS)
        widths = P.blur_width_field(
            k_blur, (h, w), OPTICS, ATMOS, tau, correlation_px=SETTINGS.blur_correlation_px,
            max_correlation_px=SETTINGS.max_blur_correlation_px, eps=SETTINGS.blur_eps, wave=SETTINGS.wave,
        )  # fmt: skip
        return blur_and_assemble(k_noise, image, P.warp(image, field), field, widths, OPTICS, ATMOS, TAU, SETTINGS)

    def variants(key):
        run = lambda m: P.synthesize_frame(key, image, OPTICS, ATMOS, TAU, SETTINGS, strength_map=m)  # noqa: E731
        both = jax.vmap(run)(jnp.stack([ones, split]))
        ones_out, split_out = (jax.tree_util.tree_map(lambda x, i=i: x[i], both) for i in (0, 1))
        tau = blur_exposure_time(TAU, OPTICS, ATMOS, SETTINGS)
        scaled_widths = P.blur_width_field(
            jax.random.split(key, 3)[1], (h, w), OPTICS, ATMOS.replace(cn2=ATMOS.cn2 * 2.25), tau,
            correlation_px=blur_correlation_px(OPTICS, ATMOS), eps=SETTINGS.blur_eps,
        )  # fmt: skip
        return run(None), reference(key), ones_out, split_out, scaled_widths

    out = jax.jit(variants)(jax.random.key(5))
    return jax.tree_util.tree_map(np.asarray, out)


def test_no_map_is_the_simulator_as_before(frame_variants):
    none, reference, ones, _, _ = frame_variants
    for name in ("tilt_field", "tilt_only", "blur_width", "blur_only", "degraded"):
        np.testing.assert_array_equal(getattr(none, name), getattr(reference, name), err_msg=name)
        np.testing.assert_allclose(getattr(ones, name), getattr(none, name), rtol=1e-5, atol=1e-6, err_msg=name)


def test_strength_map_scales_tilt_and_blur_locally(frame_variants):
    none, _, _, split, scaled_widths = frame_variants
    half = split.tilt_field.shape[1] // 2
    np.testing.assert_array_equal(split.tilt_field[:, :half], 0.0)
    np.testing.assert_allclose(split.tilt_field[:, half:], 1.5 * none.tilt_field[:, half:], rtol=1e-6, atol=1e-7)
    # blur: Cn2 x 2.25 where m = 2.25, diffraction-limited (still finite) where m = 0
    np.testing.assert_allclose(split.blur_width[:, half:], scaled_widths[:, half:], rtol=1e-5)
    assert np.all(np.isfinite(split.degraded))
    assert split.blur_width[:, :half].max() < none.blur_width[:, :half].min()
    np.testing.assert_allclose(split.atmosphere.cn2, ATMOS.cn2, rtol=1e-6)  # the mean Cn2 is reported


def test_video_strength_map(scenes):
    image = jnp.asarray(scenes[1, :24, :24])

    def run(key, m=None):
        kwargs = dict(num_frames=3, max_drift_px=4, settings=SETTINGS, strength_map=m)
        return P.synthesize_video(key, image, OPTICS, ATMOS, TAU, **kwargs)

    # one graph for both maps, to save a compile; the None path runs the code as before (test_video.py)
    maps = jnp.stack([jnp.ones((24, 24)), jnp.full((24, 24), 2.25)])
    out = jax.jit(jax.vmap(run, in_axes=(None, 0)))(jax.random.key(6), maps)
    np.testing.assert_allclose(out.tilt_field[1], 1.5 * out.tilt_field[0], rtol=1e-5, atol=1e-6)
    assert float(jnp.min(out.blur_width[1] - out.blur_width[0])) > 0.0
    assert float(jnp.std(out.tilt_field[0])) > 0.1
    with pytest.raises(ValueError, match=r"strength_map must be finite and in \[0, inf\]"):
        run(jax.random.key(0), -jnp.ones((24, 24)))


GOOD = np.full((3, 6, 6, 3), 0.5, np.float32)


def _frame_with_map(strength_map):
    image = np.full((24, 24, 3), 0.5, np.float32)
    return P.synthesize_frame(jax.random.key(0), image, OPTICS, ATMOS, TAU, SETTINGS, strength_map=strength_map)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: P.turbulence_signature(GOOD[0]), r"clip must have rank >= 4"),
        (lambda: P.turbulence_signature(GOOD[:1]), r"T >= 2 frames"),
        (lambda: P.turbulence_signature(GOOD[..., :2]), r"1 \(intensity\) or 3 \(RGB\) channels"),
        (lambda: P.turbulence_signature(GOOD[:, :1]), r"at least 2 x 2 pixels"),
        (lambda: P.turbulence_signature(GOOD.astype(np.uint8)), r"clip must be a float array"),
        (lambda: P.turbulence_signature(GOOD + 1.0), r"clip must be finite and in \[0, 1\]"),
        (lambda: P.turbulence_signature(GOOD, eps=0.0), r"eps must be finite and in \(0, inf\]"),
        (lambda: P.estimate_cn2(GOOD, OPTICS, 0.0), r"distance must be finite and in \(0, inf\] m"),
        (lambda: P.estimate_cn2(GOOD, OPTICS.replace(f_number=-1.0), 300.0), r"optics\.f_number"),
        (lambda: P.estimate_cn2(GOOD, OPTICS, 300.0, form="printed"), r"form must be 'consistent' or 'paper'"),
        (lambda: P.estimate_cn2(GOOD, OPTICS, 300.0, wave="cylindrical"), r"wave must be"),
        (lambda: P.estimate_cn2(GOOD, OPTICS, 300.0, reduce="mean"), r"reduce must be 'none' or 'median'"),
        (lambda: P.estimate_cn2(GOOD, OPTICS, 300.0, min_gradient_sq=-1.0), r"min_gradient_sq"),
        (lambda: _frame_with_map(np.ones((5, 5))), r"strength_map must have the frame shape \(24, 24\)"),
        (lambda: _frame_with_map(np.full((24, 24), np.nan)), r"strength_map must be finite"),
    ],
)
def test_bad_inputs_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_plots_write_pngs(tmp_path, map_videos, strength_map):
    from matplotlib import image as mpimg

    from turbjax import signature_plots
    from turbjax.workdir import save_figure

    clips = map_videos.degraded[:2]
    s = np.asarray(P.turbulence_signature(clips))
    truth = strength_map * float(P.tilt_std_px(OPTICS, ATMOS)) ** 2
    fig = signature_plots.signature_figure(clips[:, 0], s, references=np.stack([truth, truth]), labels=SCENES[:2])
    path = save_figure(tmp_path / "signature.png", fig)
    assert mpimg.imread(path).shape[0] > 100
    profiles = {"clean": map_videos.clean[0], "degraded": map_videos.degraded[0]}
    fig = signature_plots.yt_profile_figure(profiles, column=20)
    assert mpimg.imread(save_figure(tmp_path / "yt.png", fig)).shape[1] > 100
    np.testing.assert_array_equal(signature_plots.yt_profile(clips[0], 20)[:, 3], clips[0, 3, :, 20])
    with pytest.raises(ValueError, match="column must be in"):
        signature_plots.yt_profile_figure(profiles, column=SIZE)
