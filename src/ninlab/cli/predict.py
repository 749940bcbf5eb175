"""``ninlab predict-images``: top-k classes of image files or folders, as a table, CSV or JSON."""

from __future__ import annotations

import argparse
import csv
import json
import sys

from ninlab.cli.model_source import add_model_and_images_arguments, model_and_images
from ninlab.data.folder import printable
from ninlab.errors import ConfigError
from ninlab.inference.predict import Prediction, predict_files

__all__ = ["add_arguments", "run"]


def _write(predictions: list[Prediction], fmt: str, out) -> None:
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``ninlab predict-images``."""
    add_model_and_images_arguments(parser, "predict-images", "class names are stored in it; ")
    parser.add_argument("-k", "--top-k", type=int, default=3, help="classes to show per image (default 3)")
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table", help="output format")
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default 64)")


def run(args: argparse.Namespace) -> int:
    """Print the top-k predictions of every image."""
    if args.top_k < 1 or args.batch_size < 1:
        raise ConfigError(f"--top-k and --batch-size must be >= 1, got {args.top_k} and {args.batch_size}")
    model, paths = model_and_images(args)
    _write(predict_files(model, paths, args.top_k, args.batch_size), args.format, sys.stdout)
    return 0
