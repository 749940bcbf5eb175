"""Datasets larger than memory: packed into WebDataset tar shards (``ninlab pack``) and streamed while training.

>>> from ninlab.data.shards import PackedDataset, pack
>>> pack("fashion-mnist", "packed/fashion-mnist", shard_size=16 << 20)  # doctest: +SKIP
>>> PackedDataset("packed/fashion-mnist").index.count("train")  # doctest: +SKIP
55000
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import torch

from ninlab.data.shards.index import ShardIndex, check_local_shards, read_index
from ninlab.data.shards.pack import pack
from ninlab.data.shards.stream import EpochLoader, ShardStream

__all__ = ["PackedDataset", "ShardIndex", "pack", "read_index"]


class PackedDataset:
    """A packed dataset as the data module sees it: what the model needs, and streaming loaders per split.

    Args:
        root: The pack's folder, URL prefix or ``pipe:`` command (see :func:`~ninlab.data.shards.index.shard_url`).
    """

    def __init__(self, root: str) -> None:
        self.index = read_index(str(root))
        self._loaders: weakref.WeakSet[EpochLoader] = weakref.WeakSet()  # a training pass closes the others' passes

    @property
    def classes(self) -> list[str]:
        """Class names in label order."""
        return self.index.classes

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of every sample."""
        return (self.index.channels, self.index.height, self.index.width)

    def mean_std(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and std of the training split, computed exactly while packing."""
        return torch.tensor(self.index.mean), torch.tensor(self.index.std)

    def has(self, split: str) -> bool:
        """Whether ``split`` was packed."""
        return bool(self.index.splits.get(split))

    def loader(self, split: str, batch_size: int, *, train: bool, seed: int, rank: int, world_size: int,
               num_workers: int, epoch: Callable[[], int]) -> EpochLoader:  # fmt: skip
        """A DataLoader streaming ``split``: this process's disjoint share, decoded in ``num_workers`` workers."""
        check_local_shards(self.index, split)
        stream = ShardStream(self.index, split, batch_size, train=train, seed=seed, rank=rank,
                             world_size=world_size, workers=num_workers)  # fmt: skip
        return EpochLoader(stream, epoch, num_workers, self._loaders)
