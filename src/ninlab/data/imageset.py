"""The in-memory form every ninlab dataset loads into: uint8 images, int64 labels and class names."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ninlab.errors import DataError

__all__ = ["CHECKSUM_STATES", "ImageSet"]

# What ninlab knows about a dataset's bytes: matched the official checksums, differed from them, or has none to check.
CHECKSUM_STATES = ("verified", "mismatch", "not checked")


@dataclass(frozen=True)
class ImageSet:
    """One split of a dataset, decoded.

    Attributes:
        name: Dataset name as given to :func:`ninlab.data.load_dataset` (``"fashion-mnist"``...).
        split: ``"train"`` or ``"test"``.
        images: ``uint8`` tensor of shape ``N x C x H x W``.
        labels: ``int64`` tensor of shape ``N`` with values in ``[0, len(classes))``.
        classes: Class names; ``labels`` index into it.
        source: The file or folder the split was read from (``None`` for bundled data).
        checksum: One of ``"verified"``, ``"mismatch"``, ``"not checked"``.
    """

    name: str
    split: str
    images: torch.Tensor = field(repr=False)
    labels: torch.Tensor = field(repr=False)
    classes: list[str]
    source: Path | None = None
    checksum: str = "not checked"

    def __post_init__(self) -> None:
        # Every reader funnels through here, so a malformed decode can never reach the cache or a model.
        where = self.source or self.name
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise DataError(
                f"{where}: expected uint8 images N x C x H x W, found {self.images.dtype} "
                f"{tuple(self.images.shape)}; this is a bug in the reader, please report it"
            )
        if self.labels.dtype != torch.int64 or self.labels.shape != (len(self.images),):
            raise DataError(
                f"{where}: expected {len(self.images)} int64 labels, found {self.labels.dtype} "
                f"{tuple(self.labels.shape)}; the label file does not match the image file"
            )
        if len(self.labels) and (int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.classes)):
            raise DataError(
                f"{where}: expected labels in 0..{len(self.classes) - 1}, found "
                f"{int(self.labels.min())}..{int(self.labels.max())}; the label file is corrupt"
            )
        if self.checksum not in CHECKSUM_STATES:
            raise DataError(f"{where}: checksum state {self.checksum!r} is not one of {CHECKSUM_STATES}")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    @property
    def in_chans(self) -> int:
        """Channels per image (1 for grey, 3 for colour)."""
        return self.images.shape[1]
