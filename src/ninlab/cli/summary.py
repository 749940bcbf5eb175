"""``ninlab summary``: the layer-by-layer table of a registered model."""

from __future__ import annotations

import argparse

from ninlab.models.registry import list_models
from ninlab.models.summary import format_summary, summarize

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``ninlab summary``."""
    parser.add_argument("name", help=f"a registered model: {', '.join(list_models())}")
    parser.add_argument("--input-size", nargs=3, type=int, metavar=("C", "H", "W"), help="one image's size")
    parser.add_argument("--num-classes", type=int, help="number of classes (default: the variant's)")


def run(args: argparse.Namespace) -> int:
    """Print the summary table of ``args.name``."""
    input_size = tuple(args.input_size) if args.input_size else None
    print(format_summary(summarize(args.name, input_size, args.num_classes)))
    return 0
