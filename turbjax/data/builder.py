"""The ET-Turb video dataset: a TFDS builder writing array_record files (no TensorFlow needed).

Per example: ``clean``, ``degraded``, ``tilt_only``, ``blur_only`` clips [T, S, S, 3] uint8
(round(255 x), the precision of the PNG frames such datasets ship as), ``tilt_field``
[T, S, S, 2] float32 px, ``blur_width`` [T, S, S] float32 px, every physical parameter of
``turbjax.data.generate.PARAM_KEYS`` (SI units) and ``example_id``. Records are written in
``example_id`` order (TFDS shuffling disabled), so record i of a split is example i.

Build = generate, then write. Generation runs in chunks of ``per_device x devices`` examples,
jitted and sharded over the local devices; each finished chunk is saved atomically to a cache
next to the dataset. A killed build re-run regenerates only the chunks that are missing, then
TFDS writes the shards into a temporary directory that it renames when complete (stale
temporary directories of killed writes are removed first), so neither corrupt nor duplicate
shards can appear. Same config -> identical records, on any number of devices.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
from pathlib import Path

import jax
import ml_collections
import numpy as np
from tqdm.auto import tqdm

from turbjax.data.clean import CleanClips
from turbjax.data.generate import (
    IMAGE_KEYS,
    PARAM_KEYS,
    SPLITS,
    VideoSpec,
    batch_synthesizer,
    example_keys,
    local_mesh,
)
from turbjax.data.sources import DataSourceError
from turbjax.physics import SynthesisSettings
from turbjax.workdir import write_npz

BUILDER_NAME = "et_turb_video"
VERSION = "1.0.0"
_CHUNK_GLOB = "chunk_*.npz"


def video_spec(config: ml_collections.ConfigDict) -> VideoSpec:
    """The static VideoSpec of a dataset config (``config.video`` and ``config.synthesis``)."""
    video = config.video
    return VideoSpec(
        num_frames=video.num_frames,
        image_size=video.image_size,
        fps=video.fps,
        max_drift_px=video.max_drift_px,
        wavelength=video.wavelength,
        pixel_pitch=video.pixel_pitch,
        settings=SynthesisSettings(**dict(config.synthesis)),
    )


def clean_clips(config: ml_collections.ConfigDict, split: str) -> CleanClips:
    """The clean-clip source of ``split``; embedded scenes differ between train and test."""
    source, video = config.source, config.video
    scenes = source.scenes if split == "train" else source.test_scenes
    return CleanClips(
        source.kind,
        video.num_frames,
        video.image_size,
        seed=config.seed * 2 + SPLITS.index(split),
        scenes=scenes,
        path=source.path,
        tfds_name=source.tfds_name,
        tfds_split=source.tfds_split if split == "train" else source.tfds_test_split,
        data_dir=source.tfds_data_dir,
        max_camera_px=source.max_camera_px,
        max_object_px=source.max_object_px,
        max_images=source.max_images,
    )


def split_sizes(config: ml_collections.ConfigDict) -> dict[str, int]:
    return {"train": int(config.num_train), "test": int(config.num_test)}


def fingerprint(config: ml_collections.ConfigDict) -> str:
    """Hash of everything that determines the records (not the device count or chunking)."""
    keys = ("seed", "num_train", "num_test", "video", "synthesis", "source")
    blob = json.dumps(
        {k: config[k].to_dict() if hasattr(config[k], "to_dict") else config[k] for k in keys},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def dataset_dir(config: ml_collections.ConfigDict, data_dir: str | Path) -> Path:
    """Where the finished dataset lives: data_dir/et_turb_video/<config.name>/<version>."""
    return Path(data_dir) / BUILDER_NAME / config.name / VERSION


def check_dataset_config(config: ml_collections.ConfigDict) -> None:
    """Raise ValueError naming the bad field before any work is done."""
    if config.num_train < 1 or config.num_test < 0:
        raise ValueError(f"num_train must be >= 1 and num_test >= 0; got {config.num_train}, {config.num_test}.")
    if config.per_device < 1:
        raise ValueError(f"per_device (examples per device per step) must be >= 1; got {config.per_device}.")
    if not str(config.name).replace("_", "").isalnum():
        raise ValueError(f"name must be letters, digits and '_' (a TFDS config name); got {config.name!r}.")
    video_spec(config)  # validates the video and synthesis fields


class _Chunks:
    """The generation cache of one split: chunk_<start>_<stop>.npz files of consecutive examples."""

    def __init__(self, folder: Path):
        self.folder = folder

    def done(self) -> list[tuple[int, int, Path]]:
        out = []
        for path in sorted(self.folder.glob(_CHUNK_GLOB)):
            start, stop = (int(x) for x in path.stem.split("_")[1:3])
            out.append((start, stop, path))
        return out

    def missing(self, count: int) -> list[int]:
        have = np.zeros(count, bool)
        for start, stop, _ in self.done():
            have[start:stop] = True
        return [int(i) for i in np.flatnonzero(~have)]

    def write(self, indices: np.ndarray, arrays: dict[str, np.ndarray]) -> None:
        write_npz(self.folder / f"chunk_{indices[0]:08d}_{indices[-1] + 1:08d}.npz", arrays)

    def examples(self, count: int):
        """(index, example dict) for examples 0..count-1 in order, each exactly once."""
        next_index = 0
        for start, stop, path in self.done():
            if stop <= next_index:
                continue  # an older chunk wholly covered by earlier ones
            with np.load(path) as chunk:
                arrays = {name: chunk[name] for name in chunk.files}
            for row, index in enumerate(range(start, stop)):
                if index >= next_index and index < count:
                    yield index, {name: value[row] for name, value in arrays.items()}
                    next_index = index + 1
        if next_index != count:
            raise RuntimeError(f"generation cache {self.folder} ends at example {next_index} of {count}.")


def generate_split(
    config: ml_collections.ConfigDict,
    split: str,
    cache: Path,
    *,
    num_devices: int | None = None,
    progress: bool = True,
    max_chunks: int | None = None,
) -> None:
    """Generate the missing examples of ``split`` into ``cache`` (resumable).

    ``max_chunks`` stops after that many chunks (what a killed build leaves behind; tests use it).
    """
    count = split_sizes(config)[split]
    chunks = _Chunks(cache)
    missing = chunks.missing(count)
    if not missing:
        return
    cache.mkdir(parents=True, exist_ok=True)
    mesh = local_mesh(num_devices)
    step = config.per_device * mesh.size
    synthesize = batch_synthesizer(video_spec(config), mesh)
    clips = clean_clips(config, split)
    bar = tqdm(total=count, initial=count - len(missing), desc=f"generating {split}", unit="clip", disable=not progress)
    groups = [missing[i : i + step] for i in range(0, len(missing), step)]
    for number, group in enumerate(groups):
        if max_chunks is not None and number >= max_chunks:
            break
        # Pad a short group with the indices that follow it, then keep the real ones.
        indices = np.asarray(group + [group[-1] + 1 + k for k in range(step - len(group))])
        out = jax.device_get(synthesize(example_keys(config.seed, split, indices), clips.batch(indices)))
        real = len(group)
        runs = np.split(np.arange(real), np.flatnonzero(np.diff(indices[:real]) != 1) + 1)
        for run in runs:  # consecutive indices per chunk file
            arrays = {name: np.asarray(value[run]) for name, value in out.items()}
            arrays["example_id"] = indices[run].astype(np.int64)
            chunks.write(indices[run], arrays)
        bar.update(real)
    bar.close()


def _features(spec: VideoSpec):
    import tensorflow_datasets as tfds

    t, s = spec.num_frames, spec.image_size
    images = {name: tfds.features.Tensor(shape=(t, s, s, 3), dtype=np.uint8) for name in IMAGE_KEYS}
    return tfds.features.FeaturesDict(
        {
            **images,
            "tilt_field": tfds.features.Tensor(shape=(t, s, s, 2), dtype=np.float32),
            "blur_width": tfds.features.Tensor(shape=(t, s, s), dtype=np.float32),
            "example_id": tfds.features.Scalar(dtype=np.int64),
            **{name: tfds.features.Scalar(dtype=np.float32) for name in PARAM_KEYS},
        }
    )


@functools.cache
def _builder_class():
    """The TFDS builder class, defined once (TFDS registers builder names globally)."""
    import tensorflow_datasets as tfds

    class EtTurbVideo(tfds.core.GeneratorBasedBuilder):
        """ET-Turb frozen-flow turbulence videos (clean, degraded, tilt-only, blur-only, fields)."""

        VERSION = tfds.core.Version(VERSION)

        def __init__(self, *, dataset_config: ml_collections.ConfigDict, cache_dir: Path, **kwargs):
            self._dataset_config = dataset_config
            self._cache_dir = cache_dir
            builder_config = tfds.core.BuilderConfig(name=dataset_config.name, description="turbjax ET-Turb video")
            super().__init__(config=builder_config, **kwargs)

        def _info(self):
            config = self._dataset_config
            return tfds.core.DatasetInfo(
                builder=self,
                description="ET-Turb-style turbulence videos synthesized by turbjax (frozen flow, Table-1 draws).",
                features=_features(video_spec(config)),
                disable_shuffling=True,
                metadata=tfds.core.MetadataDict(fingerprint=fingerprint(config), config=config.to_dict()),
            )

        def _split_generators(self, dl_manager):
            del dl_manager
            sizes = split_sizes(self._dataset_config)
            return {split: self._generate_examples(split) for split in SPLITS if sizes[split] > 0}

        def _generate_examples(self, split):
            yield from _Chunks(self._cache_dir / split).examples(split_sizes(self._dataset_config)[split])

    return EtTurbVideo


def build_dataset(
    config: ml_collections.ConfigDict,
    data_dir: str | Path,
    *,
    num_devices: int | None = None,
    progress: bool = True,
    max_chunks: int | None = None,
) -> Path:
    """Build (or finish building) the dataset of ``config`` under ``data_dir``; returns its path.

    A finished dataset is reused if its fingerprint matches ``config`` and refused otherwise
    (choose another ``name`` or delete it). With ``max_chunks`` the build stops after that many
    generation chunks per split, as a killed build would, and returns the generation cache.
    """
    import tensorflow_datasets as tfds

    check_dataset_config(config)
    target = dataset_dir(config, data_dir)
    if (target / "dataset_info.json").exists():
        existing = tfds.builder_from_directory(target).info.metadata or {}
        if existing.get("fingerprint") != fingerprint(config):
            raise ValueError(
                f"dataset {str(target)!r} was built from a different config (fingerprint "
                f"{existing.get('fingerprint')} != {fingerprint(config)}): choose another config.name or delete it."
            )
        return target
    cache_root = Path(data_dir) / BUILDER_NAME / config.name / f"cache-{fingerprint(config)}"
    for split in SPLITS:
        if split_sizes(config)[split] > 0:
            generate_split(
                config, split, cache_root / split, num_devices=num_devices, progress=progress, max_chunks=max_chunks
            )
    if max_chunks is not None and any(
        _Chunks(cache_root / s).missing(n) for s, n in split_sizes(config).items() if n > 0
    ):
        return cache_root  # interrupted on purpose: the cache holds what was generated so far
    for stale in target.parent.glob(f"incomplete.*{VERSION}"):
        shutil.rmtree(stale, ignore_errors=True)  # leftovers of a killed write
    tfds.display_progress_bar(progress)
    builder = _builder_class()(
        dataset_config=config, cache_dir=cache_root, data_dir=str(data_dir), file_format="array_record"
    )
    builder.download_and_prepare()
    if not config.keep_cache:
        shutil.rmtree(cache_root, ignore_errors=True)
    return target


def open_split(path: str | Path, split: str):
    """Random access to a built split: ``source[i]`` is example i as a dict of NumPy arrays."""
    import tensorflow_datasets as tfds

    path = Path(path)
    if not (path / "dataset_info.json").exists():
        raise DataSourceError(
            f"no turbjax dataset at {str(path)!r}: build one with `python -m experiments.simulate "
            f"--config=experiments/configs/et_turb.py:dataset --workdir=DIR` (it is written to "
            f"DIR/tfds/{BUILDER_NAME}/<name>/{VERSION})."
        )
    builder = tfds.builder_from_directory(path)
    if split not in builder.info.splits:
        raise DataSourceError(f"dataset {str(path)!r} has no split {split!r}; it has {list(builder.info.splits)}.")
    return builder.as_data_source(split)


def directory_bytes(path: str | Path) -> int:
    """Total size of the files under ``path``, bytes."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def build_and_report(config: ml_collections.ConfigDict, workdir: str | Path) -> dict:
    """Build the dataset of ``config`` into ``config.data_dir`` (default WORKDIR/tfds) and write
    WORKDIR/dataset.json with its path, split sizes, build time and size on disk."""
    import time

    from turbjax.workdir import write_json

    data_dir = Path(config.data_dir) if config.data_dir else Path(workdir) / "tfds"
    start = time.perf_counter()
    path = build_dataset(config, data_dir)
    seconds = time.perf_counter() - start
    examples = sum(split_sizes(config).values())
    size = directory_bytes(path)
    report = {
        "path": str(path),
        "splits": split_sizes(config),
        "build_seconds": seconds,
        "size_bytes": size,
        "bytes_per_example": size / examples,
        "devices": jax.local_device_count(),
        "fingerprint": fingerprint(config),
    }
    write_json(Path(workdir) / "dataset.json", report)
    return report
