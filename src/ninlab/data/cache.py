"""The decoded-tensor cache: each split is decoded once and reloaded in well under a second.

Entries are written with :func:`torch.save` as a dict of plain tensors, strings and lists, and read back with
``torch.load(weights_only=True)``, which refuses anything that would run code: one file per split (images, labels
and class names together, so an entry can never be half-updated), no pickle of arbitrary objects, and a read of
Fashion-MNIST's 47 MB of uint8 in tens of milliseconds. (``.npy`` with ``allow_pickle=False`` is equally safe but
needs one file per array plus a side file for class names.)

The key of an entry covers the dataset name, split, reader options and every source file's path, size and
``mtime_ns``: replacing or editing a source changes the key, and the stale entry is removed when the new one is
written. Writes go to a temporary file that is moved into place, so readers never see a partial entry.

The cache is only an optimisation: a cache directory that cannot be written (full, read-only, over quota) costs
one warning line, and the decoded set is used without being cached.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from ninlab._runtime.tensor_files import save_atomically
from ninlab.data.imageset import ImageSet
from ninlab.data.locate import CACHE_ENV, cache_dir

__all__ = ["cache_entry", "load_or_build"]

_FORMAT = 1
_log = logging.getLogger(__name__)


def cache_entry(name: str, split: str, sources: Sequence[Path], options: dict) -> Path:
    """The cache file for ``name``/``split`` decoded from ``sources`` with reader ``options``."""
    stats, folders = [], {}
    for source in sources:
        stat = source.stat()
        # Resolved once per folder, not per file: an image folder lists tens of thousands of files in a few folders.
        folder = folders.get(source.parent) or folders.setdefault(source.parent, source.parent.resolve())
        stats.append([str(folder / source.name), stat.st_size, stat.st_mtime_ns])
    key = json.dumps([_FORMAT, name, split, options, stats], sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    return cache_dir() / "decoded" / f"{name}-{split}-{digest}.pt"


def load_or_build(
    name: str,
    split: str,
    sources: Sequence[Path],
    options: dict,
    build: Callable[[], ImageSet],
    accept: Callable[[ImageSet], None],
) -> ImageSet:
    """Return the cached decode of ``sources``, or ``build()`` it and cache it.

    Args:
        name: Dataset name.
        split: Split name.
        sources: The files the split is decoded from; their paths, sizes and mtimes key the entry.
        options: Reader options that change the decoded result (image size...); part of the key.
        build: Decodes the split; it raises on bad files, and then nothing is written.
        accept: Called on the built or cached set before it is written or returned; raises to refuse it (a
            checksum mismatch when checksums are enforced), so a refused set is never cached.
    """
    entry = cache_entry(name, split, sources, options)
    cached = _read(entry, name, split)
    if cached is not None:
        accept(cached)
        return cached
    imageset = build()
    accept(imageset)
    try:
        _write(entry, imageset)
    except OSError as error:
        where = error.filename or entry
        _log.warning(f"ninlab: warning: decoded {name}/{split} not cached, {where}: {error.strerror or error}; "
                     f"going on without the cache (free space there or point ${CACHE_ENV} elsewhere)")  # fmt: skip
    return imageset


def _read(entry: Path, name: str, split: str) -> ImageSet | None:
    try:
        payload = torch.load(entry, weights_only=True)
    except FileNotFoundError:
        return None
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError):
        # A damaged entry is only a cache miss: it is rebuilt from the sources and overwritten.
        return None
    if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
        return None
    source = payload["source"]
    return ImageSet(
        name=name,
        split=split,
        images=payload["images"],
        labels=payload["labels"],
        classes=list(payload["classes"]),
        source=Path(source) if source else None,
        checksum=payload["checksum"],
    )


def _write(entry: Path, imageset: ImageSet) -> None:
    entry.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": _FORMAT,
        "images": imageset.images.contiguous(),
        "labels": imageset.labels.contiguous(),
        "classes": list(imageset.classes),
        "source": str(imageset.source) if imageset.source else "",
        "checksum": imageset.checksum,
    }
    save_atomically(payload, entry)
    prefix = entry.name.rsplit("-", 1)[0] + "-"
    for stale in entry.parent.glob(f"{prefix}*.pt"):
        if stale != entry:
            stale.unlink(missing_ok=True)
