"""``ninlab explain``: figures of where a trained NiN finds each class in image files, and the maps themselves.

Images are read and prepared exactly as ``predict-images`` reads them (:func:`ninlab.inference.predict.read_images`
and :func:`~ninlab.inference.predict.network_inputs`). For every image one PNG shows the image as the network saw
it, the predicted class's map laid over it and the top-k classes' maps with their probabilities, on one colour
scale centred on 0. ``grid`` adds one figure of images x classes in the style of the NiN paper's Figure 4;
``save_maps`` saves each image's maps, before upsampling (``num_classes x h x w``, their means are the logits), as
``.npy``. Every file is written atomically, existing files are refused unless ``overwrite``, and on any error the
files this call wrote are removed again.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from ninlab._runtime.atomic import atomic_open
from ninlab.data.decode import IMAGE_SUFFIXES
from ninlab.errors import ConfigError
from ninlab.inference.predict import network_inputs, read_images
from ninlab.models.class_maps import class_maps, network_of, upsample_maps
from ninlab.training.module import NiNClassifier
from ninlab.training.plots import display_images, draw_class_map, map_norm

__all__ = ["MAX_GRID_CLASSES", "MAX_GRID_IMAGES", "explain_files"]

MAX_GRID_IMAGES = 64
"""Rows a ``grid`` figure takes; more would make an unreadable figure."""
MAX_GRID_CLASSES = 20
"""Columns of a ``grid`` figure; with more classes it shows the ones of highest mean probability over the images."""


def _targets(files: list[Path], out: Path, save_maps: bool) -> list[tuple[Path, Path | None]]:
    """One (figure, maps) path pair per image, named after the image (``-2``, ``-3``... when two share a name)."""
    seen: dict[str, int] = {}
    pairs = []
    for file in files:
        count = seen[file.stem] = seen.get(file.stem, 0) + 1
        stem = file.stem if count == 1 else f"{file.stem}-{count}"
        pairs.append((out / f"{stem}.png", out / f"{stem}.npy" if save_maps else None))
    return pairs


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def _image_figure(picture, maps, probs, names: list[str], top_k: int, title: str) -> bytes:
    values, indices = probs.topk(top_k)
    fig = Figure(figsize=(2.0 * (top_k + 2) + 0.8, 2.6), layout="constrained")
    axes = fig.subplots(1, top_k + 2)
    norm = map_norm(maps[indices])
    draw_class_map(axes[0], picture, None, norm, "image")
    artist = draw_class_map(axes[1], picture, maps[indices[0]], norm, f"predicted: {names[indices[0]]}")
    for ax, value, index in zip(axes[2:], values.tolist(), indices.tolist(), strict=True):
        ax.imshow(maps[index].numpy(), cmap=artist.get_cmap(), norm=norm)
        ax.set(xticks=[], yticks=[])
        ax.set_title(f"{names[index]} {value:.1%}", fontsize=8)
    fig.colorbar(artist, ax=axes.tolist(), fraction=0.02, label="class map (mean = logit)")
    fig.suptitle(title, fontsize=9)
    return _png(fig)


def _grid_figure(pictures, maps: torch.Tensor, probs: torch.Tensor, names: list[str], files: list[Path]) -> bytes:
    classes = probs.mean(0).topk(min(MAX_GRID_CLASSES, probs.shape[1])).indices.sort().values.tolist()
    rows, cols = len(pictures), len(classes) + 1
    fig = Figure(figsize=(1.1 * cols + 0.5, 1.2 * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for row, (picture, image_maps, image_probs, file) in enumerate(zip(pictures, maps, probs, files, strict=True)):
        predicted = int(image_probs.argmax())
        draw_class_map(axes[row, 0], picture, None, map_norm(image_maps), file.name[:18])
        norm = map_norm(image_maps[classes])  # one scale per image, across its classes, as in the paper's figure
        for col, index in enumerate(classes, 1):
            ax = axes[row, col]
            ax.imshow(image_maps[index].numpy(), cmap="RdBu_r", norm=norm)
            ax.set(xticks=[], yticks=[])
            if index == predicted:  # a frame marks the predicted class
                for spine in ax.spines.values():
                    spine.set(color="black", linewidth=2.5)
            if row == 0:
                ax.set_title(names[index][:12], fontsize=8)
    fig.suptitle("class maps: one row per image, one column per class (framed: predicted)", fontsize=9)
    return _png(fig)


def explain_files(
    model: NiNClassifier,
    paths: Sequence[str | Path],
    output: str | Path,
    *,
    top_k: int = 3,
    grid: bool = False,
    save_maps: bool = False,
    overwrite: bool = False,
    batch_size: int = 64,
) -> list[Path]:
    """Write the class-map figures (and maps) of every image in ``paths`` into the folder ``output``.

    Returns:
        The files written, in order.

    Raises:
        ConfigError: The model has no class maps, an output file exists and ``overwrite`` is off, or ``grid`` is
            asked for more than :data:`MAX_GRID_IMAGES` images.
        DataError: An image cannot be read (nothing is written).
    """
    network_of(model)  # refuse a network without class maps before reading a single image
    out = Path(output)
    if out.suffix.lower() in (*IMAGE_SUFFIXES, ".pdf", ".svg") and not out.is_dir():  # else a folder named maps.png
        raise ConfigError(f"the output of explain is a folder (one figure per image, named after it), found the file "
                          f"name {str(output)!r}; pass a folder, e.g. -o {out.with_suffix('')}")  # fmt: skip
    images, files = read_images(model, paths)
    if grid and len(files) > MAX_GRID_IMAGES:
        raise ConfigError(f"--grid takes at most {MAX_GRID_IMAGES} images, found {len(files)}; pass fewer images "
                          "or drop --grid")  # fmt: skip
    pairs = _targets(files, out, save_maps)
    planned = [path for pair in pairs for path in pair if path is not None] + ([out / "grid.png"] if grid else [])
    existing = [path for path in planned if path.exists()]
    if existing and not overwrite:
        raise ConfigError(f"{existing[0]} exists ({len(existing)} of the {len(planned)} output files do); pass "
                          "--overwrite to replace them or choose another -o folder")  # fmt: skip
    top_k = min(top_k, model.num_classes)
    names, hp = model.class_names, model.hparams
    channels = model.input_size[0]
    mean, std = hp.get("mean") or [0.0] * channels, hp.get("std") or [1.0] * channels
    created_dir = not out.exists()
    written: list[Path] = []
    grid_rows: list[tuple] = []
    try:
        out.mkdir(parents=True, exist_ok=True)
        for start in range(0, len(images), batch_size):
            x = network_inputs(model, images[start : start + batch_size])
            raw = class_maps(model, x, upsample=False)
            maps = upsample_maps(raw, tuple(x.shape[-2:]))
            with torch.no_grad():
                probs = model(x).float().softmax(1)
            pictures = display_images(x, mean, std)
            for i, picture in enumerate(pictures):
                file, (figure, maps_path) = files[start + i], pairs[start + i]
                title = f"{file.name}: {names[int(probs[i].argmax())]} ({float(probs[i].max()):.1%})"
                _write(figure, _image_figure(picture, maps[i], probs[i], names, top_k, title), written)
                if maps_path is not None:
                    buffer = io.BytesIO()
                    np.save(buffer, raw[i].numpy())
                    _write(maps_path, buffer.getvalue(), written)
                if grid:
                    grid_rows.append((picture, maps[i], probs[i]))
        if grid:
            pictures, maps, probs = zip(*grid_rows, strict=True)
            _write(out / "grid.png", _grid_figure(pictures, torch.stack(maps), torch.stack(probs), names, files),
                   written)  # fmt: skip
    except BaseException:
        # Whole files only, and none of a failed call: a folder with half the figures would pass for a finished one.
        for path in written:
            path.unlink(missing_ok=True)
        if created_dir and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise
    return written


def _write(path: Path, data: bytes, written: list[Path]) -> None:
    with atomic_open(path) as file:
        file.write(data)
    written.append(path)
