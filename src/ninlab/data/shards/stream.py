"""Batches streamed from shards: which process and worker reads which shard, and how many batches each yields.

Written here rather than with WebDataset's ``split_by_node``/``split_by_worker``/``with_epoch`` because those
either leave processes with unequal sample counts (DDP then hangs at the epoch's end, one process waiting in an
all-reduce for a step the other never takes) or resample shards with replacement (processes no longer disjoint).

Training, epoch ``e``: the shards are permuted with ``(seed, e)`` (the same permutation in every process); process
``r`` of ``w`` takes every ``w``-th shard from ``r``, and its DataLoader worker ``k`` of ``n`` every ``n``-th of
those. Every worker then yields exactly ``L / n`` full batches, where ``L``, the batches per epoch of every
process, is fixed by the index: each worker holds at least ``S // (w * n)`` shards, so it has at least the samples
of that many of the smallest shards. What a worker reads beyond its quota is left out of that epoch (a different
part each epoch); with ``S`` a multiple of ``w * n`` and equal shards that is less than a batch per worker.
Samples pass through a shuffle buffer seeded with ``(seed, e, r, k)``; the order is reproducible run to run.

Evaluation reads every sample once: process ``r`` takes every ``w``-th shard (or, with fewer shards than
processes, every ``w``-th sample of every shard), batches end with a partial one, and nothing is shuffled.
"""

from __future__ import annotations

import math
import random
import weakref
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from webdataset.filters import shuffle as shuffle_buffer

from ninlab.data.shards.index import ShardIndex
from ninlab.data.shards.reader import read_shard
from ninlab.errors import ConfigError, DataError, NinlabError

__all__ = ["EpochLoader", "ShardStream", "batches_per_epoch", "worker_shards"]


def worker_shards(
    num_shards: int, *, train: bool, seed: int, epoch: int, rank: int, world_size: int, worker: int, workers: int
) -> list[int]:
    """The shard indices worker ``worker`` of process ``rank`` reads in ``epoch`` (in reading order)."""
    order = list(range(num_shards))
    if train:
        order = np.random.default_rng([seed, epoch]).permutation(num_shards).tolist()
    mine = order[rank::world_size] if train or num_shards >= world_size else order
    return mine[worker::workers]


def batches_per_epoch(counts: list[int], batch_size: int, world_size: int, workers: int) -> int:
    """Training batches every process yields per epoch (a multiple of ``workers``), from the shards' counts.

    Raises:
        ConfigError: too few shards for ``world_size * workers`` readers, or shards too small for one batch each.
    """
    readers = world_size * workers
    per_reader = len(counts) // readers
    if per_reader == 0:
        raise ConfigError(f"{len(counts)} training shards cannot feed {world_size} process(es) x {workers} "
                          f"DataLoader worker(s): every reader needs a shard of its own; lower --data.num_workers "
                          f"or re-pack with a smaller --shard-size (at least {readers} shards)")  # fmt: skip
    batches = sum(sorted(counts)[:per_reader]) // batch_size
    if batches == 0:
        raise ConfigError(f"batch_size {batch_size} is larger than the {sum(sorted(counts)[:per_reader])} samples a "
                          "reader is sure to hold; lower --data.batch_size or --data.num_workers")  # fmt: skip
    return batches * workers


class ShardStream(IterableDataset):
    """One split of a packed dataset as a stream of ``(uint8 images B x C x H x W, int64 labels B)`` batches.

    Set :attr:`epoch` before each iteration (:class:`EpochLoader` does). In a DataLoader worker, failures are
    yielded as :class:`_Failure` so :class:`EpochLoader` can raise them with their one-line message.

    Args:
        index: The dataset's index.
        split: ``"train"``, ``"val"`` or ``"test"``.
        batch_size: Samples per batch.
        train: Shuffle and yield equal full batches in every process (see the module docstring), or read every
            sample once in order.
        seed: Seed of the shard permutation and the shuffle buffer.
        rank: This process's rank.
        world_size: Number of processes.
        workers: DataLoader workers that will iterate this stream (0 = the main process).
        buffer: Samples held in the shuffle buffer.
    """

    def __init__(self, index: ShardIndex, split: str, batch_size: int, *, train: bool, seed: int, rank: int = 0,
                 world_size: int = 1, workers: int = 0, buffer: int = 2000) -> None:  # fmt: skip
        self.index, self.split, self.batch_size, self.train, self.seed = index, split, batch_size, train, seed
        self.rank, self.world_size, self.workers, self.buffer = rank, world_size, max(workers, 1), buffer
        self.shards = index.splits[split]
        self.epoch = 0
        if train:
            self.quota = batches_per_epoch([s.count for s in self.shards], batch_size, world_size, self.workers)
        elif len(index.splits[split]) < world_size and index.count(split) < world_size:
            raise ConfigError(f"the {split} split has {index.count(split)} samples, fewer than the {world_size} "
                              "processes; pack more or train on fewer processes")  # fmt: skip

    def _plan(self, worker: int) -> list[int]:
        return worker_shards(len(self.shards), train=self.train, seed=self.seed, epoch=self.epoch, rank=self.rank,
                             world_size=self.world_size, worker=worker, workers=self.workers)  # fmt: skip

    def _strided(self) -> bool:  # fewer eval shards than processes: split them sample by sample
        return not self.train and len(self.shards) < self.world_size

    def _eval_count(self, worker: int) -> int:
        if not self._strided():
            return sum(self.shards[i].count for i in self._plan(worker))
        starts = np.cumsum([0] + [s.count for s in self.shards])
        # Sample keys are positions in the split, so a shard starting at `a` holds keys a..b-1.
        return sum(len(range((a - self.rank - 1) // self.world_size + 1, (b - self.rank - 1) // self.world_size + 1))
                   for i in self._plan(worker) for a, b in [(starts[i], starts[i + 1])])  # fmt: skip

    def __len__(self) -> int:
        if self.train:
            return self.quota
        return sum(math.ceil(self._eval_count(worker) / self.batch_size) for worker in range(self.workers))

    def __iter__(self) -> Iterator:
        info = get_worker_info()
        worker = info.id if info is not None else 0
        try:
            yield from self._batches(worker)
        except NinlabError as error:
            if info is None:
                raise
            yield _Failure(str(error))  # a worker's exception would reach the user as a multi-line traceback

    def _batches(self, worker: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        samples = self._samples(self._plan(worker))
        if self.train:
            entropy = np.random.SeedSequence([self.seed, self.epoch, self.rank, worker]).generate_state(1)[0]
            rng = random.Random(int(entropy))
            samples = shuffle_buffer(self.buffer, initial=self.buffer, rng=rng)(samples)
        quota = self.quota // self.workers if self.train else None
        images, labels, made = [], [], 0
        for image, label in samples:
            images.append(image)
            labels.append(label)
            if len(images) == self.batch_size:
                yield _stack(images, labels)
                images, labels, made = [], [], made + 1
                if made == quota:
                    return
        if self.train:
            raise DataError(f"{self.index.root}: expected at least {quota} batches of {self.batch_size} in worker "
                            f"{worker}'s shards, found {made}; the index does not match the shards")  # fmt: skip
        if images:
            yield _stack(images, labels)

    def _samples(self, shard_ids: list[int]) -> Iterator[tuple[np.ndarray, int]]:
        for i in shard_ids:
            for key, image, label in read_shard(self.index, self.shards[i]):
                if not self._strided() or key % self.world_size == self.rank:
                    yield image, label


def _stack(images: list[np.ndarray], labels: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(np.stack(images)), torch.tensor(labels, dtype=torch.int64)


class _Failure:
    """A failure in a DataLoader worker, carried to the main process as data."""

    def __init__(self, message: str) -> None:
        self.message = message


class EpochLoader(DataLoader):
    """A DataLoader over a :class:`ShardStream` that tells it the epoch before each pass and raises worker failures.

    Lightning hands the epoch only to samplers (``set_epoch``), and a stream has none, so ``epoch`` (a callable,
    e.g. the trainer's epoch) is read when each pass begins, before the workers copy the stream.

    A pass's DataLoader workers are shut down as soon as it ends, or when a later pass makes it stale: Lightning
    stops asking a loader for batches without ending its iterator (after ``len()`` batches, or after the sanity
    check's first batches of validation), and those workers would otherwise live on beside the next pass's: the
    trainer's process forked four times, OOM-killed under a memory cgroup that one set fits in (docs/data.md).
    ``siblings`` (the loaders of one pack) lets a training pass, when it starts, close every other loader's pass.
    """

    def __init__(self, stream: ShardStream, epoch: Callable[[], int], num_workers: int,
                 siblings: weakref.WeakSet) -> None:  # fmt: skip
        super().__init__(stream, batch_size=None, num_workers=num_workers)
        self._epoch, self._open, self._siblings = epoch, None, siblings
        siblings.add(self)

    def close(self) -> None:
        """End the current pass, if one is open, shutting its workers down."""
        open_pass = self._open() if self._open is not None else None
        if open_pass is not None:
            open_pass.close()  # unwinds _pass: its DataLoader iterator is released and stops its workers
        self._open = None

    def __iter__(self) -> Iterator:
        for loader in list(self._siblings) if self.dataset.train else [self]:
            loader.close()
        open_pass = self._pass()
        # Weakly: the pass holds the loader, and a loader holding its pass would make the two a reference cycle, which
        # only the garbage collector frees, finalising the workers' queues before the pass's own shutdown, so that the
        # workers never heard it and PyTorch waited 5 s for each before killing it (dropping an unfinished pass of 2
        # workers took 10.3 s, against 0.25 s for a plain DataLoader's iterator).
        self._open = weakref.ref(open_pass)
        return open_pass

    def _pass(self) -> Iterator:
        self.dataset.epoch = self._epoch()
        batches, total = super().__iter__(), len(self)
        for made, batch in enumerate(batches, 1):
            if made == total:
                # Lightning never asks past the last batch: reaching the end here makes PyTorch shut the workers
                # down before it goes out (validation's workers start right after it).
                failures = [extra for extra in batches if isinstance(extra, _Failure)]
                batch = failures[0] if failures else batch
            if isinstance(batch, _Failure):
                raise DataError(batch.message)
            yield batch
