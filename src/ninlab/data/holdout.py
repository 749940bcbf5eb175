"""The validation images held out of a training split: chosen by a seed, so every process and every run agree."""

from __future__ import annotations

import torch

from ninlab.data.imageset import ImageSet
from ninlab.data.sampler import IndexBatches
from ninlab.errors import ConfigError

__all__ = ["hold_out"]


def hold_out(
    full: ImageSet, val_size: int, seed: int, limit_train: int | None = None
) -> tuple[IndexBatches, IndexBatches | None]:
    """Split ``full`` into training batches and ``val_size`` validation images (``None`` when ``val_size`` is 0).

    Args:
        full: The training split.
        val_size: Images to hold out, chosen with ``seed``.
        seed: Seed of the choice.
        limit_train: Keep only this many of the remaining training images; ``None`` = all.

    Raises:
        ConfigError: ``val_size`` leaves no training image.
    """
    if val_size >= len(full):  # e.g. the default recipe's 5,000 (for Fashion-MNIST) on a smaller dataset
        tenth = len(full) // 10
        hint = f"e.g. {tenth}, a tenth of them" if tenth else "0 for no validation split"
        raise ConfigError(f"val_size must be below the {len(full)} training images of {full.source or full.name}, "
                          f"found {val_size}; lower --data.val_size ({hint})")  # fmt: skip
    order = torch.randperm(len(full), generator=torch.Generator().manual_seed(seed))
    val, train = order[:val_size], order[val_size:]
    if limit_train is not None:
        train = train[:limit_train]
    # Sorted so each subset is a plain gather in file order; shuffling is the sampler's job.
    train, val = train.sort().values, val.sort().values
    held = IndexBatches(full.images[val], full.labels[val]) if val_size else None
    return IndexBatches(full.images[train], full.labels[train]), held
