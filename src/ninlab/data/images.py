"""Unlabelled images for prediction (``predict-images``, ``explain``, ``ninlab predict``): files and folders of
images, decoded exactly as the folder dataset decodes its training images (:func:`ninlab.data.decode.decode_image`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import torch

from ninlab.data.decode import decode_image, decode_images, probe_image
from ninlab.data.folder import Size, image_files, most_common_shape
from ninlab.errors import DataNotFoundError

__all__ = ["find_images", "load_images", "load_images_unresized"]


def load_images(
    paths: Iterable[str | os.PathLike], image_size: Size | None = None, channels: int | None = None
) -> tuple[torch.Tensor, list[Path]]:
    """Load unlabelled images for prediction: image files and folders (searched recursively, in sorted order).

    Each file is decoded by :func:`ninlab.data.decode.decode_image`, as in training.

    Args:
        paths: Image files and/or folders of images.
        image_size: Side (or ``(height, width)``) to resize to; pass the model's input size (``None``: the most
            common size among the files).
        channels: 1 or 3; pass the model's channel count (``None``: the most common).

    Returns:
        A uint8 ``N x C x H x W`` tensor and the file of each image, in the same order.

    Raises:
        DataNotFoundError: a path does not exist, or no image was found.
        DataError: an empty, unreadable or non-image file.
    """
    files = find_images(paths)
    if image_size is None or channels is None:
        common_size, common_channels = most_common_shape(files)
        image_size, channels = image_size or common_size, channels or common_channels
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    return decode_images(files, channels, size), files


def load_images_unresized(paths: Iterable[str | os.PathLike], channels: int) -> tuple[list[torch.Tensor], list[Path]]:
    """Load unlabelled images for prediction as :func:`load_images` does, but each at its own size.

    For paths that resize on the tensors (:func:`ninlab.data.transforms.prepare_images`, as training batches are),
    so an image never depends on the other images of the call.

    Returns:
        One uint8 ``1 x C x H x W`` tensor per file, and the files, in the same order.
    """
    files = find_images(paths)
    images = [torch.from_numpy(decode_image(path, channels, probe_image(path)[:2]))[None] for path in files]
    return images, files


def find_images(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """The image files among ``paths``: files as given, folders searched recursively in sorted order.

    Raises:
        DataNotFoundError: a path does not exist, or no image was found.
        DataError: a non-image or unreadable file inside a folder.
    """
    paths = [Path(path) for path in paths]
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += image_files(path, {})
        elif path.is_file():
            files.append(path)
        else:
            raise DataNotFoundError(f"{path}: expected an image file or a folder of images, found nothing there")
    if not files:
        raise DataNotFoundError(f"{', '.join(map(str, paths))}: expected image files, found none")
    return files
