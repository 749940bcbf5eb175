"""Images in folders: one folder per class for training, or any files and folders of images for prediction.

Layouts (:func:`find_splits`): ``root/train/<class>/`` with optional ``root/val/`` (or ``valid/``, ``validation/``)
and ``root/test/`` next to it, as ImageNet and the PyTorch tutorials ship them; or ``root/<class>/`` alone. Every
split's classes are the training split's: labels are looked up by class name, and a class folder in ``val/`` or
``test/`` that ``train/`` lacks is refused.

Size and channel policy: every image is brought to one size and one channel count so the set stacks into one
tensor. With ``image_size=None`` the size is the most common height x width among the training files (ties: the
first found); with ``channels=None`` the channel count is the most common among them, counting greyscale modes
(``1``, ``L``, ``LA``, 16-bit) as 1 and everything else as 3. :mod:`ninlab.data.decode` says how each file is
decoded (orientation, bit depth, transparency).

Hidden files and folders (``.DS_Store``, ``._*``), ``__MACOSX/`` and Windows' ``Thumbs.db``/``desktop.ini`` are
skipped; any other non-image file is refused, naming it.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import torch

from ninlab.data.cache import load_or_build
from ninlab.data.decode import IMAGE_SUFFIXES, decode_images, map_chunks, probe_image
from ninlab.data.imageset import ImageSet
from ninlab.errors import DataError, DataNotFoundError

__all__ = [
    "IMAGE_SUFFIXES",
    "VAL_FOLDERS",
    "check_classes",
    "class_name",
    "find_splits",
    "image_files",
    "list_images",
    "load_folder",
    "most_common_shape",
    "printable",
    "split_images",
]

VAL_FOLDERS = ("val", "valid", "validation")
"""Names a validation split's folder may have next to ``train/``."""
_JUNK = frozenset({"__macosx", "thumbs.db", "desktop.ini"})  # written by macOS zip and Windows Explorer

Size = int | tuple[int, int]


def find_splits(root: str | os.PathLike) -> dict[str, Path]:
    """The split folders of the dataset at ``root``: ``{"train": ...}`` plus ``"val"`` and ``"test"`` if present.

    ``root/train/`` holding folders makes a split layout; otherwise ``root`` itself holds the class folders.

    Raises:
        DataNotFoundError: ``root`` does not exist or is not a folder.
        DataError: next to ``train/`` there are folders that are no split, or two validation folders.
    """
    base = Path(root).expanduser()
    if not base.is_dir():
        found = "a file" if base.exists() else "nothing"
        raise DataNotFoundError(f"{base}: expected a folder of class folders (or of train/, val/, test/), found "
                                f"{found}; pass --data.root pointing at the dataset folder")  # fmt: skip
    train = base / "train"
    if not (train.is_dir() and any(entry.is_dir() for entry in _visible(train))):
        return {"train": base}
    folders = [Path(entry.path) for entry in _visible(base) if entry.is_dir()]
    vals = [entry for entry in folders if entry.name in VAL_FOLDERS]
    others = [entry.name for entry in folders if entry.name not in ("train", "test", *VAL_FOLDERS)]
    if others or len(vals) > 1:
        extra = ", ".join(f"{name}/" for name in others) or " and ".join(f"{v.name}/" for v in vals)
        raise DataError(f"{base}: expected train/ with at most one of val/, valid/, validation/ and a test/ next to "
                        f"it, found also {extra}; move the extra folders out of {base}")  # fmt: skip
    splits = {"train": train, **({"val": vals[0]} if vals else {})}
    if (base / "test").is_dir():
        splits["test"] = base / "test"
    return splits


def list_images(folder: str | os.PathLike) -> tuple[list[Path], list[int], list[str]]:
    """The images of one split folder, ``folder/<class>/**/*``: files, their labels and the class names.

    Classes are the visible subfolders in sorted order (labels index into them); files are sorted within each
    class, and subfolders of a class folder are searched too. A class folder name that is not valid UTF-8 is kept,
    its class named with ``\\xNN`` escapes for the undecodable bytes.

    Raises:
        DataNotFoundError: ``folder`` holds no class folders.
        DataError: a class folder holds no images, or an entry is no image (named in the message).
    """
    folder = Path(folder)
    class_dirs = _class_folders(folder)
    files: list[Path] = []
    labels: list[int] = []
    top = folder.stat()
    for label, class_dir in enumerate(class_dirs):
        found = image_files(class_dir, {(top.st_dev, top.st_ino): folder})
        if not found:
            hidden = sorted(p.name for p in class_dir.iterdir() if _skipped(p.name))
            holds = f"only skipped files ({', '.join(hidden[:3])})" if hidden else "nothing"
            raise DataError(f"{class_dir}: expected images in every class folder, found {holds}; add images or "
                            "remove the folder")  # fmt: skip
        files += found
        labels += [label] * len(found)
    return files, labels, [class_name(path) for path in class_dirs]


def class_name(path: Path) -> str:
    """The class name of a class folder: its name, with ``\\xNN`` for bytes that are not valid UTF-8."""
    return printable(path.name)


def printable(path: str | os.PathLike) -> str:
    """``path`` as text any UTF-8 output can hold: bytes of a file name that are not UTF-8 become ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _class_folders(folder: Path) -> list[Path]:
    folders = sorted((Path(entry.path) for entry in _visible(folder) if entry.is_dir()), key=class_name)
    if not folders:
        raise DataNotFoundError(f"{folder}: expected one folder per class holding images (root/<class>/*.png), "
                                "found none; pass --data.root pointing at such a folder")  # fmt: skip
    return folders


def _skipped(name: str) -> bool:
    return name.startswith(".") or name.lower() in _JUNK


def _visible(folder: Path) -> list[os.DirEntry]:
    # A DirEntry knows from the listing itself whether it is a file or a folder: no stat() per file.
    with os.scandir(folder) as entries:
        return sorted((entry for entry in entries if not _skipped(entry.name)), key=lambda entry: entry.name)


def image_files(folder: Path, ancestors: dict[tuple[int, int], Path]) -> list[Path]:
    """Image files under ``folder``, recursively; ``ancestors`` are the folders above it, to catch link loops."""
    stat = folder.stat()
    key = (stat.st_dev, stat.st_ino)
    if key in ancestors:
        raise DataError(f"{folder}: expected a folder of images, found a link back to {ancestors[key]} (a loop); "
                        "remove the link")  # fmt: skip
    ancestors = {**ancestors, key: folder}
    files = []
    for entry in _visible(folder):
        path = Path(entry.path)
        if entry.is_dir():
            files += image_files(path, ancestors)
        elif not entry.is_file():  # listed but no file: a dangling link, a link to itself, a socket...
            found = "a dangling link" if entry.is_symlink() else "no regular file"
            raise DataError(f"{path}: expected a readable image, found {found}; fix or remove it")
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            files.append(path)
        else:
            raise DataError(
                f"{path}: expected only images ({', '.join(IMAGE_SUFFIXES)}) in {folder}, found "
                f"a {path.suffix or 'suffix-less'} file; move it out of the dataset folder"
            )
    return files


def load_folder(
    root: str | os.PathLike, split: str = "train", image_size: Size | None = None, channels: int | None = None
) -> ImageSet:
    """Load one split of a labelled image folder (layouts: :func:`find_splits`), decoded and cached.

    Args:
        root: The dataset folder.
        split: ``"train"``, ``"val"`` or ``"test"``.
        image_size: Side (or ``(height, width)``) every image is resized to; ``None`` = the most common size of the
            training images (so every split gets the same size).
        channels: 1 or 3; ``None`` = the most common channel count of the training images.

    Raises:
        DataNotFoundError: ``root`` or the split folder does not exist, or it has no class folders.
        DataError: a split's classes are not the training split's, or a file is bad (named in the message).
    """
    splits = find_splits(root)
    if split not in splits:
        base = Path(root).expanduser()
        raise DataNotFoundError(f"{base}: expected a {split}/ folder of class folders next to train/, found none; "
                                f"add {base / split}/<class>/ images")  # fmt: skip
    classes = check_classes(splits)
    files, labels = split_images(splits[split], classes)
    size = (image_size, image_size) if isinstance(image_size, int) else image_size
    # The classes are part of the key: a val/test split's labels change when train/ gains or loses a class.
    options = {"image_size": list(size) if size else None, "channels": channels, "classes": classes}

    def build() -> ImageSet:
        shape, chans = size, channels
        if shape is None or chans is None:  # only on a cache miss: the size pass opens every training file
            common_shape, common_channels = most_common_shape(files if split == "train" else
                                                               list_images(splits["train"])[0])  # fmt: skip
            shape, chans = shape or common_shape, chans or common_channels
        images = decode_images(files, chans, tuple(shape), what=str(splits[split]))
        return ImageSet(name="folder", split=split, images=images, labels=torch.tensor(labels, dtype=torch.int64),
                        classes=classes, source=splits[split])  # fmt: skip

    return load_or_build("folder", split, files, options, build, accept=lambda imageset: None)


def check_classes(splits: dict[str, Path]) -> list[str]:
    """The training split's class names, after checking every other split's against them."""
    train = [class_name(path) for path in _class_folders(splits["train"])]
    if len(train) < 2:
        raise DataError(f"{splits['train']}: expected at least 2 class folders, found 1 ({train[0]}); add a folder "
                        f"per class, or if {train[0]}/ holds the class folders, pass it as --data.root")  # fmt: skip
    for split, folder in splits.items():
        extra = sorted(set(map(class_name, _class_folders(folder))) - set(train))
        if split != "train" and extra:
            missing = sorted(set(train) - set(map(class_name, _class_folders(folder))))
            also = f" and lacks {', '.join(missing)}" if missing else ""
            raise DataError(f"{folder}: expected the classes of {splits['train']}, found also {', '.join(extra)}"
                            f"{also}; rename or remove the class folders that differ")  # fmt: skip
    return train


def split_images(folder: str | os.PathLike, classes: list[str]) -> tuple[list[Path], list[int]]:
    """The images of one split folder labelled by the training ``classes`` (a split may lack some of them)."""
    files, labels, own = list_images(folder)
    if own != classes:  # a val/test split lacking some classes: look its labels up by name
        index = {name: i for i, name in enumerate(classes)}
        labels = [index[own[label]] for label in labels]
    return files, labels


def most_common_shape(files: list[Path]) -> tuple[tuple[int, int], int]:
    """The most common ``(height, width)`` and channel count among ``files`` (headers only, on all cores)."""
    shapes = Counter(shape for chunk in map_chunks(_probe_chunk, files, None, "reading image sizes") for shape in chunk)
    sizes, channels = Counter(), Counter()
    for (height, width, chans), count in shapes.items():
        sizes[(height, width)] += count
        channels[chans] += count
    return sizes.most_common(1)[0][0], channels.most_common(1)[0][0]


def _probe_chunk(paths: list[Path]) -> list[tuple[int, int, int]]:
    return [probe_image(path) for path in paths]
