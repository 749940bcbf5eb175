"""``ninlab bench``: the training-throughput benchmark's command line (the measuring is in :mod:`ninlab.bench`)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from ninlab._runtime.atomic import atomic_open
from ninlab.bench.suite import bench, format_report
from ninlab.bench.training import PRECISIONS, BenchConfig
from ninlab.errors import ConfigError

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``ninlab bench``."""
    defaults = BenchConfig()
    parser.add_argument(
        "--recipe",
        default=defaults.recipe,
        help="recipe whose model, optimiser and data to time (default: %(default)s)",
    )
    parser.add_argument("--data.root", dest="root", help="where the dataset files are (default: ninlab's search)")
    parser.add_argument(
        "--limit", type=int, default=defaults.limit, help="training images per epoch (default: %(default)s)"
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=defaults.epochs,
        help="epochs; all but the last are warm-up (default: %(default)s)",
    )
    parser.add_argument(
        "--windows", type=int, default=defaults.windows, help="timed windows in the last epoch (default: %(default)s)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="rounds of the three pipelines, each round in fresh processes; medians over all rounds reported",
    )
    parser.add_argument("--precision", choices=PRECISIONS, default=defaults.precision,
                        help="B's and C's precision (default: the recipe's); A trains in fp32, "
                        "as the Lightning NiN document does")  # fmt: skip
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own choice)")
    parser.add_argument("--show-output", action="store_true",
                        help="show the pipelines' own output (Lightning's messages and progress bars)")  # fmt: skip
    parser.add_argument("--inference", action="store_true", help="also time inference in PyTorch and onnxruntime")
    parser.add_argument("--json", type=Path, help="also write the report to this JSON file")


def run(args: argparse.Namespace) -> int:
    """Run the benchmark and print (and optionally save) the report."""
    if min(args.limit, args.epochs, args.windows, args.rounds) < 1:
        raise ConfigError(f"--limit, --epochs, --windows and --rounds must be >= 1, got {args.limit}, {args.epochs}, "
                          f"{args.windows}, {args.rounds}")  # fmt: skip
    if args.threads is not None:
        # Inherited by the pipeline processes, which start fresh interpreters.
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
        torch.set_num_threads(args.threads)
    config = BenchConfig(recipe=args.recipe, root=args.root, limit=args.limit, epochs=args.epochs, windows=args.windows,
                         precision=args.precision)  # fmt: skip
    report = bench(config, rounds=args.rounds, inference=args.inference, quiet=not args.show_output)
    print(format_report(report))
    if args.json is not None:
        with atomic_open(args.json) as out:  # never a half-written report
            out.write(json.dumps(report, indent=2).encode())
    return 0
