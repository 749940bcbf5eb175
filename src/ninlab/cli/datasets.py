"""``ninlab datasets``: every dataset ninlab knows, where it was found, its split sizes and checksum status."""

from __future__ import annotations

import argparse

from ninlab.data import SPLITS, cache_dir, dataset_info, list_datasets, load_dataset
from ninlab.errors import DataError, DataNotFoundError

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``datasets`` options to ``parser``."""
    parser.add_argument(
        "--root",
        default=None,
        help="directory to search first (as --data.root); also the image folder for the 'folder' dataset",
    )


def run(args: argparse.Namespace) -> int:
    """Print one row per dataset; return 0 (a missing dataset is reported in its row, not as a failure)."""
    rows = [("dataset", "train", "test", "checksum", "location")]
    for name in list_datasets():
        rows.append(_row(name, args.root))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1])
    print(
        f"\ncache dir: {cache_dir()} (set $NINLAB_DATA to move it); missing datasets: pass --root DIR, put the "
        "files in the cache dir, or train with --data.download true"
    )
    return 0


def _row(name: str, root: str | None) -> tuple[str, str, str, str, str]:
    if dataset_info(name).needs_root and root is None:
        return (name, "-", "-", "-", "pass --root DIR holding one folder per class")
    counts, states, location = {}, [], ""
    for split in SPLITS:
        try:
            imageset = load_dataset(name, split, root)
        except DataNotFoundError:
            counts[split] = "-"
            location = location or "not found"
            continue
        except DataError as error:
            counts[split] = "-"
            location = f"error: {error}"
            continue
        counts[split] = f"{len(imageset):,}"
        states.append(imageset.checksum)
        location = str(imageset.source or "bundled with scikit-learn")
    checksum = (
        "mismatch"
        if "mismatch" in states
        else ("verified" if states and set(states) == {"verified"} else ("not checked" if states else "-"))
    )
    return (name, counts["train"], counts["test"], checksum, location)
