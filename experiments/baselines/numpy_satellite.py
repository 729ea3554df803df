"""Fourier-optics PSFs and their blended blur written plainly with NumPy/SciPy: the satellite benchmark's baseline.

Per field point: the pupil phase minus its least-squares plane over the aperture (piston and
Z-tilt, by ``numpy.linalg.lstsq``), the pupil field zero-padded to M = q K samples, |FFT|^2,
binned q x q into a K x K PSF on the image pixel grid (centred on pixel (K/2, K/2)). The frame is
convolved with each PSF by ``scipy.signal.fftconvolve`` on the part of the frame where the
field point's raised-cosine weight is non-zero, and the weighted results are summed: the same
physics as ``turbjax.physics.satellite`` (PSFs and blend only: no screens, tilt or warp), float64,
one frame at a time.
"""

from __future__ import annotations

import numpy as np
from scipy import signal


def remove_plane(phase: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``phase`` [n, n] (rad) minus its least-squares plane a + b x + c y over ``mask``; 0 off the mask."""
    n = phase.shape[-1]
    y, x = np.nonzero(mask)
    centre = (n - 1) / 2.0
    design = np.stack([np.ones(x.size), x - centre, y - centre], axis=1)
    coefficients, *_ = np.linalg.lstsq(design, phase[y, x], rcond=None)
    out = np.zeros_like(phase)
    out[y, x] = phase[y, x] - design @ coefficients
    return out


def pupil_psf(phase: np.ndarray, mask: np.ndarray, psf_size: int, oversample: int) -> np.ndarray:
    """PSF [K, K] summing to 1 of a pupil phase [n, n] (rad) on ``mask``, K = ``psf_size`` image pixels.

    A pupil sample is lambda / (K ifov): an FFT of M = q K samples (q = ``oversample``) gives PSF
    samples of ifov / q. A linear phase of (q - 1) / 2 samples moves the zero angle to the centre of
    image pixel K / 2 before the q x q bins are summed.
    """
    k, q = psf_size, oversample
    m = k * q
    n = phase.shape[-1]
    u = np.arange(n)
    shift = np.exp(1j * np.pi * (q - 1) * (u[:, None] + u[None, :]) / m)
    field = np.zeros((m, m), np.complex128)
    field[:n, :n] = mask * np.exp(1j * phase) * shift
    intensity = np.fft.fftshift(np.abs(np.fft.fft2(field)) ** 2)
    psf = intensity.reshape(k, q, k, q).sum(axis=(1, 3))
    return psf / psf.sum()


def raised_cosine(size: int, grid: int) -> np.ndarray:
    """Weights [grid, size]: cos^2(pi/2 min(|y - p_j| / spacing, 1)) for field points p_j spanning the axis."""
    if grid == 1:
        return np.ones((1, size))
    spacing = (size - 1) / (grid - 1)
    distance = np.abs(np.arange(size)[None, :] - spacing * np.arange(grid)[:, None]) / spacing
    return np.cos(0.5 * np.pi * np.minimum(distance, 1.0)) ** 2


def blend(image: np.ndarray, psfs: np.ndarray) -> np.ndarray:
    """sum_j w_j (image * psf_j) of an image [H, W, C] with PSFs [gy, gx, K, K] on a grid of field
    points (reflect padding of K / 2 pixels, raised-cosine weights w_j)."""
    h, w, _ = image.shape
    gy, gx, k, _ = psfs.shape
    half = k // 2
    padded = np.pad(image, ((half, half), (half, half), (0, 0)), mode="reflect")
    wy, wx = raised_cosine(h, gy), raised_cosine(w, gx)
    out = np.zeros(image.shape, np.float64)
    for a in range(gy):
        rows = np.flatnonzero(wy[a] > 0)
        r0, r1 = rows[0], rows[-1] + 1
        for b in range(gx):
            cols = np.flatnonzero(wx[b] > 0)
            c0, c1 = cols[0], cols[-1] + 1
            # Output pixel y reads padded rows y + 1 ... y + K (PSF centred on pixel K/2).
            region = padded[r0 + 1 : r1 + k, c0 + 1 : c1 + k]
            blurred = signal.fftconvolve(region, psfs[a, b][:, :, None], mode="valid", axes=(0, 1))
            out[r0:r1, c0:c1] += wy[a, r0:r1, None, None] * wx[b, None, c0:c1, None] * blurred
    return out


def psfs_and_blend(
    phases: np.ndarray, mask: np.ndarray, image: np.ndarray, psf_size: int, oversample: int, grid: int
) -> np.ndarray:
    """One frame's blur: PSFs of ``phases`` [grid^2, n, n] (rad, tilt removed here) blended over ``image`` [H, W, C]."""
    psfs = np.stack([pupil_psf(remove_plane(p, mask), mask, psf_size, oversample) for p in phases])
    return blend(image, psfs.reshape(grid, grid, psf_size, psf_size))
