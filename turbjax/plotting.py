"""Matplotlib figures of simulator outputs (no computation beyond what is plotted)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def synthesis_grid(rows: Sequence[Mapping[str, np.ndarray]], labels: Sequence[str] | None = None):
    """ET-Turb Fig. 11-style grid: ground truth | tilt (colour = displacement, px) | blur | turbulence.

    Each row holds ``clean``, ``tilt_only``, ``tilt_field`` [H, W, 2], ``blur_only`` and
    ``degraded`` arrays of one frame.
    """
    columns = ("Ground truth", "Tilt (|displacement|, px)", "Blur", "Turbulence")
    fig, axes = plt.subplots(len(rows), 4, figsize=(13, 3.3 * len(rows)), squeeze=False)
    for r, row in enumerate(rows):
        magnitude = np.linalg.norm(np.asarray(row["tilt_field"]), axis=-1)
        panels = (row["clean"], row["tilt_only"], row["blur_only"], row["degraded"])
        for c, panel in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(np.clip(np.asarray(panel), 0.0, 1.0))
            if c == 1:
                overlay = ax.imshow(magnitude, cmap="turbo", alpha=0.45)
                fig.colorbar(overlay, ax=ax, fraction=0.046, pad=0.02)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(columns[c], fontsize=10)
        if labels is not None:
            axes[r, 0].set_ylabel(labels[r], fontsize=7, rotation=0, ha="right", va="center", labelpad=8)
    fig.tight_layout()
    return fig


def mtf_curves(
    freq: np.ndarray,
    exposure_curves: Mapping[str, np.ndarray],
    short_exposure: np.ndarray,
    long_exposure: np.ndarray,
    title: str = "",
):
    """ET-Turb Fig. 3-style plot: ET-MTF for several exposure times between the SE and LE limits."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    ax.plot(freq, short_exposure, "k--", lw=2, label="MTF$_{SE}$ (tau -> 0)")
    ax.plot(freq, long_exposure, "k:", lw=2, label="MTF$_{LE}$ (tau -> inf)")
    colors = plt.cm.viridis(np.linspace(0.0, 0.9, len(exposure_curves)))
    for color, (label, curve) in zip(colors, exposure_curves.items(), strict=True):
        ax.plot(freq, curve, color=color, lw=1.4, label=label)
    ax.set_xlabel("spatial frequency (cycles / pixel)")
    ax.set_ylabel("MTF")
    ax.set_ylim(0.0, 1.02)
    ax.set_xlim(0.0, float(np.max(freq)))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig
