"""``ninlab summary``: the layer-by-layer table of a registered model or of the network in a checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

from ninlab.errors import ConfigError
from ninlab.models.registry import list_models
from ninlab.models.summary import format_summary, summarize

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``ninlab summary``."""
    parser.add_argument("name", help=f"a registered model ({', '.join(list_models())}) or a .ckpt written by "
                        "ninlab fit (its network as trained: widths, channels, classes)")  # fmt: skip
    parser.add_argument("--input-size", nargs=3, type=int, metavar=("C", "H", "W"), help="one image's size "
                        "(default: the variant's own, or the checkpoint's training size)")  # fmt: skip
    parser.add_argument("--num-classes", type=int, help="number of classes (default: the variant's)")


def run(args: argparse.Namespace) -> int:
    """Print the summary table of ``args.name``."""
    input_size = tuple(args.input_size) if args.input_size else None
    model = args.name
    if args.name.endswith(".ckpt") or Path(args.name).is_file():
        if args.num_classes is not None:
            raise ConfigError(f"--num-classes is fixed by the checkpoint {args.name}; leave it out")
        from ninlab.inference.loading import load_classifier  # Lightning: only when a checkpoint is summarised

        classifier = load_classifier(args.name)
        channels = classifier.input_size[0]
        if input_size is not None and input_size[0] != channels:
            raise ConfigError(f"the checkpoint's network takes {channels}-channel images, found --input-size "
                              f"{' '.join(map(str, input_size))}; keep C at {channels}")  # fmt: skip
        model, input_size = classifier.net, input_size or tuple(classifier.input_size)
    print(format_summary(summarize(model, input_size, args.num_classes)))
    return 0
