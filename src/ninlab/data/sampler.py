"""Batches of indices for in-memory datasets, sharded across processes the way DistributedSampler shards samples."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.utils.data import Dataset, DistributedSampler

__all__ = ["IndexBatches", "ShardedBatchSampler"]


class IndexBatches(Dataset):
    """A dataset of in-memory tensors whose items are whole batches: ``dataset[list_of_indices]``.

    One slicing op per batch replaces per-sample ``__getitem__`` calls and a collate function.
    """

    def __init__(self, *tensors: torch.Tensor) -> None:
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors[0])

    def __getitem__(self, indices: list[int]) -> tuple[torch.Tensor, ...]:
        # The index goes to the data's device (a few hundred bytes), never the images to the index's. On a GPU it is
        # copied from pinned memory without blocking: a plain copy would wait for every step queued before it.
        device = self.tensors[0].device
        index = torch.as_tensor(indices)
        if device.type == "cuda":
            index = index.pin_memory().to(device, non_blocking=True)
        return tuple(tensor[index] for tensor in self.tensors)

    def to(self, device: torch.device | str) -> IndexBatches:
        """The same batches with every tensor on ``device`` (self when already there)."""
        if all(tensor.device == torch.device(device) for tensor in self.tensors):
            return self
        return IndexBatches(*(tensor.to(device) for tensor in self.tensors))


class ShardedBatchSampler(DistributedSampler):
    """Yields this process's share of the indices, ``batch_size`` at a time.

    It is a :class:`~torch.utils.data.DistributedSampler` (same shuffling per ``seed`` + epoch, same sharding:
    rank ``r`` of ``w`` takes every ``w``-th index), so Lightning calls ``set_epoch`` on it and does not wrap it in a
    second distributed sampler. Training drops the tail that does not divide evenly among processes, making the
    shards disjoint; evaluation pads by repeating a few indices so every process runs the same number of batches.

    Args:
        dataset: The dataset (only its length is used).
        batch_size: Indices per batch; the last batch may be smaller.
        shuffle: Reshuffle every epoch (training) or keep the order (evaluation).
        seed: Shuffling seed, shared by all processes.
        rank: This process's rank.
        world_size: Number of processes.
    """

    def __init__(
        self, dataset: Dataset, batch_size: int, shuffle: bool, seed: int, rank: int = 0, world_size: int = 1
    ) -> None:
        super().__init__(dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed, drop_last=shuffle)
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[list[int]]:
        indices = list(super().__iter__())
        for start in range(0, len(indices), self.batch_size):
            yield indices[start : start + self.batch_size]

    def __len__(self) -> int:
        return math.ceil(self.num_samples / self.batch_size)
