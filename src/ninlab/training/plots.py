"""Figures of a training run: loss/accuracy curves per epoch and the test confusion matrix.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot), so plotting never needs a display and never
touches global backend state. They are written atomically: a full disk leaves the previous figure (or none), never a
torn PNG.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ninlab._runtime.atomic import atomic_open

__all__ = ["epoch_metrics", "plot_confusion_matrix", "plot_curves"]

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
