"""``ninlab explain``: where a trained NiN finds each class in image files (one figure per image, maps as .npy)."""

from __future__ import annotations

import argparse

from ninlab.cli.model_source import add_model_and_images_arguments, model_and_images
from ninlab.errors import ConfigError
from ninlab.inference.class_maps import explain_files

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``ninlab explain``."""
    add_model_and_images_arguments(parser, "explain")
    parser.add_argument("-o", "--output", default="class_maps", help="folder for the figures, one PNG per image "
                        "(default class_maps)")  # fmt: skip
    parser.add_argument("-k", "--top-k", type=int, default=3, help="classes whose maps each figure shows (default 3)")
    parser.add_argument("--grid", action="store_true", help="also write grid.png: images x classes, like the NiN "
                        "paper's Figure 4")  # fmt: skip
    parser.add_argument("--save-maps", action="store_true", help="also write each image's maps (num_classes x h x w, "
                        "before upsampling: their means are the logits) as .npy")  # fmt: skip
    parser.add_argument("--overwrite", action="store_true", help="replace output files that exist")
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default 64)")


def run(args: argparse.Namespace) -> int:
    """Write the class-map figures and say where they went."""
    if args.top_k < 1 or args.batch_size < 1:
        raise ConfigError(f"--top-k and --batch-size must be >= 1, got {args.top_k} and {args.batch_size}")
    model, paths = model_and_images(args)
    written = explain_files(model, paths, args.output, top_k=args.top_k, grid=args.grid, save_maps=args.save_maps,
                            overwrite=args.overwrite, batch_size=args.batch_size)  # fmt: skip
    print(f"wrote {len(written)} file(s) to {args.output}")
    return 0
