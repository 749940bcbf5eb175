"""``ninlab predict-images``: top-k classes of image files or folders, as a table, CSV or JSON."""

from __future__ import annotations

import argparse
import sys

from ninlab.cli.model_source import add_model_and_images_arguments, model_and_images
from ninlab.errors import ConfigError
from ninlab.inference.predict import predict_files, write_predictions

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``ninlab predict-images``."""
    add_model_and_images_arguments(parser, "predict-images", "or a .onnx written by ninlab export; class names are "
                                   "stored in either; ")  # fmt: skip
    parser.add_argument("-k", "--top-k", type=int, default=3, help="classes to show per image (default 3)")
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table", help="output format")
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default 64)")


def run(args: argparse.Namespace) -> int:
    """Print the top-k predictions of every image."""
    if args.top_k < 1 or args.batch_size < 1:
        raise ConfigError(f"--top-k and --batch-size must be >= 1, got {args.top_k} and {args.batch_size}")
    model, paths = model_and_images(args, onnx=True)
    write_predictions(predict_files(model, paths, args.top_k, args.batch_size), args.format, sys.stdout)
    return 0
