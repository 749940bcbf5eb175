"""Figures of a training run: loss/accuracy curves per epoch, the test confusion matrix and class maps.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot), so plotting never needs a display and never
touches global backend state. They are written atomically: a full disk leaves the previous figure (or none), never a
torn PNG.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ninlab._runtime.atomic import atomic_open

__all__ = [
    "MAP_CMAP",
    "display_images",
    "draw_class_map",
    "epoch_metrics",
    "map_norm",
    "plot_class_maps",
    "plot_confusion_matrix",
    "plot_curves",
]  # fmt: skip

MAP_CMAP = "RdBu_r"
"""Colour map of class maps: red where a position raises the class's logit, blue where it lowers it, white 0."""

CURVE_KEYS = ("train/loss", "val/loss", "train/acc", "val/acc")


def epoch_metrics(metrics_csv: str | Path, keys: Sequence[str] = CURVE_KEYS) -> dict[int, dict[str, float]]:
    """Read a Lightning CSVLogger ``metrics.csv`` into ``{epoch: {key: value}}`` for ``keys`` (those of the curves)."""
    epochs: dict[int, dict[str, float]] = {}
    with open(metrics_csv, newline="") as file:
        for row in csv.DictReader(file):
            if not row.get("epoch"):
                continue
            values = epochs.setdefault(int(float(row["epoch"])), {})
            values.update({key: float(row[key]) for key in keys if row.get(key)})
    return epochs


def plot_curves(epochs: dict[int, dict[str, float]], path: str | Path, title: str = "") -> None:
    """Save loss and accuracy per epoch, train vs val, side by side as a PNG at ``path``."""
    fig = Figure(figsize=(10, 4), layout="constrained")
    for ax, metric in zip(fig.subplots(1, 2), ("loss", "acc"), strict=True):
        for split, style in (("train", "-o"), ("val", "-s")):
            points = [(e + 1, v[f"{split}/{metric}"]) for e, v in sorted(epochs.items()) if f"{split}/{metric}" in v]
            if points:
                ax.plot(*zip(*points, strict=True), style, label=split, markersize=4)
        # Train loss includes label smoothing when the recipe uses it, so it can sit above the val loss.
        ax.set(xlabel="epoch", ylabel="accuracy" if metric == "acc" else "loss", title=metric)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    _save(fig, path)


def plot_confusion_matrix(matrix: torch.Tensor, class_names: list[str], path: str | Path, title: str = "") -> None:
    """Save a confusion matrix (rows: true class, columns: predicted) with class names and row-normalised colour."""
    counts = matrix.cpu().double()
    rates = counts / counts.sum(1, keepdim=True).clamp_min(1)
    n = len(class_names)
    size = max(5.0, 0.55 * n + 2)
    fig = Figure(figsize=(size, size), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, label="fraction of the true class")
    ax.set_xticks(range(n), class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set(xlabel="predicted", ylabel="true", title=title or "confusion matrix")
    if n <= 20:  # counts stay legible up to about 20 classes
        for i in range(n):
            for j in range(n):
                colour = "white" if rates[i, j] > 0.5 else "black"
                ax.text(j, i, int(counts[i, j]), ha="center", va="center", fontsize=7, color=colour)
    _save(fig, path)


def _save(fig: Figure, path: str | Path) -> None:
    with atomic_open(path) as file:
        fig.savefig(file, format="png", dpi=100)


def map_norm(maps: torch.Tensor) -> Normalize:
    """A colour scale centred on 0 and symmetric, wide enough for every value of ``maps`` (shared by the panels)."""
    limit = max(float(maps.abs().max()), 1e-6)
    return Normalize(-limit, limit)


def draw_class_map(ax: Axes, image: np.ndarray, class_map: torch.Tensor | None, norm: Normalize, title: str = ""):
    """Draw ``image`` (H x W grey or H x W x 3, in [0, 1]) with ``class_map`` (H x W) laid over it; return the map's
    image artist (for a colour bar), or None when only the image is drawn."""
    grey = image.ndim == 2
    ax.imshow(image, cmap="gray" if grey else None, vmin=0, vmax=1, alpha=0.6 if class_map is not None else 1.0)
    artist = None
    if class_map is not None:
        artist = ax.imshow(class_map.cpu().numpy(), cmap=MAP_CMAP, norm=norm, alpha=0.55)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=8)
    return artist


def display_images(x: torch.Tensor, mean: list[float], std: list[float]) -> list[np.ndarray]:
    """Normalised network inputs (B, C, H, W) back to displayable images in [0, 1] (H x W, or H x W x 3)."""
    shape = (1, -1, 1, 1)
    pixels = (x.float().cpu() * torch.tensor(std).view(shape) + torch.tensor(mean).view(shape)).clamp(0, 1)
    return [p[0].numpy() if p.shape[0] == 1 else p.permute(1, 2, 0).numpy() for p in pixels]


def plot_class_maps(images: list[np.ndarray], maps: torch.Tensor, titles: list[str], columns: int, path, title=""):
    """Save a grid of images, each with its predicted class's map (``maps``: N x H x W) over it, as a PNG."""
    rows = -(-len(images) // columns)
    fig = Figure(figsize=(1.5 * columns + 1, 1.6 * rows + 0.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, columns, squeeze=False)).ravel()
    norm = map_norm(maps)
    artist = None
    for ax, image, class_map, caption in zip(axes, images, maps, titles, strict=False):
        artist = draw_class_map(ax, image, class_map, norm, caption)
    for ax in axes[len(images) :]:
        ax.axis("off")
    if artist is not None:
        fig.colorbar(artist, ax=axes.tolist(), fraction=0.02, label="class map (mean = logit)")
    if title:
        fig.suptitle(title)
    _save(fig, path)
