"""``ninlab predict-images CKPT PATH...``: top-k classes of image files or folders, from a checkpoint alone.

Images are decoded, converted to the model's channel count, resized to its training input size and normalised with
the statistics stored in the checkpoint, as the datamodule prepared training batches. Output is a table
(default), CSV (``file,rank,class,probability``) or JSON (a list of ``{"file", "top": [{"class", "probability"}]}``).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import torch

from ninlab.checkpoint import load_classifier
from ninlab.data import load_images
from ninlab.data.transforms import normalize
from ninlab.errors import ConfigError
from ninlab.system import NiNClassifier

__all__ = ["Prediction", "add_arguments", "predict_files", "run"]

Prediction = tuple[Path, list[tuple[str, float]]]
"""A file and its top-k (class name, probability) pairs, most likely first."""


def predict_files(
    model: NiNClassifier, paths: list[str | Path], top_k: int = 3, batch_size: int = 64
) -> list[Prediction]:
    """Top-``top_k`` classes with probabilities for every image in ``paths`` (files and folders, recursively)."""
    channels, height, width = model.input_size
    images, files = load_images(paths, (height, width), channels)
    mean = torch.tensor(model.hparams.mean or [0.0] * channels)
    std = torch.tensor(model.hparams.std or [1.0] * channels)
    top_k = min(top_k, model.num_classes)
    names = model.class_names
    predictions: list[Prediction] = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size].float().div_(255)  # load_images already resized
            probs = model.predict_step(normalize(batch, mean, std), start)
            values, indices = probs.topk(top_k, dim=1)
            for i, (vals, idxs) in enumerate(zip(values.tolist(), indices.tolist(), strict=True)):
                predictions.append((files[start + i], [(names[j], v) for v, j in zip(vals, idxs, strict=True)]))
    return predictions


def _write(predictions: list[Prediction], fmt: str, out) -> None:
    if fmt == "json":
        rows = [{"file": str(f), "top": [{"class": c, "probability": round(p, 6)} for c, p in top]}
                for f, top in predictions]  # fmt: skip
        json.dump(rows, out, indent=2)
        out.write("\n")
    elif fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["file", "rank", "class", "probability"])
        for file, top in predictions:
            writer.writerows([str(file), rank, c, f"{p:.6f}"] for rank, (c, p) in enumerate(top, 1))
    else:
        width = max(len(str(f)) for f, _ in predictions)
        class_width = max(len(c) for _, top in predictions for c, _ in top)
        for file, top in predictions:
            cells = "  ".join(f"{c:<{class_width}} {p:6.1%}" for c, p in top)
            out.write(f"{file!s:<{width}}  {cells}\n")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``ninlab predict-images``."""
    parser.add_argument("checkpoint", help="a .ckpt written by ninlab fit (class names are stored in it)")
    parser.add_argument("paths", nargs="+", help="image files and/or folders of images (searched recursively)")
    parser.add_argument("-k", "--top-k", type=int, default=3, help="classes to show per image (default 3)")
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table", help="output format")
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default 64)")


def run(args: argparse.Namespace) -> int:
    """Print the top-k predictions of every image."""
    if args.top_k < 1 or args.batch_size < 1:
        raise ConfigError(f"--top-k and --batch-size must be >= 1, got {args.top_k} and {args.batch_size}")
    model = load_classifier(args.checkpoint)
    _write(predict_files(model, args.paths, args.top_k, args.batch_size), args.format, sys.stdout)
    return 0
