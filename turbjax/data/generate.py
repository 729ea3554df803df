"""ET-Turb video examples, generated jitted in batches and sharded over the local devices.

One example = one clean clip degraded by one Table-1 draw of the physical parameters
(``turbjax.physics.sample_et_turb_params``) with frozen-flow turbulence
(``turbjax.physics.synthesize_video``). Everything random about example ``i`` of a split comes
from ``example_keys(seed, split, [i])`` and ``CleanClips(seed=...)[i]``, so the records do not
depend on batch size, resumption or device count: each device runs the same program on a fixed
number of examples (``per_device``), only the number of programs changes.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec

from turbjax import physics as P

SPLITS = ("train", "test")
IMAGE_KEYS = ("clean", "degraded", "tilt_only", "blur_only")
# Per-example physical parameters stored with every record (SI units; drift in px/frame).
PARAM_KEYS = (
    "cn2",
    "distance",
    "height",
    "wind_speed",
    "wind_direction",
    "focal_length",
    "f_number",
    "wavelength",
    "pixel_pitch",
    "exposure_time",
    "blur_exposure_time",
    "fps",
    "drift_px_per_frame",
    "fried_parameter",
    "isoplanatic_angle",
    "tilt_std_px",
)


@dataclasses.dataclass(frozen=True)
class VideoSpec:
    """Static description of the examples (hashable: it fixes compiled shapes).

    Attributes:
      num_frames, image_size: clip length and side, px.
      fps: frame rate, frames/s (sets the frozen-flow drift per frame).
      max_drift_px: drift the tilt / blur canvases are exact for (see ``synthesize_video``).
      wavelength, pixel_pitch: m; fixed across draws (the seed prints neither).
      settings: numerical settings of the synthesis (exposure model, noise, PSF bank, ...).
    """

    num_frames: int = 8
    image_size: int = 96
    fps: float = 30.0
    max_drift_px: int = 128
    wavelength: float = 550e-9
    pixel_pitch: float = 5e-6
    settings: P.SynthesisSettings = P.SynthesisSettings()

    def __post_init__(self):
        if self.num_frames < 1:
            raise ValueError(f"num_frames must be >= 1; got {self.num_frames}.")
        if self.image_size <= self.settings.blur_pad:
            pad = self.settings.blur_pad
            raise ValueError(f"image_size must exceed synthesis.blur_pad={pad}; got {self.image_size}.")
        if self.max_drift_px < 0:
            raise ValueError(f"max_drift_px must be >= 0; got {self.max_drift_px}.")
        if not self.fps > 0:
            raise ValueError(f"fps must be > 0 frames/s; got {self.fps}.")


def example_keys(seed: int, split: str, indices) -> jnp.ndarray:
    """PRNG keys (raw uint32 [N, 2]) of examples ``indices`` of ``split``: fold_in(seed, split, index)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}; got {split!r}.")
    base = jax.random.fold_in(jax.random.PRNGKey(seed), SPLITS.index(split))
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.asarray(indices, jnp.uint32))


def _quantize(images: jnp.ndarray) -> jnp.ndarray:
    return jnp.round(jnp.clip(images, 0.0, 1.0) * 255.0).astype(jnp.uint8)


def synthesize_example(key: jax.Array, clip: jnp.ndarray, spec: VideoSpec) -> dict[str, jnp.ndarray]:
    """One example: a Table-1 draw applied to ``clip`` [T, H, W, C] as a frozen-flow video.

    Returns images [T, H, W, C] float32, ``tilt_field`` [T, H, W, 2] px, ``blur_width`` [T, H, W] px
    and the scalars of ``PARAM_KEYS``.
    """
    k_params, k_direction, k_video = jax.random.split(key, 3)
    optics, atmosphere, exposure_time = P.sample_et_turb_params(k_params, spec.wavelength, spec.pixel_pitch)
    direction = jax.random.uniform(k_direction, (), minval=0.0, maxval=2.0 * jnp.pi)
    video = P.synthesize_video(
        k_video,
        clip,
        optics,
        atmosphere,
        exposure_time,
        spec.fps,
        wind_direction=direction,
        max_drift_px=spec.max_drift_px,
        settings=spec.settings,
    )
    f32 = jnp.float32
    params = {
        "cn2": atmosphere.cn2,
        "distance": atmosphere.distance,
        "height": atmosphere.height,
        "wind_speed": atmosphere.wind_speed,
        "wind_direction": direction,
        "focal_length": optics.focal_length,
        "f_number": optics.f_number,
        "wavelength": optics.wavelength,
        "pixel_pitch": optics.pixel_pitch,
        "exposure_time": exposure_time,
        "blur_exposure_time": P.blur_exposure_time(exposure_time, optics, atmosphere, spec.settings),
        "fps": jnp.asarray(spec.fps, f32),
        "drift_px_per_frame": P.frame_drift_px(optics, atmosphere, spec.fps),
        "fried_parameter": P.fried_parameter(optics, atmosphere, spec.settings.wave),
        "isoplanatic_angle": P.isoplanatic_angle(optics, atmosphere, spec.settings.wave),
        "tilt_std_px": P.tilt_std_px(optics, atmosphere, spec.settings.wave),
    }
    out = {name: getattr(video, name) for name in IMAGE_KEYS}
    out["tilt_field"] = video.tilt_field
    out["blur_width"] = video.blur_width
    out.update({name: jnp.asarray(params[name], f32) for name in PARAM_KEYS})
    return out


def local_mesh(num_devices: int | None = None) -> jax.sharding.Mesh:
    """A 1-D ('data',) mesh over the first ``num_devices`` local devices (all by default)."""
    devices = jax.local_devices()
    count = len(devices) if num_devices is None else num_devices
    if not 1 <= count <= len(devices):
        raise ValueError(f"num_devices must be in [1, {len(devices)}]; got {num_devices}.")
    return jax.sharding.Mesh(np.asarray(devices[:count]), ("data",))


@functools.lru_cache(maxsize=16)
def batch_synthesizer(spec: VideoSpec, mesh: jax.sharding.Mesh, quantize: bool = True) -> Callable:
    """``fn(keys [N, 2], clips [N, T, H, W, C]) -> dict`` jitted and sharded over ``mesh``.

    N must be a multiple of the mesh size; each device vmaps ``synthesize_example`` over its
    N / devices examples. With ``quantize`` images come back as uint8 (round(255 x)), the
    storage format of the dataset; fields and parameters stay float32. Cached: builds and
    pipelines with the same spec and mesh share one compiled program.
    """

    def per_device(keys, clips):
        out = jax.vmap(lambda k, c: synthesize_example(k, c, spec))(keys, clips)
        if quantize:
            out.update({name: _quantize(out[name]) for name in IMAGE_KEYS})
        return out

    data = PartitionSpec("data")
    return jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(data, data), out_specs=data))
