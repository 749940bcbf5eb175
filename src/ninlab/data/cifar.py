"""CIFAR-10 and CIFAR-100, python version: the official ``.tar.gz`` or its extracted directory.

The batches are Python pickles, and unpickling can run arbitrary code, so ninlab never uses :func:`pickle.load`
on them. :class:`_CifarUnpickler` resolves only the globals a CIFAR batch needs (numpy's array reconstructor,
``ndarray`` and ``dtype``; dicts, lists, ints and strings need none), and any other global, ``os.system`` for
instance, raises :class:`DataError` before it is imported. Under the strict checksum policy each batch's md5 is also
checked before it is unpickled at all.

Archives are read in memory, member by member, never extracted. Memory stays bounded whatever an archive claims: at
most :data:`_MAX_MEMBERS` members, none declaring more than the largest official member and all together no more than
:data:`_MAX_ARCHIVE_BYTES`, checked on each member's header before its bytes are inflated. Every member is first
screened with the
standard library's ``tarfile.data_filter`` (the ``filter="data"`` policy) plus a refusal of absolute names, so an
archive holding absolute paths, ``..`` components, links leaving the archive or device files is refused as a whole.
"""

from __future__ import annotations

import io
import os
import pickle
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ninlab.data.cache import load_or_build
from ninlab.data.checksum import enforcer, is_strict, md5_bytes
from ninlab.data.download import download_file
from ninlab.data.imageset import ImageSet
from ninlab.data.locate import cache_dir, candidate_dirs, not_found
from ninlab.errors import DataError

__all__ = ["CIFAR10", "CIFAR100", "CIFAR_DATASETS", "CifarDataset", "load_cifar", "read_cifar"]

# Python 2 wrote the official pickles with numpy.core; numpy >= 2 writes numpy._core. Both names map to the
# running numpy's objects (ndarray.__reduce__ exposes the reconstructor under either version).
_RECONSTRUCT = np.zeros(0).__reduce__()[0]
_MAX_MEMBERS = 64  # the official archives hold 8 (CIFAR-10) and 5 (CIFAR-100) plus their folder
_MAX_ARCHIVE_BYTES = 256 << 20  # both official archives inflate to about 178 MiB
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


@dataclass(frozen=True)
class CifarDataset:
    """One CIFAR variant: archive name, md5 and URL, batch members per split and their md5s, label keys."""

    name: str
    archive: str
    archive_md5: str
    folder: str
    members: dict[str, tuple[str, ...]]
    member_md5: dict[str, str]
    meta: str
    label_key: str
    names_key: str
    max_member_bytes: int  # the largest official member, rounded up: a member declaring more is refused unread

    @property
    def url(self) -> str:
        """The official download URL of the archive."""
        return f"https://www.cs.toronto.edu/~kriz/{self.archive}"


CIFAR10 = CifarDataset(
    name="cifar10",
    archive="cifar-10-python.tar.gz",
    archive_md5="c58f30108f718f92721af3b95e74349a",
    folder="cifar-10-batches-py",
    members={"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)},
    member_md5={
        "data_batch_1": "c99cafc152244af753f735de768cd75f",
        "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
        "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
        "data_batch_4": "634d18415352ddfa80567beed471001a",
        "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
        "test_batch": "40351d587109b95175f43aff81a1287e",
        "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
    },
    meta="batches.meta",
    label_key="labels",
    names_key="label_names",
    max_member_bytes=32 << 20,  # a batch: 10000 x 3072 image bytes plus labels and file names, 29.6 MiB
)

CIFAR100 = CifarDataset(
    name="cifar100",
    archive="cifar-100-python.tar.gz",
    archive_md5="eb9058c3a382ffc7106e4002c42a8d85",
    folder="cifar-100-python",
    members={"train": ("train",), "test": ("test",)},
    member_md5={
        "train": "16019d7e3df5f24257cddd939b257f8d",
        "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
        "meta": "7973b15100ade9c7d40fb424638fde48",
    },
    meta="meta",
    label_key="fine_labels",
    names_key="fine_label_names",
    max_member_bytes=160 << 20,  # train: 50000 x 3072 image bytes plus labels and file names, about 150 MiB
)

CIFAR_DATASETS = {spec.name: spec for spec in (CIFAR10, CIFAR100)}


class _CifarUnpickler(pickle.Unpickler):
    """An unpickler that builds only dicts, lists, numbers, strings and numpy arrays."""

    def __init__(self, data: bytes, where: str) -> None:
        # latin1 is how numpy documents reading Python 2 array pickles: str payloads map byte for byte.
        super().__init__(io.BytesIO(data), encoding="latin1")
        self.where = where

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise DataError(
                f"{self.where}: expected a CIFAR batch holding only numpy arrays, lists and strings, "
                f"found a reference to {module}.{name}; the file was tampered with, delete it"
            ) from None


def load_cifar(
    spec: CifarDataset, split: str, root: str | os.PathLike | None, download: bool, verify: bool | None
) -> ImageSet:
    """Load one split of ``spec`` from the first extracted folder or archive found, downloading it if allowed."""
    found = _locate(spec, root)
    if found is None and download:
        found = download_file(spec.url, cache_dir() / spec.name / spec.archive, spec.archive_md5), "cache"
    if found is None:
        raise not_found(spec.name, f"{spec.archive} or an extracted {spec.folder}/", spec.name, root)
    source, origin = found
    accept, strict = enforcer(verify, origin), is_strict(verify, origin)
    members = [*spec.members[split], spec.meta]
    sources = [source / member for member in members] if source.is_dir() else [source]
    return load_or_build(spec.name, split, sources, {}, lambda: read_cifar(spec, split, source, strict), accept)


def _locate(spec: CifarDataset, root) -> tuple[Path, str] | None:
    for place in candidate_dirs(spec.name, root):
        folder = place.path if place.path.name == spec.folder else place.path / spec.folder
        if folder.is_dir():
            return folder, place.origin
        if (place.path / spec.archive).is_file():
            return place.path / spec.archive, place.origin
    return None


def read_cifar(spec: CifarDataset, split: str, source: Path, strict: bool = True) -> ImageSet:
    """Decode ``split`` of ``spec`` from ``source``: an extracted folder or a ``.tar.gz`` archive.

    Args:
        spec: :data:`CIFAR10` or :data:`CIFAR100`.
        split: ``"train"`` or ``"test"``.
        source: The ``cifar-*-batches-py``/``cifar-100-python`` folder or the archive.
        strict: Refuse (before unpickling) any batch whose md5 is not the official one.

    Raises:
        DataError: a missing or malformed batch, an unsafe archive member, a disallowed pickle global, or (strict)
            a checksum mismatch.
    """
    names = [*spec.members[split], spec.meta]
    limit = spec.max_member_bytes
    raw = _read_folder(source, names, limit) if source.is_dir() else _read_archive(source, spec.folder, names, limit)
    verified = all(md5_bytes(raw[name]) == spec.member_md5[name] for name in names)
    if strict and not verified:
        bad = next(name for name in names if md5_bytes(raw[name]) != spec.member_md5[name])
        raise DataError(
            f"{source}: expected the official {spec.name} member {bad} (md5 {spec.member_md5[bad]}), "
            f"found different content; download {spec.archive} again, or pass verify=False"
        )
    meta = _unpickle(raw[spec.meta], f"{source}:{spec.meta}")
    classes = [_text(name) for name in _field(meta, spec.names_key, f"{source}:{spec.meta}")]
    images, labels = [], []
    for name in spec.members[split]:
        where = f"{source}:{name}"
        batch = _unpickle(raw[name], where)
        data = _field(batch, "data", where)
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            found = f"{getattr(data, 'dtype', type(data).__name__)} {getattr(data, 'shape', '')}"
            raise DataError(f"{where}: expected uint8 data of shape N x 3072, found {found}; the batch is corrupt")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(_labels(_field(batch, spec.label_key, where), len(data), where))
    return ImageSet(
        name=spec.name,
        split=split,
        images=torch.from_numpy(np.concatenate(images)),
        labels=torch.from_numpy(np.concatenate(labels)),
        classes=classes,
        source=source,
        checksum="verified" if verified else "mismatch",
    )


def _read_folder(folder: Path, names: list[str], limit: int) -> dict[str, bytes]:
    raw = {}
    for name in names:
        try:
            if (size := (folder / name).stat().st_size) > limit:
                raise DataError(f"{folder / name}: expected a batch of at most {limit} bytes, found {size}; delete it")
            raw[name] = (folder / name).read_bytes()
        except OSError as error:
            raise DataError(
                f"{folder / name}: expected a CIFAR batch file, found {error}; extract the official archive again"
            ) from error
    return raw


def _read_archive(archive: Path, folder: str, names: list[str], limit: int) -> dict[str, bytes]:
    wanted = {f"{folder}/{name}": name for name in names}
    raw, count, total = {}, 0, 0
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                count, total = count + 1, total + member.size
                _screen(member, archive)
                _bound(member, archive, count, total, limit)
                if member.name in wanted and member.isfile():
                    raw[wanted[member.name]] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
        raise DataError(f"{archive}: expected a readable .tar.gz archive, found {error}; download it again") from error
    missing = [name for name in names if name not in raw]
    if missing:
        raise DataError(
            f"{archive}: expected members {', '.join(f'{folder}/{m}' for m in missing)}, found none; "
            "this is not the official python-version archive"
        )
    return raw


def _bound(member: tarfile.TarInfo, archive: Path, count: int, total: int, limit: int) -> None:
    """Refuse an archive that would inflate beyond what any official CIFAR archive holds."""
    name, size, most = member.name, member.size, _MAX_ARCHIVE_BYTES
    found = (f"more than {_MAX_MEMBERS} members" if count > _MAX_MEMBERS
             else f"member {name!r} declaring {size} bytes (official: under {limit})" if size > limit
             else f"members declaring over {most} bytes" if total > most else "")  # fmt: skip
    if found:
        raise DataError(f"{archive}: expected an official CIFAR archive, found {found}; it is a decompression bomb "
                        "or not the official archive, delete it")  # fmt: skip


def _screen(member: tarfile.TarInfo, archive: Path) -> None:
    # data_filter would silently strip a leading "/", but no official archive has one, so it is refused outright.
    try:
        if os.path.isabs(member.name) or member.name.startswith("/"):
            raise tarfile.AbsolutePathError(member)
        tarfile.data_filter(member, str(archive.parent))
    except tarfile.FilterError as error:
        raise DataError(
            f"{archive}: expected archive members inside one folder, found unsafe member "
            f"{member.name!r} ({error}); the archive was tampered with, delete it"
        ) from None


def _unpickle(data: bytes, where: str):
    try:
        return _CifarUnpickler(data, where).load()
    except DataError:
        raise
    except Exception as error:
        # Malformed pickles fail in many ways (UnpicklingError, EOFError, numpy's ValueError): all mean corrupt.
        raise DataError(f"{where}: expected a CIFAR pickle, found unreadable data ({error}); it is corrupt") from error


def _field(mapping, key: str, where: str):
    if not isinstance(mapping, dict):
        raise DataError(f"{where}: expected a dict, found {type(mapping).__name__}; this is not a CIFAR batch")
    for candidate in (key, key.encode()):
        if candidate in mapping:
            return mapping[candidate]
    raise DataError(f"{where}: expected key {key!r}, found keys {sorted(map(str, mapping))}; this is not a CIFAR batch")


def _labels(value, count: int, where: str) -> np.ndarray:
    try:
        labels = np.asarray(value)
    except (ValueError, TypeError):  # ragged nesting
        labels = np.asarray([], dtype=object)
    # Integers only: floats, strings, or ints too big for int64 (object arrays) would be silently coerced or crash.
    if labels.shape != (count,) or labels.dtype.kind not in "iu":
        found = f"{labels.dtype} of shape {labels.shape}"
        raise DataError(f"{where}: expected {count} labels, all integers, found {found}; the batch is corrupt")
    return labels.astype(np.int64)


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
