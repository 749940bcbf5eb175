"""Reading one shard: its samples as uint8 arrays and labels, every byte checked against the index.

The tar is read as a stream (a local file, ``http(s)://`` or a ``pipe:`` command, opened by WebDataset's
``gopen``) and walked here rather than with WebDataset's sample pipeline because a shard is untrusted input:
WebDataset reads each member whole whatever its size and its default decoders unpickle ``.pyd``/``.pickle``
members. Here a member must be named ``<8 digits>.cls`` or ``.npy``/``.png`` (the index's encoding) and be no
larger than an image of the packed size can be; raw pixels must carry exactly the NumPy header of that size and
are then only viewed as an array (no decode: what makes streaming as fast as memory), a PNG is decoded only after
its header shows that size; the shard's sha256, byte count and sample
count must match the index. Member names are only compared, never used as paths.
"""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
from collections.abc import Callable, Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError
from webdataset import gopen

from ninlab.data.shards.index import ShardIndex, ShardInfo, shard_url
from ninlab.errors import DataError

__all__ = ["npy_header", "read_shard"]

_MEMBER = re.compile(r"(\d{8})\.(npy|png|cls)")
_MAX_LABEL_BYTES = 16


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

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


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
            stream = _HashingReader(raw)
            count = 0
            decode = _pixels_reader(index, url)
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                for key, members in _samples(tar, index, url):
                    yield key, decode(members[index.encoding], key), _decode_label(members, index, url, key)
                    count += 1
            stream.drain()
    except (OSError, EOFError, tarfile.TarError, ValueError) as error:
        message = f"{url}: expected a complete tar shard of {shard.count} samples, found {error}; {fix}"
        raise DataError(message) from error
    if count != shard.count:
        raise DataError(f"{url}: expected {shard.count} samples as the index says, found {count}; {fix}")
    if stream.size != shard.bytes or stream.sha256.hexdigest() != shard.sha256:
        raise DataError(f"{url}: expected sha256 {shard.sha256[:16]}... ({shard.bytes} bytes) as the index says, "
                        f"found {stream.sha256.hexdigest()[:16]}... ({stream.size} bytes); {fix}")  # fmt: skip


def _samples(tar: tarfile.TarFile, index: ShardIndex, url: str) -> Iterator[tuple[int, dict[str, bytes]]]:
    pixels = index.channels * index.height * index.width
    if index.encoding == "npy":
        max_image = len(npy_header(index.channels, index.height, index.width)) + pixels
    else:  # a PNG of the packed size is at most its raw pixels plus per-row filter bytes and zlib/chunk overhead
        max_image = 2 * pixels + 65536
    key, members = None, {}
    for info in tar:
        found = _MEMBER.fullmatch(info.name)
        if not info.isreg() or found is None or found.group(2) not in (index.encoding, "cls"):
            raise DataError(f"{url}: expected only <8 digits>.{index.encoding}/.cls sample members, found "
                            f"{info.name!r}; the shard was not written by `ninlab pack` as its index says: re-pack "
                            "the dataset")  # fmt: skip
        name, kind = found.groups()
        limit = max_image if kind == index.encoding else _MAX_LABEL_BYTES
        if info.size > limit:
            raise DataError(f"{url}: expected member {info.name} of at most {limit} bytes, found {info.size}; "
                            "re-pack the dataset")  # fmt: skip
        if name != key:
            if key is not None:
                yield int(key), _complete(members, key, url, index.encoding)
            key, members = name, {}
        if kind in members:
            raise DataError(f"{url}: expected one {name}.{kind}, found it twice; re-pack the dataset")
        members[kind] = tar.extractfile(info).read()
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

    def view(data: bytes, key: int) -> np.ndarray:
        if len(data) != len(header) + np.prod(shape) or not data.startswith(header):
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
