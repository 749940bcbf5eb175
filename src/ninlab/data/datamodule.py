"""``ImageDataModule``: any ninlab dataset as a Lightning data module, held in memory as uint8."""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from torch.utils.data import DataLoader

from ninlab._runtime.memory import require_memory
from ninlab.data import transforms
from ninlab.data.catalog import dataset_info, load_dataset
from ninlab.data.device_batches import DeviceBatches
from ninlab.data.evaluation_splits import EvaluationSplits
from ninlab.data.folder import find_splits
from ninlab.data.holdout import hold_out
from ninlab.data.images import load_images
from ninlab.data.imageset import ImageSet
from ninlab.data.sampler import IndexBatches, ShardedBatchSampler
from ninlab.data.shards import PackedDataset
from ninlab.errors import ConfigError

__all__ = ["ImageDataModule"]

_HALF = (0.5, 0.5)
SHARDS = "shards"
"""The ``dataset`` name of a pack written by ``ninlab pack``, streamed from ``root`` instead of held in memory."""


class ImageDataModule(EvaluationSplits, DeviceBatches, L.LightningDataModule):
    """Train/val/test/predict batches of one dataset, augmented and normalised on the training device.

    The splits live in memory as uint8 tensors; each batch is a single slice (no per-sample Python, no collate).
    ``on_after_batch_transfer`` then, on the device: crops and flips (training only), converts to float in [0, 1],
    resizes to ``image_size``, normalises and switches to channels-last. Batches reaching the model are
    ``(images, labels)``: float32 ``B x C x H x W`` and int64 ``B`` (for predict, ``labels`` are indices into
    :attr:`predict_files`).

    Under DDP every process reads a disjoint shard of the training set (see :class:`ShardedBatchSampler`).
    With ``dataset="shards"`` the splits stream from a pack (``ninlab pack``) at ``root`` instead, read and decoded in
    ``num_workers`` DataLoader workers, every process and worker on its own shards (see
    :mod:`ninlab.data.shards.stream`); the val split is the pack's; the batches and the device-side steps are the same.

    Args:
        dataset: Dataset name: fashion-mnist, mnist, cifar10, cifar100, digits, folder, or shards (a pack).
        root: Directory holding the dataset files (required for ``folder``); ``None`` searches the cache dir and
            system dirs. For ``shards``: the pack's folder, URL prefix or ``pipe:`` command with ``{}``.
        download: Download from the official URL when the files are not found.
        batch_size: Images per batch (per process).
        val_size: Images held out of the training split for validation, chosen with ``seed``; 0 = no validation.
            An image folder with a ``val/`` folder validates on it instead (see :func:`ninlab.data.folder.find_splits`).
            For ``shards`` the pack's val split is used (``ninlab pack --val-size``); 0 still turns validation off.
        seed: Seed of the train/val split, the shuffling and the augmentation.
        image_size: Side the images are resized to (bilinear) before the model, e.g. 224 for nin_d2l; ``None`` keeps
            the dataset's size.
        augment: Random crop (with ``crop_padding``) and horizontal flip (``hflip``) on training batches.
        crop_padding: Zero padding on each side before the random crop, in dataset pixels; 0 = no crop.
        hflip: Random horizontal flips; ``None`` = on for datasets where mirroring keeps the class (Fashion-MNIST,
            CIFAR, folders), off for digits (MNIST, digits).
        normalize: ``"dataset"``: per-channel mean/std of the training split; ``"half"``: mean 0.5, std 0.5 (inputs in
            [-1, 1]); ``"none"``: inputs in [0, 1].
        channels_last: Return batches in channels-last memory format (faster convolutions on GPUs).
        limit_train: Use only this many training images (quick runs and tests); ``None`` = all.
        folder_image_size: ``folder`` only: size the images are stored at (default: their most common size).
        channels: ``folder`` only: 1 or 3 channels (default: the most common).
        predict_root: Image file or folder to predict on (``trainer.predict``).
        num_workers: DataLoader worker processes; ``None``: 0 in memory (a batch is one slice, workers only cost),
            and for ``shards`` the cores beyond the two the training step's threads use, up to 4 (none on a 2-core
            CPU, where workers take cores from the step: docs/data.md), which read and decode the shards.
        verify: Checksum policy (see :func:`ninlab.data.load_dataset`); ``None`` = the default policy.
        device_resident: Move the uint8 splits to the training device once in ``setup``, so every batch is sliced
            where it trains (no host-to-device image copies; on a GPU Fashion-MNIST's 60,000 images take 47 MB).
            Needs ``num_workers=0``; on a CPU it changes nothing.
        train_scales: Progressive resizing: for each epoch, the side of the training images as a fraction of the side
            evaluation uses (``image_size``, else the stored size), the last entry repeating to the end; bilinear, after
            the crop and flip, rounded, never below the network's smallest input. E.g. ``[0.72, 0.72, 1.0]`` trains
            the first two epochs of Fashion-MNIST at 20x20 (~1.8x faster steps). Validation, testing, prediction and
            export always see the full size. ``None`` = every epoch at the full size.
    """

    def __init__(
        self,
        dataset: str = "fashion-mnist",
        root: str | None = None,
        download: bool = False,
        batch_size: int = 128,
        val_size: int = 5000,
        seed: int = 0,
        image_size: int | None = None,
        augment: bool = True,
        crop_padding: int = 2,
        hflip: bool | None = None,
        normalize: Literal["dataset", "half", "none"] = "dataset",
        channels_last: bool = True,
        limit_train: int | None = None,
        folder_image_size: int | None = None,
        channels: int | None = None,
        predict_root: str | None = None,
        num_workers: int | None = None,
        verify: bool | None = None,
        device_resident: bool = False,
        train_scales: list[float] | None = None,
    ) -> None:
        super().__init__()
        info = dataset_info("folder" if dataset == SHARDS else dataset)  # a pack's flips come from its index
        for name, value, low in (
            ("batch_size", batch_size, 1),
            ("val_size", val_size, 0),
            ("crop_padding", crop_padding, 0),
            ("num_workers", num_workers, 0),
            ("image_size", image_size, 1),
            ("limit_train", limit_train, 1),
        ):
            if value is not None and value < low:
                raise ConfigError(f"{name} must be >= {low}, found {value}; pass a value of at least {low}")
        if train_scales is not None and (not train_scales or not all(0 < s <= 1 for s in train_scales)):
            raise ConfigError(f"train_scales must be a non-empty list of fractions in (0, 1], one per epoch, found "
                              f"{train_scales}; pass e.g. [0.72, 0.72, 1.0] or leave it out")  # fmt: skip
        if normalize not in ("dataset", "half", "none"):
            raise ConfigError(f"normalize must be 'dataset', 'half' or 'none', found {normalize!r}")
        if dataset == SHARDS and (root is None or device_resident or limit_train is not None):
            raise ConfigError(
                "dataset=shards streams a pack: it needs --data.root DIR_OR_URL (from `ninlab pack`) and "
                "takes neither device_resident nor limit_train (pack fewer images instead)"
            )
        if dataset != "folder" and (folder_image_size is not None or channels is not None):
            raise ConfigError(f"folder_image_size/channels apply to dataset=folder, not {dataset}; use image_size")
        if device_resident and num_workers:
            raise ConfigError(f"device_resident needs num_workers=0 (worker processes cannot slice device tensors), "
                              f"found {num_workers}; drop --data.num_workers or --data.device_resident")  # fmt: skip
        self.save_hyperparameters()
        self.device_resident = device_resident
        self.train_scales = [float(s) for s in train_scales] if train_scales is not None else None
        self.dataset, self.root, self.download, self.verify = dataset, root, download, verify
        if num_workers is None:
            # Shards on 2 cores trained fastest read in the main process (raw pixels, fast_cifar10: 0.98-1.00x of in
            # memory against 0.86x with 2 workers): a worker's reads preempt a training thread, which stalls the other.
            num_workers = min(4, max(0, len(os.sched_getaffinity(0)) - 2)) if dataset == SHARDS else 0
        self.batch_size, self.val_size, self.seed, self.num_workers = batch_size, val_size, seed, num_workers
        self._packed = PackedDataset(root) if dataset == SHARDS else None
        self.image_size, self.augment, self.crop_padding = image_size, augment, crop_padding
        self.hflip = info.hflip if hflip is None else hflip
        if self._packed is not None and hflip is None:
            self.hflip = self._packed.index.hflip
        self.normalize, self.channels_last, self.limit_train = normalize, channels_last, limit_train
        self.folder_image_size, self.channels, self.predict_root = folder_image_size, channels, predict_root
        self.predict_files: list[Path] = []
        self._splits: dict[str, IndexBatches | None] = {}
        self.test_stand_in: str | None = None
        """What the final evaluation reads in place of a missing test split (set when it is first chosen), else None."""

    # --- what the model needs at build time (loads the training split, from the cache after the first time) ---

    @property
    def classes(self) -> list[str]:
        """Class names, in label order."""
        return self._packed.classes if self._packed else self._train_set.classes

    @property
    def num_classes(self) -> int:
        """Number of classes (the model's output width)."""
        return len(self.classes)

    @property
    def in_chans(self) -> int:
        """Channels of the batches (1 for grey, 3 for colour)."""
        return self._stored_shape[0]

    @property
    def input_size(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the batches the model receives, after resizing."""
        channels, height, width = self._stored_shape
        return (channels, self.image_size or height, self.image_size or width)

    @property
    def _stored_shape(self) -> tuple[int, int, int]:
        return self._packed.shape if self._packed else tuple(self._train_set.images.shape[1:])

    @cached_property
    def mean_std(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and std used to normalise (from the whole training split for ``normalize="dataset"``)."""
        if self.normalize == "dataset" and self._packed:
            return self._packed.mean_std()
        if self.normalize == "dataset":
            return transforms.channel_stats(self._train_set.images)
        mean, std = _HALF if self.normalize == "half" else (0.0, 1.0)
        return torch.full((self.in_chans,), mean), torch.full((self.in_chans,), std)

    @cached_property
    def _train_set(self) -> ImageSet:
        return self._load("train")

    @cached_property
    def _folder_splits(self) -> dict[str, Path]:
        """The split folders of a ``folder`` dataset (``train`` and any of ``val``, ``test``); empty for others."""
        return find_splits(self.root) if self.dataset == "folder" else {}

    def _load(self, split: str) -> ImageSet:
        size, channels = self.folder_image_size, self.channels
        if self.dataset == "folder" and split != "train":  # every split stacked like the training one
            size, channels = tuple(self._train_set.images.shape[2:]), self._train_set.in_chans
        return load_dataset(self.dataset, split, self.root, self.download, verify=self.verify, image_size=size,
                            channels=channels)  # fmt: skip

    # --- Lightning hooks ---

    def prepare_data(self) -> None:
        """Locate (and with ``download=True`` fetch) and decode every split once per node, filling the cache."""
        for split in (self._folder_splits or ("train", "test")) if self._packed is None else ():
            self._load(split)

    def setup(self, stage: str | None = None) -> None:
        """Build the splits this ``stage`` needs: ``fit``/``validate`` train+val, ``test`` test, ``predict`` images."""
        if self._packed is not None and stage != "predict":
            return  # the streams are built per loader: nothing to hold in memory
        if stage in (None, "fit", "validate") and "train" not in self._splits:
            self._split_train()
        if stage in (None, "test") and "test" not in self._splits:
            self._splits["test"] = self._test_split()
        if stage == "predict" and "predict" not in self._splits:
            if self.predict_root is None:
                raise ConfigError("predict needs images: pass --data.predict_root FILE_OR_DIR")
            channels, height, width = self._stored_shape
            images, self.predict_files = load_images([self.predict_root], (height, width), channels)
            self._splits["predict"] = IndexBatches(images, torch.arange(len(images)))
        channels, height, width = self.input_size  # refused before any batch is made: one float32 batch
        require_memory(4 * self.batch_size * channels * height * width, self._device(), ConfigError, f"a batch of "
                       f"{self.batch_size} images at {channels}x{height}x{width} (float32)",
                       "pass a smaller --data.image_size or --data.batch_size")  # fmt: skip
        if self.device_resident:
            device = self._device()
            self._splits = {name: data if data is None else data.to(device) for name, data in self._splits.items()}

    def _device(self) -> torch.device:
        return self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")

    def _split_train(self) -> None:
        own_val = "val" in self._folder_splits  # the folder's own validation split: all of train/ trains
        val_size = 0 if own_val else self.val_size
        self._splits["train"], held = hold_out(self._train_set, val_size, self.seed, self.limit_train)
        self._splits["val"] = self._batches("val") if own_val else held

    def _batches(self, split: str) -> IndexBatches:
        data = self._load(split)
        return IndexBatches(data.images, data.labels)

    @property
    def train_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The training split as set up: uint8 images ``N x C x H x W`` and int64 labels (after ``setup("fit")``)."""
        return self._set_up("train").tensors

    def normalised_train_sample(self, count: int) -> torch.Tensor:
        """The first ``count`` training images (fewer if the split is smaller) as the network sees them at full size:
        scaled, resized, normalised, not augmented (after ``setup("fit")``); for statistics such as patch whitening.

        In-memory data gives the split's first images; a shard pack those of its first training shards, read on
        this process without workers.
        """
        if self._packed is None:
            images = self.train_tensors[0][:count]
        else:
            loader = self._packed.loader("train", min(count, self.batch_size), train=False, seed=self.seed, rank=0,
                                         world_size=1, num_workers=0, epoch=self._epoch)  # fmt: skip
            chunks, found = [], 0
            try:
                for batch, _ in loader:
                    chunks.append(batch[: count - found])
                    found += len(chunks[-1])
                    if found >= count:
                        break
            finally:
                loader.close()
            images = torch.cat(chunks)
        return self.prepare_batch(images)

    @property
    def test_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The test split as set up: uint8 images ``N x C x H x W`` and int64 labels (after ``setup("test")``)."""
        return self._set_up("test").tensors

    def num_images(self, split: str) -> int:
        """Images in the in-memory ``split`` (``train``, ``val`` or ``test``) as set up; 0 for no validation split."""
        data = self._set_up(split)
        return len(data) if data is not None else 0

    def _set_up(self, split: str) -> IndexBatches | None:
        """The in-memory ``split`` that :meth:`setup` built (None: no validation split); an error if it has not."""
        if split not in self._splits:
            stage = {"train": "fit", "val": "fit"}.get(split, split)
            raise ConfigError(f"the {split} split is not set up; call setup('{stage}') first")
        return self._splits[split]

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches (this process's shard)."""
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        """Validation batches; an empty list when ``val_size=0``, which Lightning treats as no validation."""
        if self._packed is not None:
            return self._loader("val", shuffle=False) if self._packed.has("val") and self.val_size else []
        return self._loader("val", shuffle=False) if self._splits.get("val") is not None else []

    def test_dataloader(self) -> DataLoader:
        """Batches of the official test split."""
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        """Batches of the images under ``predict_root``; labels are indices into :attr:`predict_files`."""
        return self._loader("predict", shuffle=False)

    def _loader(self, split: str, shuffle: bool) -> DataLoader | list:
        if self._packed is not None and split != "predict":
            split = self._packed_test_split() if split == "test" else split
            if not self._packed.has(split):
                return []  # Lightning skips a loop without batches, as for a folder without test/
            rank, world_size = self._rank_world()
            return self._packed.loader(split, self.batch_size, train=shuffle, seed=self.seed, rank=rank,
                                       world_size=world_size, num_workers=self.num_workers,
                                       epoch=self._epoch)  # fmt: skip
        data = self._set_up(split)
        rank, world_size = self._rank_world()
        sampler = ShardedBatchSampler(data, self.batch_size, shuffle, self.seed, rank, world_size)
        return DataLoader(data, batch_size=None, sampler=sampler, num_workers=self.num_workers)
