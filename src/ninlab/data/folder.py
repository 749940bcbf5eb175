"""Images in folders: ``root/<class>/*.png`` for training, or any files and folders of images for prediction.

Size and channel policy: every image is brought to one size and one channel count so the set stacks into one
tensor. With ``image_size=None`` the size is the most common width x height among the files (ties: the first
found); with ``channels=None`` the channel count is the most common among the files, counting greyscale modes
(``1``, ``L``, ``LA``, ``I``, ``I;16``, ``F``) as 1 and everything else as 3. Images of another size are resized
bilinearly (no aspect-ratio preservation); greyscale images are converted to RGB or colour to greyscale with
Pillow's ``convert``; transparency is dropped.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from ninlab.data.cache import load_or_build
from ninlab.data.imageset import ImageSet
from ninlab.errors import ConfigError, DataError, DataNotFoundError

__all__ = ["IMAGE_SUFFIXES", "find_images", "load_folder", "load_images", "load_images_unresized"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
_GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}

Size = int | tuple[int, int]


def load_folder(
    root: str | os.PathLike, split: str = "train", image_size: Size | None = None, channels: int | None = None
) -> ImageSet:
    """Load a labelled image folder: one subfolder per class, named after it, holding the images.

    ``root/train/`` and ``root/test/`` are used for the splits when they exist; otherwise ``root`` itself is the
    training split and there is no test split. Hidden files and folders are skipped; loose files directly in the
    split folder are ignored. Decoded sets are cached like the other datasets.

    Args:
        root: The dataset folder.
        split: ``"train"`` or ``"test"``.
        image_size: Side (or ``(height, width)``) every image is resized to; ``None`` = the most common size.
        channels: 1 or 3; ``None`` = the most common channel count.

    Raises:
        DataNotFoundError: ``root`` (or the split folder) does not exist or has no class folders.
        DataError: an empty, unreadable or non-image file (named in the message).
    """
    base = Path(root).expanduser()
    folder = base / split if (base / split).is_dir() else base
    if split != "train" and folder == base:
        raise DataNotFoundError(
            f"{base}: expected a {split}/ folder of class folders for the {split} split, found "
            f"none; add {base / split}/<class>/ images or train only on {base}"
        )
    classes = sorted(p.name for p in _visible(folder) if p.is_dir()) if folder.is_dir() else []
    if not classes:
        raise DataNotFoundError(
            f"{folder}: expected one folder per class holding images (root/<class>/*.png), "
            "found none; pass --data.root pointing at such a folder"
        )
    files, labels = [], []
    for label, name in enumerate(classes):
        found = _image_files(folder / name)
        files += found
        labels += [label] * len(found)
    options = {"image_size": image_size, "channels": channels}

    def build() -> ImageSet:
        images = _decode_all(files, image_size, channels)
        return ImageSet(
            name="folder",
            split=split,
            images=images,
            labels=torch.tensor(labels, dtype=torch.int64),
            classes=classes,
            source=folder,
        )

    return load_or_build("folder", split, files, options, build, accept=lambda imageset: None)


def load_images(
    paths: Iterable[str | os.PathLike], image_size: Size | None = None, channels: int | None = None
) -> tuple[torch.Tensor, list[Path]]:
    """Load unlabelled images for prediction: image files and folders (searched recursively, in sorted order).

    Args:
        paths: Image files and/or folders of images.
        image_size: Side (or ``(height, width)``) to resize to; pass the model's input size.
        channels: 1 or 3; pass the model's channel count.

    Returns:
        A uint8 ``N x C x H x W`` tensor and the file of each image, in the same order.

    Raises:
        DataNotFoundError: a path does not exist, or no image was found.
        DataError: an empty, unreadable or non-image file.
    """
    files = find_images(paths)
    return _decode_all(files, image_size, channels), files


def load_images_unresized(paths: Iterable[str | os.PathLike], channels: int) -> tuple[list[torch.Tensor], list[Path]]:
    """Load unlabelled images for prediction as :func:`load_images` does, but each at its own size.

    For paths that resize on the tensors (:func:`ninlab.data.transforms.prepare_images`, as training does), so an
    image never goes through two different resizes and never depends on the other images of the call.

    Returns:
        One uint8 ``1 x C x H x W`` tensor per file, and the files, in the same order.
    """
    files = find_images(paths)
    images = [_decode_all([path], None, channels, progress=False)
              for path in tqdm(files, desc="decoding images", unit="img", disable=None)]  # fmt: skip
    return images, files


def find_images(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """The image files among ``paths``: files as given, folders searched recursively in sorted order.

    Raises:
        DataNotFoundError: a path does not exist, or no image was found.
        DataError: a non-image or unreadable file inside a folder.
    """
    paths = list(paths)
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files += _image_files(path)
        elif path.is_file():
            files.append(path)
        else:
            raise DataNotFoundError(f"{path}: expected an image file or a folder of images, found nothing there")
    if not files:
        raise DataNotFoundError(f"{', '.join(map(str, paths))}: expected image files, found none")
    return files


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _image_files(folder: Path) -> list[Path]:
    files = []
    for path in _visible(folder):
        if path.is_dir():
            files += _image_files(path)
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            if not path.is_file():  # listed but not readable as a file: a dangling link, a socket...
                found = "a dangling link" if path.is_symlink() else "no regular file"
                raise DataError(f"{path}: expected a readable image, found {found}; fix or remove it")
            files.append(path)
        else:
            raise DataError(
                f"{path}: expected only images ({', '.join(IMAGE_SUFFIXES)}) in {folder}, found "
                f"a {path.suffix or 'suffix-less'} file; move it out of the dataset folder"
            )
    return files


def _open(path: Path) -> Image.Image:
    if path.stat().st_size == 0:
        raise DataError(f"{path}: expected an image, found an empty file; delete it or replace it")
    try:
        return Image.open(path)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as error:
        raise DataError(f"{path}: expected an image Pillow can read, found {error}; delete or re-export it") from error


def _decode_all(
    files: list[Path], image_size: Size | None, channels: int | None, progress: bool = True
) -> torch.Tensor:
    if channels not in (None, 1, 3):
        raise ConfigError(f"channels must be 1 or 3, found {channels}; pass channels=1 (grey) or 3 (RGB)")
    if image_size is None or channels is None:
        # Opening reads only the header, so this first pass is cheap even for large images.
        sizes, modes = Counter(), Counter()
        for path in files:
            with _open(path) as image:
                sizes[image.size] += 1
                modes[1 if image.mode in _GREY_MODES else 3] += 1
        image_size = image_size or tuple(reversed(sizes.most_common(1)[0][0]))
        channels = channels or modes.most_common(1)[0][0]
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    mode = "L" if channels == 1 else "RGB"
    out = np.empty((len(files), height, width, channels), dtype=np.uint8)
    for i, path in enumerate(tqdm(files, desc="decoding images", unit="img", disable=None if progress else True)):
        with _open(path) as image:
            try:
                image = image.convert(mode)
                if image.size != (width, height):
                    image = image.resize((width, height), Image.Resampling.BILINEAR)
                out[i] = np.asarray(image).reshape(height, width, channels)
            except (OSError, ValueError, SyntaxError) as error:
                raise DataError(
                    f"{path}: expected a decodable image, found {error}; the file is damaged, re-export it"
                ) from error
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()
