"""``ninlab predict-images CKPT PATH...``: top-k classes of image files or folders, from a checkpoint alone.

Images are decoded at their own size, converted to the model's channel count, then resized to its training input
size and normalised with the statistics stored in the checkpoint by
:func:`ninlab.data.transforms.prepare_images`, the function that prepared the training and validation batches: a
training image predicted from its file gets the logits validation gave it. Output is a table (default), CSV
(``file,rank,class,probability``) or JSON (a list of ``{"file", "top": [{"class", "probability"}]}``).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import torch

from ninlab.data.folder import printable
from ninlab.data.images import load_images_unresized
from ninlab.data.transforms import prepare_images
from ninlab.training.module import NiNClassifier

__all__ = [
    "Prediction",
    "count_correct",
    "network_inputs",
    "predict_files",
    "read_images",
    "top_classes",
    "write_predictions",
]

Prediction = tuple[Path, list[tuple[str, float]]]
"""A file and its top-k (class name, probability) pairs, most likely first."""


def network_inputs(model: NiNClassifier, images: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """uint8 images (one batch, or ``1 x C x H x W`` tensors of any sizes) as ``model``'s training batches were made.

    Resized to the model's input size, normalised with its stored mean and std, in its memory layout.
    """
    channels, height, width = model.input_size
    mean = torch.tensor(model.hparams.mean or [0.0] * channels)
    std = torch.tensor(model.hparams.std or [1.0] * channels)
    channels_last = bool(model.hparams.get("channels_last"))
    if isinstance(images, torch.Tensor):
        return prepare_images(images, mean, std, (height, width), channels_last)
    # One image at a time (each has its own size), then one batch in the model's layout: the values are those
    # a batch would get, since the resize and the normalisation treat every image on its own.
    batch = torch.cat([prepare_images(image, mean, std, (height, width)) for image in images])
    return batch.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def read_images(model: NiNClassifier, paths: Sequence[str | Path]) -> tuple[list[torch.Tensor], list[Path]]:
    """Decode the image files and folders ``paths`` into ``model``'s channel count, each at its own size."""
    return load_images_unresized(paths, model.input_size[0])


def predict_files(
    model: NiNClassifier, paths: Sequence[str | Path], top_k: int = 3, batch_size: int = 64
) -> list[Prediction]:
    """Top-``top_k`` classes with probabilities for every image in ``paths`` (files and folders, recursively)."""
    images, files = read_images(model, paths)
    predictions: list[Prediction] = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            probs = model.predict_step(network_inputs(model, images[start : start + batch_size]), start)
            tops = top_classes(probs, model.class_names, top_k)
            predictions += zip(files[start : start + len(probs)], tops, strict=True)
    return predictions


def top_classes(probs: torch.Tensor, names: Sequence[str], top_k: int) -> list[list[tuple[str, float]]]:
    """Per row of ``probs`` (B x num_classes), its ``top_k`` (class name, probability) pairs, most likely first."""
    values, indices = probs.topk(min(top_k, probs.shape[1]), dim=1)
    return [[(names[j], v) for v, j in zip(vals, idxs, strict=True)]
            for vals, idxs in zip(values.tolist(), indices.tolist(), strict=True)]  # fmt: skip


def write_predictions(predictions: Sequence[Prediction], fmt: str, out: TextIO) -> None:
    """Write ``predictions`` to ``out`` as ``table``, ``csv`` (``file,rank,class,probability``) or ``json``."""
    # File names are bytes on POSIX: printable() keeps one that is not UTF-8 from crashing a UTF-8 stdout.
    if fmt == "json":
        rows = [{"file": printable(f), "top": [{"class": c, "probability": round(p, 6)} for c, p in top]}
                for f, top in predictions]  # fmt: skip
        json.dump(rows, out, indent=2)
        out.write("\n")
    elif fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["file", "rank", "class", "probability"])
        for file, top in predictions:
            writer.writerows([printable(file), rank, c, f"{p:.6f}"] for rank, (c, p) in enumerate(top, 1))
    else:
        width = max(len(printable(f)) for f, _ in predictions)
        class_width = max(len(c) for _, top in predictions for c, _ in top)
        for file, top in predictions:
            cells = "  ".join(f"{c:<{class_width}} {p:6.1%}" for c, p in top)
            out.write(f"{printable(file):<{width}}  {cells}\n")


def count_correct(model: NiNClassifier, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 128) -> int:
    """How many of the uint8 ``images`` ``model`` classifies as ``labels``, in batches as ``ninlab test`` runs them."""
    correct = 0
    model.eval()
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            logits = model(network_inputs(model, images[start : start + batch_size]))
            correct += int((logits.argmax(1) == labels[start : start + batch_size]).sum())
    return correct
