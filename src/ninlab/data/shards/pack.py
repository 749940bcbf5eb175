"""``pack``: a dataset decoded, resized and written as WebDataset shards plus an index, on every core, resumably.

Each shard is written to a hidden temporary file and renamed into place when complete (so a shard file that exists
is whole); the journal ``.pack-state.json`` then records it; ``index.json`` is written last. A re-run with the
same source and options keeps every shard the journal records (after checking its sha256) and writes the rest;
with other options it refuses, so a pack folder never mixes two packs.
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm
from webdataset import TarWriter

from ninlab._runtime.atomic import atomic_open
from ninlab.data.shards.index import ENCODINGS, INDEX_NAME, SPLIT_NAMES, ShardIndex, ShardInfo, read_index
from ninlab.data.shards.reader import npy_header
from ninlab.data.shards.sources import PackSource, carve_validation, decode_item, open_source, probe_items
from ninlab.errors import ConfigError, NinlabError

__all__ = ["pack"]

JOURNAL = ".pack-state.json"
_CHUNK = 64  # images per task: large enough to hide the pool's per-task cost, small enough to balance the cores
_TAR_OVERHEAD = 1800  # per sample: two 512-byte headers plus the padding of two members to 512 bytes


def pack(source: str, out: str | os.PathLike, *, image_size: int | None = None, channels: int | None = None,
         shard_size: int = 256 << 20, val_size: int | None = None, seed: int = 0, workers: int | None = None,
         encoding: str = "npy") -> ShardIndex:  # fmt: skip
    """Pack ``source`` (an image folder or a built-in dataset's name) into shards under ``out``.

    Args:
        source: A folder laid out as the folder dataset reads it, or a name such as ``fashion-mnist``.
        out: The output folder (created; must be empty, or hold an unfinished pack of the same source).
        image_size: Side every image is resized to; ``None`` = the most common size (folders) or the dataset's own.
        channels: 1 or 3; ``None`` = the most common (folders) or the dataset's own.
        shard_size: Target bytes per shard.
        val_size: Training images held out as the val split when the source has no ``val/``; ``None`` =
            ``min(5000, train // 10)``; 0 = no val split.
        seed: Seed of the val split and of the training samples' order in the shards.
        workers: Decoding processes; ``None`` = every core this process may use.
        encoding: ``"npy"``: raw pixels, read with no decode (training from shards then runs as fast as from
            memory); ``"png"``: lossless and smaller on disk (photos: about half), decoded per sample while training.

    Returns:
        The index written (or found, when ``out`` already holds this exact pack).
    """
    if channels not in (None, 1, 3):
        raise ConfigError(f"--channels must be 1 or 3, found {channels}")
    if encoding not in ENCODINGS:
        raise ConfigError(f"--encoding must be one of {', '.join(ENCODINGS)}, found {encoding!r}")
    if shard_size < 1 << 16:
        raise ConfigError(f"--shard-size must be at least 64KB, found {shard_size} bytes")
    out = Path(out).expanduser()
    created = not out.exists()
    try:
        return _pack(source, out, image_size, channels, shard_size, val_size, seed, workers, encoding)
    except NinlabError:
        if created:  # bad input: leave nothing behind (a killed or interrupted pack keeps its shards to resume)
            shutil.rmtree(out, ignore_errors=True)
        raise


def _pack(source, out: Path, image_size, channels, shard_size, val_size, seed, workers, encoding) -> ShardIndex:
    packed = open_source(source)
    train_count = len(packed.splits["train"].items)
    carve_validation(packed, min(5000, train_count // 10) if val_size is None else val_size, seed)
    order = np.random.default_rng(seed).permutation(len(packed.splits["train"].items))
    packed.splits["train"].items = [packed.splits["train"].items[i] for i in order]
    packed.splits["train"].labels = [packed.splits["train"].labels[i] for i in order]
    processes = workers or len(os.sched_getaffinity(0))
    with multiprocessing.get_context("fork").Pool(processes) as pool:  # fork: spawn would re-import torch per worker
        size, channels = _resolve_shape(packed, image_size, channels, pool)
        plan = {"source": packed.description, "fingerprint": packed.fingerprint, "image_size": list(size),
                "channels": channels, "val_size": val_size, "seed": seed, "shard_size": shard_size,
                "encoding": encoding,
                "counts": {split: len(s.items) for split, s in packed.splits.items()}}  # fmt: skip
        done = _existing(out, plan)
        if isinstance(done, ShardIndex):
            return done
        journal = done
        if "per_shard" not in journal["plan"]:
            journal["plan"]["per_shard"] = _per_shard(packed, size, channels, shard_size, encoding)
        _write_json(out / JOURNAL, journal)
        _write_shards(packed, out, journal, size, channels, encoding, pool)
    return _write_index(packed, out, journal, size, channels, encoding)


def _resolve_shape(packed: PackSource, image_size, channels, pool) -> tuple[tuple[int, int], int]:
    if packed.native_size is not None:
        return ((image_size, image_size) if image_size else packed.native_size), channels or packed.native_channels
    if image_size is not None and channels is not None:
        return (image_size, image_size), channels
    sizes, modes = {}, {}
    files = packed.splits["train"].items
    chunks = [files[i : i + _CHUNK * 4] for i in range(0, len(files), _CHUNK * 4)]
    for found_sizes, found_modes in tqdm(pool.imap(probe_items, chunks), total=len(chunks), desc="reading headers",
                                         unit="chunk", disable=None):  # fmt: skip
        for key, n in found_sizes.items():
            sizes[key] = sizes.get(key, 0) + n
        for key, n in found_modes.items():
            modes[key] = modes.get(key, 0) + n
    # Most common, ties to the first found: the folder reader's policy (dicts keep insertion order).
    size = (image_size, image_size) if image_size else max(sizes, key=sizes.get)
    return size, channels or max(modes, key=modes.get)


def _existing(out: Path, plan: dict) -> ShardIndex | dict:
    """The finished index of this exact pack, or the journal to continue (fresh when ``out`` is new)."""
    if (out / INDEX_NAME).is_file():
        index = read_index(str(out))
        if index.pack != {**plan, "per_shard": index.pack.get("per_shard")}:
            raise ConfigError(f"{out} holds a pack of other sources or options; pack into an empty folder or delete "
                              f"{out} first")  # fmt: skip
        return index
    if (out / JOURNAL).is_file():
        journal = json.loads((out / JOURNAL).read_text())
        if {k: v for k, v in journal.get("plan", {}).items() if k != "per_shard"} != plan:
            raise ConfigError(f"{out} holds an unfinished pack of other sources or options; re-run that pack, pack "
                              f"into an empty folder, or delete {out} first")  # fmt: skip
        for temporary in out.glob("*/.*.tmp"):  # what a killed pack was writing
            temporary.unlink(missing_ok=True)
        return journal
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out}: expected an empty or new folder to pack into, found other files; choose another")
    out.mkdir(parents=True, exist_ok=True)
    return {"plan": dict(plan), "shards": {}}


def _per_shard(packed: PackSource, size, channels: int, shard_size: int, encoding: str) -> int:
    """Samples per shard, from the mean encoded size of the first training images."""
    sample = packed.splits["train"].items[:128]
    image_bytes = np.mean([len(_encode_image(decode_item(item, size, channels), encoding)) for item in sample])
    return max(1, int(shard_size // (image_bytes + _TAR_OVERHEAD)))


def _encode_image(array: np.ndarray, encoding: str) -> bytes:
    """One decoded H x W x C image as the bytes of its shard member (see :mod:`ninlab.data.shards.index`)."""
    if encoding == "npy":
        height, width, channels = array.shape
        return npy_header(channels, height, width) + np.ascontiguousarray(array.transpose(2, 0, 1)).tobytes()
    buffer = io.BytesIO()
    Image.fromarray(array.squeeze(-1) if array.shape[-1] == 1 else array).save(buffer, format="PNG")
    return buffer.getvalue()


def _encode(task: tuple) -> tuple[list[bytes], np.ndarray]:
    """Decode and encode a chunk of items; also the chunk's per-channel 256-bin pixel histogram."""
    items, size, channels, encoding = task
    encoded, histogram = [], np.zeros((channels, 256), dtype=np.int64)
    for item in items:
        array = decode_item(item, size, channels)
        encoded.append(_encode_image(array, encoding))
        for c in range(channels):
            histogram[c] += np.bincount(array[..., c].ravel(), minlength=256)
    return encoded, histogram


def _write_shards(packed: PackSource, out: Path, journal: dict, size, channels: int, encoding: str, pool) -> None:
    per_shard = journal["plan"]["per_shard"]
    pending = []  # (split, shard number, first sample, end)
    for split, items in packed.splits.items():
        (out / split).mkdir(exist_ok=True)
        # Counts differ by at most one (no small last shard): a process's share is bounded by its smallest shards.
        shards = -(-len(items.items) // per_shard)
        bounds = [number * len(items.items) // shards for number in range(shards + 1)]
        for number in range(shards):
            if not _journaled(out, journal, _shard_name(split, number)):
                pending.append((split, number, bounds[number], bounds[number + 1]))
    tasks, owners = [], []
    for split, number, start, end in pending:
        for first in range(start, end, _CHUNK):
            tasks.append((packed.splits[split].items[first : min(first + _CHUNK, end)], size, channels, encoding))
            owners.append((split, number, start, end))
    total = sum(len(task[0]) for task in tasks)
    buffered: list[bytes] = []
    histogram = np.zeros((channels, 256), dtype=np.int64)
    with tqdm(total=total, desc=f"packing into {out}", unit="img", disable=None) as bar:
        for (encoded, chunk_histogram), (split, number, start, end) in zip(pool.imap(_encode, tasks), owners,
                                                                            strict=True):  # fmt: skip
            buffered += encoded
            histogram += chunk_histogram
            bar.update(len(encoded))
            if len(buffered) == end - start:
                labels = packed.splits[split].labels[start:end]
                journal["shards"][_shard_name(split, number)] = _write_tar(out, split, number, start, buffered, labels,
                                                                           encoding)  # fmt: skip
                journal["shards"][_shard_name(split, number)]["histogram"] = histogram.tolist()
                _write_json(out / JOURNAL, journal)
                buffered, histogram = [], np.zeros((channels, 256), dtype=np.int64)


def _shard_name(split: str, number: int) -> str:
    return f"{split}/{split}-{number:06d}.tar"


def _journaled(out: Path, journal: dict, name: str) -> bool:
    record = journal["shards"].get(name)
    path = out / name
    if record is None or not path.is_file() or path.stat().st_size != record["bytes"]:
        return False
    return _sha256(path) == record["sha256"]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _write_tar(out: Path, split: str, number: int, start: int, images: list[bytes], labels: list[int],
               encoding: str) -> dict:  # fmt: skip
    path = out / _shard_name(split, number)
    with atomic_open(path) as file:
        hashing = _HashingWriter(file)
        # mtime 0 and fixed owner: the same inputs give byte-identical shards, so a resumed pack equals a fresh one.
        with TarWriter(hashing, encoder=False, mtime=0, user="ninlab", group="ninlab") as writer:
            for offset, (image, label) in enumerate(zip(images, labels, strict=True)):
                writer.write({"__key__": f"{start + offset:08d}", encoding: image, "cls": str(label).encode()})
    return {"count": len(images), "bytes": hashing.size, "sha256": hashing.sha256.hexdigest()}


class _HashingWriter:
    """A write-only stream that hashes and counts what passes through to ``file``."""

    def __init__(self, file) -> None:
        self.file, self.sha256, self.size = file, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self.file.write(data)

    def flush(self) -> None:
        self.file.flush()


def _write_index(packed: PackSource, out: Path, journal: dict, size, channels: int, encoding: str) -> ShardIndex:
    splits, histogram = {}, np.zeros((channels, 256), dtype=np.int64)
    for split in (s for s in SPLIT_NAMES if s in packed.splits):
        names = sorted(name for name in journal["shards"] if name.startswith(f"{split}/"))
        splits[split] = [ShardInfo(name, **{k: v for k, v in journal["shards"][name].items() if k != "histogram"})
                         for name in names]  # fmt: skip
        if split == "train":
            histogram = sum((np.array(journal["shards"][name]["histogram"]) for name in names), histogram)
    values = np.arange(256) / 255
    total = histogram.sum(axis=1)
    mean = (histogram * values).sum(axis=1) / total
    std = np.sqrt((histogram * (values[None] - mean[:, None]) ** 2).sum(axis=1) / total)
    index = ShardIndex(str(out), packed.classes, channels, size[0], size[1], packed.hflip, mean.tolist(),
                       np.maximum(std, 1e-6).tolist(), splits, journal["plan"], encoding)  # fmt: skip
    _write_json(out / INDEX_NAME, index.to_json())
    (out / JOURNAL).unlink(missing_ok=True)
    return index


def _write_json(path: Path, data: dict) -> None:
    with atomic_open(path) as file:
        file.write(json.dumps(data, indent=1).encode())
