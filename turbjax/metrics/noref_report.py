"""No-reference quality report behind ``python -m experiments.evaluate_noref``: a TMTS Table 5-style table.

Real turbulence footage has no ground truth, so restorations are compared by NIQE and BRISQUE (lower is better) of the
input frames and of the restored frames. Frames are scored at their native resolution: both metrics depend on scale
(NIQE's 96 px blocks, BRISQUE's 7 px window), so resizing would change the numbers. With no folder configured, the
report degrades the embedded scikit-image scenes with ET-Turb Table-1 draws, so the command runs on a fresh machine;
its rows are then ``clean`` (the scenes) and ``input`` (the synthesized frames).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from turbjax.metrics.noref import brisque, niqe
from turbjax.workdir import write_json

if TYPE_CHECKING:
    from ml_collections import ConfigDict

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
METRICS = ("niqe", "brisque")


def frame_files(folder: str | Path, recursive: bool = True) -> list[Path]:
    """Image files under ``folder`` (in sub-folders too when ``recursive``: one sub-folder per clip), sorted."""
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"frame folder {str(root)!r} does not exist: expected a directory of images.")
    pattern = root.rglob("*") if recursive else root.iterdir()
    files = sorted(p for p in pattern if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"frame folder {str(root)!r} holds no images ({', '.join(IMAGE_SUFFIXES)}).")
    return files


def read_frame(file: str | Path) -> np.ndarray:
    """One frame at its native resolution, float64 in [0, 1]: [H, W] if gray, else [H, W, 3] (alpha dropped).

    8- and 16-bit integers are divided by 255 and 65535; float files are clipped to [0, 1].
    """
    from skimage import io

    try:
        image = np.asarray(io.imread(file))
    except Exception as error:  # unreadable or truncated file: say which
        raise ValueError(f"could not read frame {str(file)!r}: {error}") from error
    if image.ndim == 3:
        image = image[..., 0] if image.shape[-1] == 1 else image[..., :3]
    if image.dtype == np.uint8:
        return image / 255.0
    if image.dtype == np.uint16:
        return image / 65535.0
    if image.dtype == bool:
        return image.astype(np.float64)
    return np.clip(image.astype(np.float64), 0.0, 1.0)


def score_frames(
    frames: Iterable[tuple[str, np.ndarray]], crop_border: int = 0, desc: str = "scoring", total: int | None = None
) -> list[dict]:
    """NIQE and BRISQUE of each (name, image), with the seconds each took, behind a progress bar."""
    rows = []
    for name, image in tqdm(frames, desc=desc, unit="frame", total=total):
        row: dict = {"name": name, "height": int(image.shape[0]), "width": int(image.shape[1])}
        for metric, fn in (("niqe", lambda x: niqe(x, crop_border)), ("brisque", brisque)):
            start = time.perf_counter()
            try:
                row[metric] = fn(image)
            except ValueError as error:
                raise ValueError(f"frame {name!r}: {error}") from error
            row[f"{metric}_seconds"] = time.perf_counter() - start
        rows.append(row)
    return rows


def summarize(rows: list[dict]) -> dict:
    """Mean and standard deviation of each metric over frames, the frame count and the mean seconds per frame."""
    summary: dict = {"num_frames": len(rows)}
    for metric in METRICS:
        values = np.array([row[metric] for row in rows], np.float64)
        summary[f"{metric}_mean"] = float(values.mean())
        summary[f"{metric}_std"] = float(values.std())
        summary[f"{metric}_seconds_per_frame"] = float(np.mean([row[f"{metric}_seconds"] for row in rows]))
    return summary


def format_table(summaries: dict[str, dict]) -> str:
    """Rows per method, columns NIQE and BRISQUE (mean +- std over frames), as TMTS Table 5 lays them out."""
    lines = [f"{'Method':<12} {'Frames':>6}  {'NIQE':>15}  {'BRISQUE':>15}"]
    for method, s in summaries.items():
        niqe_cell = f"{s['niqe_mean']:.3f} +- {s['niqe_std']:.3f}"
        brisque_cell = f"{s['brisque_mean']:.2f} +- {s['brisque_std']:.2f}"
        lines.append(f"{method:<12} {s['num_frames']:>6}  {niqe_cell:>15}  {brisque_cell:>15}")
    lines.append("(lower is better for both; mean +- std over frames)")
    return "\n".join(lines)


def _folder_frames(files: list[Path], root: Path) -> Iterator[tuple[str, np.ndarray]]:
    for file in files:
        yield file.relative_to(root).as_posix(), read_frame(file)


def _folder_methods(config: ConfigDict) -> tuple[dict[str, list[dict]], dict]:
    """Scores of the frames under ``config.input_dir`` and, matched by relative path, ``config.restored_dir``."""
    root = Path(config.input_dir)
    files = frame_files(root, config.recursive)
    if config.max_frames is not None:
        files = files[: int(config.max_frames)]
    methods = {"input": score_frames(_folder_frames(files, root), config.crop_border, "input", len(files))}
    source = {"kind": "folder", "input_dir": str(root)}
    if config.restored_dir is not None:
        restored_root = Path(config.restored_dir)
        if not restored_root.is_dir():
            raise ValueError(f"restored_dir {str(restored_root)!r} does not exist: expected a directory of images.")
        restored = [restored_root / f.relative_to(root) for f in files]
        missing = [p.relative_to(restored_root).as_posix() for p in restored if not p.is_file()]
        if missing:
            raise ValueError(
                f"restored_dir {str(restored_root)!r} lacks {len(missing)} of the {len(files)} input frames "
                f"(matched by relative path), e.g. {missing[:3]}."
            )
        methods["restored"] = score_frames(
            _folder_frames(restored, restored_root), config.crop_border, "restored", len(restored)
        )
        source["restored_dir"] = str(restored_root)
    return methods, source


def _synthetic_methods(config: ConfigDict) -> tuple[dict[str, list[dict]], dict]:
    """The embedded scenes degraded by ``synthesize_frame`` with Table-1 draws: rows ``clean`` and ``input``."""
    import jax
    import jax.numpy as jnp

    from turbjax import physics as P
    from turbjax.data import embedded_images

    s = config.synthetic
    scenes = tuple(s.scenes)
    n = int(s.num_frames)
    clean = embedded_images(int(s.image_size), scenes)[np.arange(n) % len(scenes)]
    keys = jax.random.split(jax.random.key(int(s.seed)), n)
    sample = jax.vmap(lambda k: P.sample_et_turb_params(k, s.wavelength, s.pixel_pitch))
    optics, atmosphere, exposure = sample(keys)

    def pick(tree, i):
        return jax.tree_util.tree_map(lambda x: x[i], tree)

    for i in range(n):  # eager range checks before any heavy compute
        P.check_parameters(pick(optics, i), pick(atmosphere, i), exposure[i])
    settings = P.SynthesisSettings(**dict(s.synthesis))
    synth = jax.jit(jax.vmap(lambda k, im, o, a, t: P.synthesize_frame(k, im, o, a, t, settings)))
    degraded = []
    batch = int(s.batch_size)
    for start in tqdm(range(0, n, batch), desc="synthesizing", unit="batch"):
        sl = slice(start, min(start + batch, n))
        out = synth(keys[sl], jnp.asarray(clean[sl]), pick(optics, sl), pick(atmosphere, sl), exposure[sl])
        degraded.extend(np.clip(np.asarray(out.degraded, np.float64), 0.0, 1.0))
    names = [f"{i:03d}_{scenes[i % len(scenes)]}" for i in range(n)]
    methods = {
        "clean": score_frames(zip(names, clean, strict=True), config.crop_border, "clean", n),
        "input": score_frames(zip(names, degraded, strict=True), config.crop_border, "input", n),
    }
    draws = [
        {
            "scene": names[i],
            "distance_m": float(atmosphere.distance[i]),
            "cn2_m-2/3": float(atmosphere.cn2[i]),
            "focal_length_m": float(optics.focal_length[i]),
            "f_number": float(optics.f_number[i]),
            "exposure_time_s": float(exposure[i]),
        }
        for i in range(n)
    ]
    return methods, {"kind": "synthetic", "draws": draws}


def noref_report(config: ConfigDict, workdir: str | Path) -> dict:
    """Score the configured frames, write ``workdir/noref.json`` (atomically) and return the report.

    ``config.input_dir`` (None: synthesize, see the module doc), optional ``config.restored_dir`` (frames matched
    to the input by relative path), ``config.recursive``, ``config.max_frames``, ``config.crop_border`` (NIQE)
    and ``config.synthetic`` (the synthetic source). The report holds the table text, per-method summaries,
    per-frame scores and timings.
    """
    if config.input_dir is None and config.restored_dir is not None:
        raise ValueError("restored_dir needs input_dir: restored frames are matched to input frames by relative path.")
    methods, source = _synthetic_methods(config) if config.input_dir is None else _folder_methods(config)
    summaries = {method: summarize(rows) for method, rows in methods.items()}
    report = {
        "config": config.to_dict(),
        "source": source,
        "summary": summaries,
        "frames": methods,
        "table": format_table(summaries),
    }
    write_json(Path(workdir) / "noref.json", report)
    return report
