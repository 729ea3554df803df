"""Figures of the turbulence signature: signature maps (TMTS Fig. 2) and y-t profiles (Fig. 12).

Plotting only: the arrays come from ``turbjax.physics.turbulence_signature`` and the
simulators. Each function returns a matplotlib figure; write it with
``turbjax.workdir.save_figure`` (atomic PNG, closes the figure).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

_DYNAMIC_RANGE = 1e4  # the log colour scale spans at most this ratio below its maximum


def _show_image(ax, image: np.ndarray) -> None:
    image = np.clip(np.asarray(image, np.float32), 0.0, 1.0)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0.0, vmax=1.0)
    ax.set_xticks([])
    ax.set_yticks([])


def log_norm(maps: Sequence[np.ndarray], vmin: float | None = None, vmax: float | None = None) -> LogNorm:
    """A log colour scale shared by ``maps``: 1st to 99.5th percentile of the positive values,
    at most ``_DYNAMIC_RANGE`` wide (flat pixels of a signature sit far below the textured ones)."""
    values = np.concatenate([np.asarray(m, np.float64).ravel() for m in maps])
    values = values[np.isfinite(values) & (values > 0)]
    if values.size == 0:
        values = np.array([1e-6, 1.0])
    hi = float(np.percentile(values, 99.5)) if vmax is None else vmax
    lo = max(float(np.percentile(values, 1.0)), hi / _DYNAMIC_RANGE) if vmin is None else vmin
    return LogNorm(vmin=lo, vmax=max(hi, lo * 1.0001))


def signature_figure(
    frames: np.ndarray,
    signatures: np.ndarray,
    *,
    references: np.ndarray | None = None,
    labels: Sequence[str] | None = None,
    reference_title: str = "Reference (px$^2$)",
    vmin: float | None = None,
    vmax: float | None = None,
) -> Figure:
    """TMTS Fig. 2-style panels: a frame | its turbulence signature (log colour scale, px^2).

    Args:
      frames: one frame per row, [N, H, W, C] (or a single [H, W, C]), values in [0, 1].
      signatures: S maps [N, H, W] (or [H, W]), px^2.
      references: optional maps in the same units shown in a third column on the same colour
        scale, e.g. the true per-pixel tilt variance (strength map x tilt_std_px^2).
      labels: optional row labels.
      vmin, vmax: colour limits (px^2); by default percentiles shared by all rows.
    """
    frames = np.asarray(frames)
    signatures = np.asarray(signatures)
    if signatures.ndim == 2:
        frames, signatures = frames[None], signatures[None]
        references = None if references is None else np.asarray(references)[None]
    rows = signatures.shape[0]
    shown = [signatures] if references is None else [signatures, np.asarray(references)]
    norm = log_norm(shown, vmin, vmax)
    columns = 2 + (references is not None)
    fig, axes = plt.subplots(rows, columns, figsize=(3.4 * columns + 0.6, 3.2 * rows), squeeze=False)
    titles = ("Frame", "Turbulence signature (px$^2$)", reference_title)
    for r in range(rows):
        _show_image(axes[r, 0], frames[r])
        for c, maps in enumerate(shown, start=1):
            ax = axes[r, c]
            mapped = ax.imshow(np.clip(maps[r], norm.vmin, None), cmap="inferno", norm=norm)
            ax.set_xticks([])
            ax.set_yticks([])
            fig.colorbar(mapped, ax=ax, fraction=0.046, pad=0.02)
        for c in range(columns):
            if r == 0:
                axes[r, c].set_title(titles[c], fontsize=10)
        if labels is not None:
            axes[r, 0].set_ylabel(labels[r], fontsize=8)
    fig.tight_layout()
    return fig


def yt_profile(clip: np.ndarray, column: int) -> np.ndarray:
    """The y-t profile [H, T, C] of a clip [T, H, W, C]: pixel column ``column`` stacked over time."""
    clip = np.asarray(clip)
    return np.swapaxes(clip[:, :, column], 0, 1)


def yt_profile_figure(clips: Mapping[str, np.ndarray], column: int | None = None, frame_index: int = 0) -> Figure:
    """TMTS Fig. 12-style y-t profiles: one column of pixels stacked over time, per clip.

    ``clips`` maps names ("clean", "degraded", "restored", ...) to clips [T, H, W, C] of the
    same scene; the first panel shows frame ``frame_index`` of the first clip with the column
    (default: the middle one) marked. Jitter shows as wiggles along t; a stable restoration
    gives straight horizontal streaks.
    """
    if not clips:
        raise ValueError("clips must hold at least one clip [T, H, W, C].")
    first = np.asarray(next(iter(clips.values())))
    t, h, w = first.shape[:3]
    column = w // 2 if column is None else column
    if not 0 <= column < w:
        raise ValueError(f"column must be in [0, {w - 1}]; got {column}.")
    panels = len(clips) + 1
    width_ratio = max(t / h, 0.25)
    ratios = [1.0] + [width_ratio] * len(clips)
    fig, axes = plt.subplots(
        1, panels, figsize=(3.0 + 3.0 * sum(ratios[1:]), 3.4), gridspec_kw={"width_ratios": ratios}
    )
    _show_image(axes[0], first[frame_index])
    axes[0].axvline(column, color="yellow", lw=1.0)
    axes[0].set_title(f"frame {frame_index}, x = {column}", fontsize=10)
    for ax, (name, clip) in zip(axes[1:], clips.items(), strict=True):
        _show_image(ax, yt_profile(clip, column))
        ax.set_aspect("auto")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("t (frames)")
    axes[1].set_ylabel("y (px)")
    fig.tight_layout()
    return fig
