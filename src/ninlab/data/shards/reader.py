"""Reading one shard: its samples as uint8 arrays and labels, every byte checked against the index.

The tar is read as a stream (a local file, ``http(s)://`` or a ``pipe:`` command, opened by WebDataset's
``gopen``) and walked here rather than with WebDataset's sample pipeline because a shard is untrusted input:
WebDataset reads each member whole whatever its size and its default decoders unpickle ``.pyd``/``.pickle``
members. Here a member must be named ``<8 digits>.cls`` or ``.npy``/``.png`` (the index's encoding) and be no
larger than an image of the packed size can be; raw pixels must carry exactly the NumPy header of that size and
are then only viewed as an array (no decode: what makes streaming as fast as memory), a PNG is decoded only after
its header shows that size; the shard's sha256, byte count and sample count must match the index. Member names are
only compared, never used as paths.
"""

from __future__ import annotations

import functools
import hashlib
import io
import re
from collections.abc import Callable, Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError
from webdataset import gopen

from ninlab.data.shards.index import ShardIndex, ShardInfo, shard_url
from ninlab.errors import DataError

__all__ = ["npy_header", "read_shard"]

_MEMBER = re.compile(r"(\d{8})\.(npy|png|cls)")
_MAX_LABEL_BYTES = 16
_BLOCK = 512
_END = bytes(_BLOCK)  # a tar archive ends with zero blocks


class _HashingReader(io.RawIOBase):
    """A read-only stream that hashes and counts every byte read through it."""

    def __init__(self, stream) -> None:
        self.stream, self.sha256, self.size = stream, hashlib.sha256(), 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.stream.read(len(buffer))
        buffer[: len(data)] = data
        self.sha256.update(data)
        self.size += len(data)
        return len(data)


@functools.cache  # packing asks once per image, reading once per shard: always the same few shapes
def npy_header(channels: int, height: int, width: int) -> bytes:
    """The exact NumPy-format header (version 1.0, as ``np.save`` writes it) of one sample's uint8 C x H x W pixels."""
    buffer = io.BytesIO()
    header = {"descr": "|u1", "fortran_order": False, "shape": (channels, height, width)}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue()


def read_shard(index: ShardIndex, shard: ShardInfo) -> Iterator[tuple[int, np.ndarray, int]]:
    """Yield ``(key, image, label)`` for every sample of ``shard``: image uint8 ``C x H x W``, label an int.

    Raises:
        DataError: (after the samples read so far) the shard is truncated, holds unexpected or missing members,
            or its size, sample count or sha256 differ from the index.
    """
    url = shard_url(index.root, shard.name)
    fix = "re-copy the shard or re-pack the dataset"
    try:
        with gopen(url, "rb") as raw:
            hashing = _HashingReader(raw)
            stream = io.BufferedReader(hashing, 1 << 16)
            count = 0
            decode = _pixels_reader(index, url)
            for key, members in _samples(stream, index, url):
                yield key, decode(members[index.encoding], key), _decode_label(members, index, url, key)
                count += 1
            while stream.read(1 << 20):  # the end blocks: hashed and counted with the rest
                pass
    except (OSError, EOFError, ValueError) as error:
        message = f"{url}: expected a complete tar shard of {shard.count} samples, found {error}; {fix}"
        raise DataError(message) from error
    if count != shard.count:
        raise DataError(f"{url}: expected {shard.count} samples as the index says, found {count}; {fix}")
    if hashing.size != shard.bytes or hashing.sha256.hexdigest() != shard.sha256:
        raise DataError(f"{url}: expected sha256 {shard.sha256[:16]}... ({shard.bytes} bytes) as the index says, "
                        f"found {hashing.sha256.hexdigest()[:16]}... ({hashing.size} bytes); {fix}")  # fmt: skip


def _members(stream: io.BufferedReader, index: ShardIndex, url: str) -> Iterator[tuple[str, str, bytes]]:
    """``(key, kind, data)`` of every member of an uncompressed tar stream, each checked before its data is read.

    Hand-written rather than walked with Python's ``tarfile``: its stream mode parses every header in Python, ~40 us
    per sample of two members (90% of reading a raw-pixel sample, in a profile of ``read_shard``: docs/data.md),
    which made streaming slower than memory. ``ninlab pack`` writes only plain POSIX (ustar) headers of regular
    files with short names, and that is all this accepts: any other member type (links, directories, PAX or GNU
    extension headers), a name with a prefix or a bad header checksum is refused.
    """
    pixels = index.channels * index.height * index.width
    if index.encoding == "npy":
        max_image = len(npy_header(index.channels, index.height, index.width)) + pixels
    else:  # a PNG of the packed size is at most its raw pixels plus per-row filter bytes and zlib/chunk overhead
        max_image = 2 * pixels + 65536
    while True:
        header = _read_exactly(stream, _BLOCK)
        if header == _END:
            return
        stored = header[148:156].split(b"\0", 1)[0].strip()
        if not stored.isdigit() or int(stored, 8) != sum(header) - sum(header[148:156]) + 8 * ord(" "):
            raise ValueError("a tar header with a bad checksum")
        name = header[:100].split(b"\0", 1)[0].decode("ascii", "replace")
        found = _MEMBER.fullmatch(name)
        if header[156:157] not in (b"0", b"\0") or header[345:500].strip(b"\0") or found is None or (
            found.group(2) not in (index.encoding, "cls")):  # fmt: skip
            raise DataError(f"{url}: expected only <8 digits>.{index.encoding}/.cls sample members, found "
                            f"{name!r}; the shard was not written by `ninlab pack` as its index says: re-pack "
                            "the dataset")  # fmt: skip
        size_field = header[124:136].split(b"\0", 1)[0].strip()
        if not size_field.isdigit():
            raise ValueError(f"a tar header of {name} with an unreadable size {header[124:136]!r}")
        size, (key, kind) = int(size_field, 8), found.groups()
        limit = max_image if kind == index.encoding else _MAX_LABEL_BYTES
        if size > limit:
            raise DataError(f"{url}: expected member {name} of at most {limit} bytes, found {size}; re-pack the "
                            "dataset")  # fmt: skip
        data = _read_exactly(stream, size)
        _read_exactly(stream, -size % _BLOCK)  # the member's padding to whole blocks
        yield key, kind, data


def _read_exactly(stream: io.BufferedReader, size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise EOFError("unexpected end of data")
    return data


def _samples(stream: io.BufferedReader, index: ShardIndex, url: str) -> Iterator[tuple[int, dict[str, bytes]]]:
    key, members = None, {}
    for name, kind, data in _members(stream, index, url):
        if name != key:
            if key is not None:
                yield int(key), _complete(members, key, url, index.encoding)
            key, members = name, {}
        if kind in members:
            raise DataError(f"{url}: expected one {name}.{kind}, found it twice; re-pack the dataset")
        members[kind] = data
    if key is not None:
        yield int(key), _complete(members, key, url, index.encoding)


def _complete(members: dict[str, bytes], key: str, url: str, encoding: str) -> dict[str, bytes]:
    missing = {encoding, "cls"} - members.keys()
    if missing:
        raise DataError(f"{url}: expected {key}.{encoding} and {key}.cls, found no {key}.{missing.pop()}; re-pack "
                        "the dataset")  # fmt: skip
    return members


def _pixels_reader(index: ShardIndex, url: str) -> Callable[[bytes, int], np.ndarray]:
    """A function from one sample's image member (and key) to its uint8 C x H x W array, by the index's encoding."""
    if index.encoding == "png":
        return lambda data, key: _decode_png(data, index, url, key)
    header = npy_header(index.channels, index.height, index.width)
    shape = (index.channels, index.height, index.width)
    size = len(header) + index.channels * index.height * index.width

    def view(data: bytes, key: int) -> np.ndarray:
        if len(data) != size or not data.startswith(header):
            found = data[: len(header)].rstrip()
            raise DataError(f"{url}: expected sample {key:08d} as uint8 pixels of shape {shape} in NumPy's format, "
                            f"found {len(data)} bytes, header {found!r}; re-pack the dataset")  # fmt: skip
        return np.frombuffer(data, dtype=np.uint8, offset=len(header)).reshape(shape)

    return view


def _decode_png(data: bytes, index: ShardIndex, url: str, key: int) -> np.ndarray:
    mode = "L" if index.channels == 1 else "RGB"
    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as image:
            if image.size != (index.width, index.height) or image.mode != mode:
                raise DataError(f"{url}: expected sample {key:08d} as a {index.width}x{index.height} {mode} PNG, "
                                f"found {image.size[0]}x{image.size[1]} {image.mode}; re-pack the dataset")  # fmt: skip
            array = np.asarray(image)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise DataError(f"{url}: expected sample {key:08d} to be a PNG, found {error}; re-pack the dataset") from error
    return array.reshape(index.height, index.width, index.channels).transpose(2, 0, 1)


def _decode_label(members: dict[str, bytes], index: ShardIndex, url: str, key: int) -> int:
    text = members["cls"]
    if not text.isdigit() or int(text) >= len(index.classes):
        raise DataError(f"{url}: expected sample {key:08d}'s label in 0..{len(index.classes) - 1}, found "
                        f"{text[:16]!r}; re-pack the dataset")  # fmt: skip
    return int(text)
