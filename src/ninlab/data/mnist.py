"""Fashion-MNIST and MNIST: four IDX files each, found locally or downloaded from the official mirrors."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ninlab.data.cache import load_or_build
from ninlab.data.checksum import enforcer, md5_bytes
from ninlab.data.download import download_file
from ninlab.data.idx import decode_idx, read_idx_bytes
from ninlab.data.imageset import ImageSet
from ninlab.data.locate import Place, cache_dir, candidate_dirs, not_found
from ninlab.errors import DataError

__all__ = ["IDX_DATASETS", "IdxDataset", "IdxFile", "load_idx_dataset"]


@dataclass(frozen=True)
class IdxFile:
    """One official file: its hyphenated name without ``.gz``, the md5 of the official ``.gz`` and of its content.

    The content md5 is what ninlab checks, so a copy re-compressed by a distribution (Debian's gz wrappers differ from
    the official ones) or stored uncompressed still verifies.
    """

    stem: str
    gz_md5: str
    content_md5: str

    def names(self) -> list[str]:
        """Accepted file names: official hyphenated and dotted (``train-images.idx3-ubyte``), plain or gzipped."""
        dotted = self.stem.replace("-idx", ".idx")
        return [self.stem + ".gz", self.stem, dotted + ".gz", dotted]


@dataclass(frozen=True)
class IdxDataset:
    """An MNIST-style dataset: classes, download mirror, and (images, labels) files per split."""

    name: str
    classes: tuple[str, ...]
    url: str
    splits: dict[str, tuple[IdxFile, IdxFile]]


FASHION_MNIST = IdxDataset(
    name="fashion-mnist",
    classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    splits={
        "train": (
            IdxFile("train-images-idx3-ubyte", "8d4fb7e6c68d591d4c3dfef9ec88bf0d", "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
            IdxFile("train-labels-idx1-ubyte", "25c81989df183df01b3e8a0aad5dffbe", "9018921c3c673c538a1fc5bad174d6f9"),
        ),
        "test": (
            IdxFile("t10k-images-idx3-ubyte", "bef4ecab320f06d8554ea6380940ec79", "8181f5470baa50b63fa0f6fddb340f0a"),
            IdxFile("t10k-labels-idx1-ubyte", "bb300cfdad3c16e7a12a480ee83cd310", "15d484375f8d13e6eb1aabb0c3f46965"),
        ),
    },
)

MNIST = IdxDataset(
    name="mnist",
    classes=tuple(str(digit) for digit in range(10)),
    url="https://ossci-datasets.s3.amazonaws.com/mnist/",
    splits={
        "train": (
            IdxFile("train-images-idx3-ubyte", "f68b3c2dcbeaaa9fbdd348bbdeb94873", "6bbc9ace898e44ae57da46a324031adb"),
            IdxFile("train-labels-idx1-ubyte", "d53e105ee54ea40749a09fcbcd1e9432", "a25bea736e30d166cdddb491f175f624"),
        ),
        "test": (
            IdxFile("t10k-images-idx3-ubyte", "9fb629c4189551a2d022fa330f9573f3", "2646ac647ad5339dbf082846283269ea"),
            IdxFile("t10k-labels-idx1-ubyte", "ec29112dd5afa0611ce80d1b7f02629c", "27ae3e4e09519cfbb04c329615203637"),
        ),
    },
)

IDX_DATASETS = {spec.name: spec for spec in (FASHION_MNIST, MNIST)}


def load_idx_dataset(
    spec: IdxDataset, split: str, root: str | os.PathLike | None, download: bool, verify: bool | None
) -> ImageSet:
    """Load one split of ``spec``: locate (or download) its two files, then decode them or reuse the cache."""
    files = spec.splits[split]
    found = _locate(spec, files, root)
    if found is None and download:
        found = _download(spec, files)
    if found is None:
        wanted = " and ".join(f"{file.stem}[.gz]" for file in files)
        raise not_found(spec.name, wanted, spec.name, root)
    (images_path, labels_path), origin = found
    return load_or_build(
        spec.name,
        split,
        [images_path, labels_path],
        {},
        lambda: _decode(spec, split, files, images_path, labels_path),
        enforcer(verify, origin),
    )


def _locate(spec: IdxDataset, files: tuple[IdxFile, IdxFile], root) -> tuple[tuple[Path, Path], str] | None:
    for place in candidate_dirs(spec.name, root):
        paths = [_first_existing(place, file) for file in files]
        if all(paths):
            return (paths[0], paths[1]), place.origin
    return None


def _first_existing(place: Place, file: IdxFile) -> Path | None:
    return next((place.path / name for name in file.names() if (place.path / name).is_file()), None)


def _download(spec: IdxDataset, files: tuple[IdxFile, IdxFile]) -> tuple[tuple[Path, Path], str]:
    target = cache_dir() / spec.name
    paths = [download_file(spec.url + file.stem + ".gz", target / (file.stem + ".gz"), file.gz_md5) for file in files]
    return (paths[0], paths[1]), "cache"


def _decode(spec: IdxDataset, split: str, files: tuple[IdxFile, IdxFile], images_path: Path, labels_path: Path):
    images_bytes, labels_bytes = read_idx_bytes(images_path), read_idx_bytes(labels_path)
    images = decode_idx(images_bytes, images_path, ndim=3)
    labels = decode_idx(labels_bytes, labels_path, ndim=1)
    if images.dtype != "uint8" or labels.dtype != "uint8":
        raise DataError(
            f"{images_path}: expected uint8 images and labels, found {images.dtype} and {labels.dtype}; "
            "this is not an MNIST-style file"
        )
    if len(images) != len(labels):
        raise DataError(
            f"{labels_path}: expected {len(images)} labels to match {images_path.name}, found "
            f"{len(labels)}; the image and label files come from different splits or versions"
        )
    verified = (md5_bytes(images_bytes), md5_bytes(labels_bytes)) == (files[0].content_md5, files[1].content_md5)
    return ImageSet(
        name=spec.name,
        split=split,
        # from_numpy shares the read-only decoded buffer; the copy makes the tensor own writable memory.
        images=torch.from_numpy(images.copy()).unsqueeze(1),
        labels=torch.from_numpy(labels.astype("int64")),
        classes=list(spec.classes),
        source=images_path.parent,
        checksum="verified" if verified else "mismatch",
    )
