"""The datasets ninlab knows by name, and :func:`load_dataset`, the one entry point that loads any of them."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ninlab.data.cifar import CIFAR_DATASETS, load_cifar
from ninlab.data.digits import load_digits_split
from ninlab.data.folder import Size, load_folder
from ninlab.data.imageset import ImageSet
from ninlab.data.mnist import IDX_DATASETS, load_idx_dataset
from ninlab.errors import ConfigError, check_choice

__all__ = ["FOLDER_SPLITS", "SPLITS", "DatasetInfo", "dataset_info", "list_datasets", "load_dataset"]

SPLITS = ("train", "test")
FOLDER_SPLITS = ("train", "val", "test")
"""An image folder may also have its own validation split (``root/val/``)."""


@dataclass(frozen=True)
class DatasetInfo:
    """What ninlab knows about a dataset before loading it.

    Attributes:
        name: The name :func:`load_dataset` takes.
        description: One line for listings.
        hflip: Whether random horizontal flips suit it (not for digits, whose mirror images are other shapes).
        needs_root: Whether it has no default location (your own image folder).
    """

    name: str
    description: str
    hflip: bool
    needs_root: bool = False


_INFO = {
    info.name: info
    for info in (
        DatasetInfo("fashion-mnist", "Zalando Fashion-MNIST, 28x28 grey, 10 classes, 60,000/10,000", hflip=True),
        DatasetInfo("mnist", "MNIST handwritten digits, 28x28 grey, 10 classes, 60,000/10,000", hflip=False),
        DatasetInfo("cifar10", "CIFAR-10, 32x32 RGB, 10 classes, 50,000/10,000", hflip=True),
        DatasetInfo("cifar100", "CIFAR-100 (fine labels), 32x32 RGB, 100 classes, 50,000/10,000", hflip=True),
        DatasetInfo("digits", "scikit-learn digits, 8x8 grey, 10 classes, 1,437/360 (bundled, offline)", hflip=False),
        DatasetInfo(
            "folder",
            "your images in root/<class>/, or root/train/ with optional root/val/ and root/test/",
            hflip=True,
            needs_root=True,
        ),
    )
}


def list_datasets() -> list[str]:
    """The names :func:`load_dataset` accepts."""
    return list(_INFO)


def dataset_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of ``name``; an unknown name raises :class:`ConfigError` listing the known ones."""
    check_choice(name, _INFO, "dataset")
    return _INFO[name]


def load_dataset(
    name: str,
    split: str = "train",
    root: str | os.PathLike | None = None,
    download: bool = False,
    *,
    verify: bool | None = None,
    image_size: Size | None = None,
    channels: int | None = None,
) -> ImageSet:
    """Load one split of a dataset into memory, decoding it once and reusing the cache afterwards.

    Files are looked for in ``root``, then the cache dir (``$NINLAB_DATA`` or the user cache dir), then system dirs
    (``/usr/share/datasets``); with ``download=True`` they are then fetched from the official URLs.

    Args:
        name: One of :func:`list_datasets`.
        split: ``"train"`` or ``"test"`` (and ``"val"`` for ``"folder"``).
        root: A directory holding the files (or their ``<name>/`` subfolder); required for ``"folder"``.
        download: Download from the official URL when not found locally.
        verify: Checksum policy: ``True`` refuses files that differ from the official ones, ``False`` only reports,
            ``None`` refuses for cached/system files and reports for files under ``root``.
        image_size: ``"folder"`` only: size every image is resized to (default: the most common size).
        channels: ``"folder"`` only: 1 or 3 (default: the most common).

    Raises:
        ConfigError: unknown name or split, or folder options for another dataset.
        DataNotFoundError: the files are nowhere to be found (the message says how to provide them).
        DataError: the files are malformed, truncated or fail their checksum.
    """
    info = dataset_info(name)
    splits = FOLDER_SPLITS if name == "folder" else SPLITS
    check_choice(split, splits, f"{name} split")
    if (image_size is not None or channels is not None) and name != "folder":
        raise ConfigError(f"image_size/channels apply to the folder dataset, not {name}; resize in the data module")
    if name in IDX_DATASETS:
        return load_idx_dataset(IDX_DATASETS[name], split, root, download, verify)
    if name in CIFAR_DATASETS:
        return load_cifar(CIFAR_DATASETS[name], split, root, download, verify)
    if name == "digits":
        return load_digits_split(split)
    if root is None:
        raise ConfigError(f"dataset {info.name!r} needs root=DIR (--data.root DIR) holding one folder per class")
    return load_folder(root, split, image_size, channels)
