"""Property-based: any bytes given to the IDX and CIFAR readers give a valid dataset or ninlab's DataError.

Inputs are arbitrary bytes, valid files with bytes overwritten or cut off, IDX headers with arbitrary dtype codes
and dimensions, and CIFAR batches that unpickle fine but hold arbitrary data and labels. A valid dataset is an
:class:`ImageSet` (its constructor checks dtypes, shapes and label ranges); anything else must be a
:class:`DataError`, never an exception from numpy, pickle, gzip or torch.
"""

from __future__ import annotations

import gzip
import pickle
import struct
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conftest import cifar_members, idx_bytes
from ninlab.data import load_dataset
from ninlab.data.cifar import CIFAR10, read_cifar
from ninlab.data.idx import decode_idx, read_idx_bytes
from ninlab.data.imageset import ImageSet
from ninlab.errors import DataError

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
VALID_IMAGES = idx_bytes(np.random.default_rng(0).integers(0, 256, (12, 28, 28), dtype=np.uint8))
VALID_LABELS = idx_bytes((np.arange(12) % 10).astype(np.uint8))
VALID_BATCH = cifar_members(CIFAR10)["data_batch_1"]


@st.composite
def damaged(draw, valid: bytes) -> bytes:
    """``valid`` with a few bytes overwritten, then possibly cut short or extended."""
    data = bytearray(valid)
    for _ in range(draw(st.integers(0, 6))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    end = draw(st.integers(0, len(data) + 8))
    return bytes(data[:end]) + (b"\0" * (end - len(data)) if end > len(data) else b"")


@st.composite
def idx_headers(draw) -> bytes:
    """An IDX header with any dtype code and up to 4 dimensions of any size, then a short payload."""
    dims = draw(st.lists(st.integers(0, 2**32 - 1), max_size=4))
    head = struct.pack(">BBBB", 0, 0, draw(st.integers(0, 255)), len(dims)) + struct.pack(f">{len(dims)}I", *dims)
    return head + draw(st.binary(max_size=64))


def idx_inputs():
    return st.one_of(st.binary(max_size=256), damaged(VALID_IMAGES), damaged(VALID_LABELS), idx_headers())


def _parses_or_data_error(read) -> object | None:
    try:
        return read()
    except DataError:
        return None


# 2**22 * 2**21 * 2**21 = 2**64: a size computed in int64 wraps to 0 and a bare header looked complete.
@example(data=struct.pack(">BBBB3I", 0, 0, 8, 3, 2**22, 2**21, 2**21), ndim=3)
@FUZZ
@given(data=idx_inputs(), ndim=st.sampled_from([1, 3]))
def test_idx_decoder_returns_a_matching_array_or_data_error(data, ndim):
    array = _parses_or_data_error(lambda: decode_idx(data, Path("fuzz-idx3-ubyte"), ndim))
    if array is not None:
        assert isinstance(array, np.ndarray) and array.ndim == ndim
        assert 4 + 4 * ndim + array.nbytes == len(data)


@FUZZ
@given(images=idx_inputs(), labels=st.one_of(st.just(VALID_LABELS), idx_inputs()), gz=st.booleans())
def test_idx_dataset_loads_or_raises_data_error(images, labels, gz, isolated_cache):
    with tempfile.TemporaryDirectory() as tmp:  # a fresh path per example, so no cache entry is ever reused
        folder = Path(tmp, "fashion-mnist")
        folder.mkdir()
        for name, data in (("train-images-idx3-ubyte", images), ("train-labels-idx1-ubyte", labels)):
            path = folder / (name + (".gz" if gz else ""))
            path.write_bytes(gzip.compress(data) if gz else data)
        loaded = _parses_or_data_error(lambda: load_dataset("fashion-mnist", "train", root=tmp, verify=False))
        assert loaded is None or isinstance(loaded, ImageSet)


@FUZZ
@given(data=st.binary(max_size=512))
def test_gzip_reader_returns_bytes_or_data_error(data, tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(data)
    result = _parses_or_data_error(lambda: read_idx_bytes(path))
    assert result is None or isinstance(result, bytes)


arrays = st.builds(
    lambda dtype, shape: np.zeros(shape, dtype=dtype),
    st.sampled_from(["uint8", "int64", "float32", "bool", "<U2"]),
    st.lists(st.integers(0, 4), max_size=3).map(tuple) | st.just((2, 3072)),
)
label_values = st.one_of(
    st.lists(st.integers(-(2**70), 2**70), max_size=4),
    st.lists(st.one_of(st.text(max_size=2), st.floats(), st.none()), max_size=4),
    st.lists(st.lists(st.integers(0, 9), max_size=2), max_size=3),
    arrays,
)


@st.composite
def cifar_batches(draw) -> bytes:
    """A batch that unpickles with the safe unpickler but may hold anything in ``data`` and ``labels``."""
    batch = {b"data": draw(st.one_of(arrays, st.integers(), st.text(max_size=3))), b"labels": draw(label_values)}
    if draw(st.booleans()):
        del batch[draw(st.sampled_from([b"data", b"labels"]))]
    return pickle.dumps(draw(st.one_of(st.just(batch), st.lists(st.integers(), max_size=2))), protocol=3)


@FUZZ
@given(member=st.one_of(st.binary(max_size=512), damaged(VALID_BATCH), cifar_batches()))
def test_cifar_reader_returns_a_dataset_or_data_error(member, tmp_path):
    folder = tmp_path / CIFAR10.folder
    folder.mkdir(exist_ok=True)
    for name, data in {**cifar_members(CIFAR10), "data_batch_1": member}.items():
        (folder / name).write_bytes(data)
    loaded = _parses_or_data_error(lambda: read_cifar(CIFAR10, "train", folder, strict=False))
    assert loaded is None or isinstance(loaded, ImageSet)


@FUZZ
@given(archive=st.one_of(st.binary(max_size=512), damaged(gzip.compress(VALID_BATCH))))
def test_cifar_archive_reader_returns_a_dataset_or_data_error(archive, tmp_path):
    path = tmp_path / CIFAR10.archive
    path.write_bytes(archive)
    loaded = _parses_or_data_error(lambda: read_cifar(CIFAR10, "train", path, strict=False))
    assert loaded is None or isinstance(loaded, ImageSet)
