"""The index of a packed dataset (``index.json``): what every split holds, shard by shard, and where shards live.

A packed dataset is a folder (or a URL prefix) holding ``index.json`` and, per split, WebDataset tar shards named
``<split>/<split>-NNNNNN.tar``. Each sample is two members: the image, already at the packed size and channel
count, as ``<key>.npy`` (its raw uint8 pixels, C x H x W, in NumPy's format: nothing to decode) or ``<key>.png``
(lossless and smaller, decoded per sample), as the index's ``encoding`` says; and ``<key>.cls`` (its label, decimal
ASCII). ``<key>`` is the sample's 8-digit position in its split. The index is written last, so a folder without
one is an unfinished pack.

Shard names are checked against that exact pattern before they are joined to the root, so an index from a stranger
can neither reach files outside the dataset nor put shell syntax into a ``pipe:`` command.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from webdataset import gopen

from ninlab.errors import DataError, DataNotFoundError

__all__ = ["ENCODINGS", "FORMAT", "INDEX_NAME", "SPLIT_NAMES", "VERSION", "ShardIndex", "ShardInfo", "read_index",
           "shard_url"]  # fmt: skip

FORMAT = "ninlab-shards"
VERSION = 1
INDEX_NAME = "index.json"
SPLIT_NAMES = ("train", "val", "test")
ENCODINGS = ("npy", "png")
SHARD_NAME = re.compile(r"(train|val|test)/(train|val|test)-\d{6}\.tar")
_MAX_INDEX_BYTES = 64 << 20  # a million shards' records; anything larger is not an index


@dataclass(frozen=True)
class ShardInfo:
    """One shard: its name relative to the root, its sample count, size in bytes and sha256."""

    name: str
    count: int
    bytes: int
    sha256: str


@dataclass(frozen=True)
class ShardIndex:
    """A packed dataset's index.

    Attributes:
        root: Where the shards live: a folder, an ``http(s)://`` prefix or a ``pipe:`` command with ``{}``.
        classes: Class names in label order.
        channels: 1 (grey) or 3 (RGB).
        height: Image height of every sample.
        width: Image width of every sample.
        hflip: Whether mirror images keep their class (from the source dataset).
        mean: Per-channel mean of the training split in [0, 1].
        std: Per-channel std of the training split.
        splits: Split name -> its shards, in order.
        pack: The options the pack was made with (compared on re-runs).
        encoding: How images are stored: ``"npy"`` (raw pixels) or ``"png"``.
    """

    root: str
    classes: list[str]
    channels: int
    height: int
    width: int
    hflip: bool
    mean: list[float]
    std: list[float]
    splits: dict[str, list[ShardInfo]]
    pack: dict
    encoding: str = "npy"

    def count(self, split: str) -> int:
        """Samples in ``split`` (0 when it was not packed)."""
        return sum(shard.count for shard in self.splits.get(split, []))

    def to_json(self) -> dict:
        """The JSON form written to ``index.json``."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "classes": self.classes,
            "channels": self.channels,
            "image_size": [self.height, self.width],
            "hflip": self.hflip,
            "encoding": self.encoding,
            "mean": self.mean,
            "std": self.std,
            "splits": {
                split: {"count": self.count(split), "shards": [vars(shard) for shard in shards]}
                for split, shards in self.splits.items()
            },
            "pack": self.pack,
        }


def shard_url(root: str, name: str) -> str:
    """Where shard (or index) ``name`` of a dataset at ``root`` is read from.

    ``root`` is a folder, a URL prefix (``https://host/data``) or a ``pipe:`` command holding ``{}`` where the
    name goes (``pipe:aws s3 cp s3://bucket/data/{} -``).
    """
    if root.startswith("pipe:"):
        return root.replace("{}", name)
    if "://" in root:
        return root.rstrip("/") + "/" + name
    return str(Path(root).expanduser() / name)


def is_local(root: str) -> bool:
    """Whether ``root`` is a folder on this machine (not a URL or a ``pipe:`` command)."""
    return not root.startswith("pipe:") and "://" not in root


def read_index(root: str) -> ShardIndex:
    """Read and check ``root/index.json``.

    Raises:
        DataNotFoundError: there is no index (nothing packed there, or the pack did not finish).
        DataError: the index is not valid JSON or not a ninlab shard index of a known version.
    """
    where = shard_url(root, INDEX_NAME)
    if root.startswith("pipe:") and "{}" not in root:
        raise DataError(f"{root}: expected a pipe: command with {{}} where the shard name goes, found none; "
                        "write e.g. 'pipe:aws s3 cp s3://bucket/data/{} -'")  # fmt: skip
    if is_local(root) and not Path(where).is_file():
        raise DataNotFoundError(f"{where}: expected the index of a packed dataset, found none; pack one with "
                                f"`ninlab pack SOURCE {root}` (an unfinished one has no index: re-run it)")  # fmt: skip
    try:
        with gopen(where, "rb") as stream:
            raw = stream.read(_MAX_INDEX_BYTES + 1)
    except (OSError, ValueError) as error:
        raise DataNotFoundError(f"{where}: expected a readable shard index, found {error}; check the path") from error
    if len(raw) > _MAX_INDEX_BYTES:
        raise DataError(f"{where}: expected a shard index under {_MAX_INDEX_BYTES >> 20} MB, found more; re-pack")
    try:
        data = json.loads(raw)
        return _parse(root, data)
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise DataError(f"{where}: expected a {FORMAT} index version {VERSION} (as `ninlab pack` writes), found "
                        f"an invalid one ({error}); re-pack the dataset") from error  # fmt: skip


def _parse(root: str, data: dict) -> ShardIndex:
    if data["format"] != FORMAT or data["version"] != VERSION:
        raise ValueError(f"format {data['format']!r} version {data['version']!r}")
    classes = [str(name) for name in data["classes"]]
    channels = int(data["channels"])
    height, width = (int(side) for side in data["image_size"])
    if not classes or channels not in (1, 3) or not (0 < height <= 65536 and 0 < width <= 65536):
        raise ValueError(f"{len(classes)} classes, {channels} channels, size {height}x{width}")
    mean, std = [float(v) for v in data["mean"]], [float(v) for v in data["std"]]
    if len(mean) != channels or len(std) != channels or min(std) <= 0:
        raise ValueError(f"mean {mean} / std {std} for {channels} channels")
    splits = {}
    for split, record in data["splits"].items():
        if split not in SPLIT_NAMES:
            raise ValueError(f"unknown split {split!r}")
        shards = [ShardInfo(str(s["name"]), int(s["count"]), int(s["bytes"]), str(s["sha256"]))
                  for s in record["shards"]]  # fmt: skip
        for shard in shards:
            if not SHARD_NAME.fullmatch(shard.name) or not shard.name.startswith(f"{split}/{split}-"):
                raise ValueError(f"shard name {shard.name!r} (expected {split}/{split}-NNNNNN.tar)")
            if shard.count < 1 or shard.bytes < 1 or not re.fullmatch(r"[0-9a-f]{64}", shard.sha256):
                raise ValueError(f"shard {shard.name}: count {shard.count}, bytes {shard.bytes}, "
                                 f"sha256 {shard.sha256!r}")  # fmt: skip
        if int(record["count"]) != sum(shard.count for shard in shards):
            raise ValueError(f"{split} count {record['count']} is not the sum of its shards' counts")
        splits[split] = shards
    if not splits.get("train"):
        raise ValueError("no train split")
    encoding = data.get("encoding", "png")  # packs written before raw pixels were stored only PNGs
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding {encoding!r} (expected one of {', '.join(ENCODINGS)})")
    return ShardIndex(root, classes, channels, height, width, bool(data["hflip"]), mean, std, splits,
                      dict(data.get("pack") or {}), encoding)  # fmt: skip


def check_local_shards(index: ShardIndex, split: str) -> None:
    """Refuse, before training starts, a local shard that is missing or whose size differs from the index.

    (Contents are checked against the sha256 while they stream; remote shards are checked only then.)
    """
    if not is_local(index.root):
        return
    for shard in index.splits.get(split, []):
        path = Path(shard_url(index.root, shard.name))
        if not path.is_file():
            raise DataNotFoundError(f"{path}: expected shard {shard.name} named in the index, found no file; "
                                    "copy it back or re-pack the dataset")  # fmt: skip
        size = path.stat().st_size
        if size != shard.bytes:
            raise DataError(f"{path}: expected {shard.bytes} bytes as the index says, found {size} (truncated or "
                            "replaced); copy it again or re-pack the dataset")  # fmt: skip
