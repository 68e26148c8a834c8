"""Tables and plots (PNG). matplotlib is imported here only, and lazily by the CLI."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402

from tools.sweep import Landscape  # noqa: E402


def draw_landscape(ax, land: Landscape, colorbar: bool = True):
    """Heatmap of f_final - f* on the (log10 alpha, beta) grid; diverged cells grey."""
    gap = land.final_value - land.f_star
    gap = np.where(np.isnan(gap), np.nan, np.maximum(gap, 1e-16))
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#bdbdbd")
    finite = gap[np.isfinite(gap)]
    vmin = max(float(finite.min()), 1e-16) if finite.size else 1e-16
    vmax = max(float(finite.max()), vmin * 10) if finite.size else 1.0
    extent = (land.log10_alphas[0], land.log10_alphas[-1], land.betas[0], land.betas[-1])
    im = ax.imshow(np.ma.masked_invalid(gap), origin="lower", aspect="auto", extent=extent,
                   cmap=cmap, norm=LogNorm(vmin=vmin, vmax=vmax), interpolation="nearest")
    ax.set_xlabel(r"$\log_{10}\,\alpha$ (learning rate)")
    ax.set_ylabel(r"$\beta$ (momentum)")
    if colorbar:
        cb = ax.figure.colorbar(im, ax=ax)
        cb.set_label(r"$f(x_{final}) - f^*$ (grey: diverged)")
    return im


def plot_landscape(land: Landscape, path: Path | str, title: str | None = None) -> Path:
    fig, ax = plt.subplots(figsize=(7.5, 5.5), dpi=120)
    draw_landscape(ax, land)
    x0 = ", ".join(f"{v:g}" for v in land.x0)
    ax.set_title(title or f"{land.objective}: final value after momentum GD (x0 = ({x0}), T = {land.max_iter})")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
