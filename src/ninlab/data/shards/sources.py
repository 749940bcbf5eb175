"""What ``ninlab pack`` reads: an image folder (laid out as the folder dataset reads it) or a built-in dataset.

A folder is listed, checked and decoded exactly as the folder dataset does it (:mod:`ninlab.data.folder`,
:mod:`ninlab.data.decode`): the same layouts, class checks, EXIF orientation, bit depths and one-line errors.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ninlab.data import folder
from ninlab.data.catalog import dataset_info, list_datasets, load_dataset
from ninlab.data.decode import decode_image, probe_image
from ninlab.errors import ConfigError, DataNotFoundError

__all__ = ["PackSource", "SplitItems", "decode_item", "open_source", "probe_items"]


@dataclass
class SplitItems:
    """One split to pack: its items (image paths, or uint8 ``H x W x C`` arrays of a built-in set) and labels."""

    items: list
    labels: list[int]


@dataclass
class PackSource:
    """A dataset to pack: a description, class names, whether flips keep classes, and its splits' items."""

    description: str
    classes: list[str]
    hflip: bool
    splits: dict[str, SplitItems] = field(default_factory=dict)
    fingerprint: str = ""
    native_size: tuple[int, int] | None = None  # (height, width) of a built-in set; folders are probed
    native_channels: int | None = None


def open_source(source: str) -> PackSource:
    """The :class:`PackSource` of ``source``: a built-in dataset's name or an image folder's path.

    Raises:
        DataNotFoundError: neither a known dataset name nor a folder of class folders.
    """
    if source in list_datasets() and source != "folder":
        return _builtin(source)
    path = Path(source).expanduser()
    if not path.is_dir():
        names = ", ".join(name for name in list_datasets() if name != "folder")
        raise DataNotFoundError(f"{source}: expected an image folder (<class>/ folders, optionally under train/, "
                                f"val/, test/) or a dataset name ({names}), found neither; check the path")  # fmt: skip
    return _folder(path)


def _builtin(name: str) -> PackSource:
    splits, digest = {}, hashlib.sha256(name.encode())
    train = load_dataset(name, "train", download=True)
    packed = PackSource(f"{name} (built-in)", list(train.classes), dataset_info(name).hflip)
    for split in ("train", "test"):
        imageset = train if split == "train" else load_dataset(name, split, download=True)
        images = imageset.images.permute(0, 2, 3, 1).contiguous().numpy()
        digest.update(images.tobytes())
        digest.update(imageset.labels.numpy().tobytes())
        splits[split] = SplitItems(list(images), imageset.labels.tolist())
    packed.splits, packed.fingerprint = splits, digest.hexdigest()
    packed.native_size, packed.native_channels = tuple(train.images.shape[2:]), int(train.images.shape[1])
    return packed


def _folder(base: Path) -> PackSource:
    splits = folder.find_splits(base)
    classes = folder.check_classes(splits)  # the folder dataset's own checks: one line for what differs
    packed = PackSource(str(base.resolve()), classes, dataset_info("folder").hflip)
    digest = hashlib.sha256()
    for split, split_dir in splits.items():
        items, labels = folder.split_images(split_dir, classes)
        for path in items:
            stat = path.stat()
            digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
        packed.splits[split] = SplitItems(items, labels)
    packed.fingerprint = digest.hexdigest()
    return packed


def carve_validation(source: PackSource, val_size: int, seed: int) -> None:
    """Hold ``val_size`` training items out as the val split (unless the source has one), as the data module does.

    The same seeded permutation as :class:`~ninlab.data.ImageDataModule`, so a pack of a built-in dataset
    validates on the images its in-memory run would.
    """
    if "val" in source.splits or val_size == 0:
        return
    train = source.splits["train"]
    if val_size >= len(train.items):
        raise ConfigError(f"--val-size must be below the {len(train.items)} training images, found {val_size}; "
                          "lower it (0 = no val split)")  # fmt: skip
    order = torch.randperm(len(train.items), generator=torch.Generator().manual_seed(seed))
    val, rest = order[:val_size].sort().values.tolist(), order[val_size:].sort().values.tolist()
    source.splits["val"] = SplitItems([train.items[i] for i in val], [train.labels[i] for i in val])
    source.splits["train"] = SplitItems([train.items[i] for i in rest], [train.labels[i] for i in rest])


def probe_items(paths: list[Path]) -> tuple[Counter, Counter]:
    """Sizes ``(height, width)`` and channel counts of image files, read from their headers (the folder policy)."""
    sizes, channels = Counter(), Counter()
    for path in paths:
        height, width, chans = probe_image(path)
        sizes[(height, width)] += 1
        channels[chans] += 1
    return sizes, channels


def decode_item(item: Path | np.ndarray, size: tuple[int, int], channels: int) -> np.ndarray:
    """One image as uint8 ``H x W x C`` at ``size`` (height, width) with ``channels``, as the folder reader does it.

    Raises:
        DataError: the file is empty, not an image or damaged (the folder reader's one-line messages).
    """
    if not isinstance(item, np.ndarray):
        return decode_image(item, channels, size).transpose(1, 2, 0)
    height, width = size
    if item.shape == (height, width, channels):
        return item
    image = Image.fromarray(item.squeeze(-1) if item.shape[-1] == 1 else item).convert("L" if channels == 1 else "RGB")
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(image).reshape(height, width, channels)
