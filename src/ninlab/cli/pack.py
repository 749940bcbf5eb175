"""``ninlab pack SOURCE OUT``: an image folder or a built-in dataset as WebDataset shards, for data beyond RAM."""

from __future__ import annotations

import argparse
import re

from ninlab.errors import ConfigError

__all__ = ["add_arguments", "parse_size", "run"]

_UNITS = {"": 1, "B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30}


def parse_size(text: str) -> int:
    """Bytes of a size such as ``256MB``, ``1GB`` or ``65536`` (binary units: 1MB = 2**20 bytes)."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?B?)\s*", text.upper())
    if found is None:
        raise ConfigError(f"--shard-size: expected a size such as 256MB or 1GB, found {text!r}")
    return int(float(found.group(1)) * _UNITS[found.group(2) if found.group(2) != "K" else "KB"])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``pack`` options to ``parser``."""
    parser.add_argument("source", help="an image folder (<class>/ folders, optionally under train/ val/ test/) or a "
                        "built-in dataset's name (fashion-mnist, mnist, cifar10, cifar100, digits)")  # fmt: skip
    parser.add_argument("out", help="folder to write the shards and index.json into (new or empty, or an "
                        "unfinished pack of the same source to resume)")  # fmt: skip
    parser.add_argument("--image-size", type=int, default=None, help="side every image is resized to (default: the "
                        "most common size in a folder, the dataset's own size otherwise)")  # fmt: skip
    parser.add_argument("--channels", type=int, choices=(1, 3), default=None, help="1 (grey) or 3 (RGB); default: "
                        "the most common in a folder, the dataset's own otherwise")  # fmt: skip
    parser.add_argument("--shard-size", default="256MB", help="target size of each shard (default: 256MB); pick "
                        "it so every process x DataLoader worker gets several shards")  # fmt: skip
    parser.add_argument("--val-size", type=int, default=None, help="training images held out as the val split when "
                        "the source has no val/ (default: min(5000, 10%%)); 0 = none")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="seed of the val split and the training order")
    parser.add_argument("--workers", type=int, default=None, help="decoding processes (default: every core)")
    parser.add_argument("--encoding", choices=("npy", "png"), default="npy", help="how images are stored: npy = raw "
                        "pixels, nothing to decode while training (default); png = lossless, smaller on disk (photos: "
                        "about half), decoded per sample")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Pack, then print what was written; return 0."""
    from ninlab.data.shards import pack  # imported here: `ninlab --help` stays fast

    if args.image_size is not None and args.image_size < 1:
        raise ConfigError(f"--image-size must be >= 1, found {args.image_size}")
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, found {args.workers}")
    index = pack(args.source, args.out, image_size=args.image_size, channels=args.channels,
                 shard_size=parse_size(args.shard_size), val_size=args.val_size, seed=args.seed,
                 workers=args.workers, encoding=args.encoding)  # fmt: skip
    splits = ", ".join(f"{name} {index.count(name):,} in {len(shards)} shards" for name, shards in index.splits.items())
    print(f"{args.out}: {splits}; {index.height}x{index.width}x{index.channels}, {len(index.classes)} classes. "
          f"Train with: ninlab fit --data.dataset shards --data.root {args.out}")  # fmt: skip
    return 0
