"""IDX reader and the Fashion-MNIST/MNIST datasets, on small written files and on the real data."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from conftest import idx_bytes
from ninlab.data import load_dataset
from ninlab.errors import DataError


def cache_files(cache):
    return sorted(p.name for p in cache.rglob("*") if p.is_file())


@pytest.mark.parametrize(("gz", "dotted"), [(True, False), (False, False), (True, True), (False, True)])
def test_reads_official_and_dotted_names_plain_and_gz(tmp_path, write_mnist, gz, dotted):
    images, labels = write_mnist(tmp_path / "mnist", gz=gz, dotted=dotted)
    loaded = load_dataset("mnist", "train", root=tmp_path)
    assert loaded.images.shape == (20, 1, 28, 28) and loaded.images.dtype == torch.uint8
    assert torch.equal(loaded.images[:, 0], torch.from_numpy(images))
    assert loaded.labels.dtype == torch.int64 and loaded.labels.tolist() == labels.tolist()
    assert loaded.classes == [str(d) for d in range(10)]
    assert loaded.checksum == "mismatch"  # not the official bytes, accepted under an explicit root


def test_root_may_be_the_dataset_folder_itself(tmp_path, write_mnist):
    write_mnist(tmp_path, split="test", n=7)
    assert len(load_dataset("fashion-mnist", "test", root=tmp_path)) == 7


@pytest.mark.parametrize(
    ("name", "make", "message"),
    [
        ("train-images-idx3-ubyte", lambda b: b[:-5], "truncated"),
        ("train-images-idx3-ubyte", lambda b: b + b"\0", "oversized"),
        ("train-images-idx3-ubyte", lambda b: b"\x01" + b[1:], "two zero bytes"),
        ("train-images-idx3-ubyte", lambda b: b[:2] + b"\x42" + b[3:], "dtype code"),
        ("train-labels-idx1-ubyte", lambda b: idx_bytes(np.zeros((20, 2), np.uint8)), "1 dimension"),
        ("train-labels-idx1-ubyte", lambda b: idx_bytes(np.zeros(19, np.uint8)), "expected 20 labels"),
        ("train-images-idx3-ubyte", lambda b: b"", "empty file"),
        ("train-images-idx3-ubyte", lambda b: b[:6], "header"),
    ],
)
def test_bad_idx_files_raise_naming_the_file_and_cache_nothing(
    tmp_path, write_mnist, isolated_cache, name, make, message
):
    write_mnist(tmp_path, gz=False)
    path = tmp_path / name
    path.write_bytes(make(path.read_bytes()))
    with pytest.raises(DataError, match=message) as error:
        load_dataset("mnist", "train", root=tmp_path)
    assert tmp_path.name in str(error.value)
    assert cache_files(isolated_cache) == []


def test_bad_gzip_raises(tmp_path, write_mnist, isolated_cache):
    write_mnist(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz"):
        load_dataset("mnist", "train", root=tmp_path)
    assert cache_files(isolated_cache) == []


def test_checksum_mismatch_is_refused_when_verifying(tmp_path, write_mnist, isolated_cache):
    write_mnist(tmp_path)
    with pytest.raises(DataError, match="md5"):
        load_dataset("mnist", "train", root=tmp_path, verify=True)
    assert cache_files(isolated_cache) == []
    load_dataset("mnist", "train", root=tmp_path)  # reported only, and now cached...
    with pytest.raises(DataError, match="md5"):  # ...but a cached mismatch is still refused when verifying
        load_dataset("mnist", "train", root=tmp_path, verify=True)


def test_files_in_cache_dir_must_match_official_checksums(write_mnist, isolated_cache):
    write_mnist(isolated_cache / "mnist")
    with pytest.raises(DataError, match="official mnist train"):
        load_dataset("mnist", "train")


def test_debian_style_regzipped_files_verify_by_content(tmp_path, real_data_dir):
    # A distribution may re-compress the files (different gz bytes, same content): still "verified".
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        content = gzip.decompress((real_data_dir / "mnist" / f"{name}.gz").read_bytes())
        (tmp_path / f"{name}.gz").write_bytes(gzip.compress(content, compresslevel=1, mtime=0))
    assert load_dataset("mnist", "test", root=tmp_path, verify=True).checksum == "verified"


@pytest.mark.parametrize(("name", "mean", "std"), [("fashion-mnist", 0.2860, 0.3530), ("mnist", 0.1307, 0.3081)])
def test_real_data(real_data_dir, name, mean, std):
    from ninlab.data.transforms import channel_stats

    train = load_dataset(name, "train", root=real_data_dir)
    test = load_dataset(name, "test", root=real_data_dir)
    assert train.checksum == test.checksum == "verified"
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert len(train.classes) == 10
    if name == "fashion-mnist":
        assert torch.bincount(train.labels).tolist() == [6000] * 10
        assert torch.bincount(test.labels).tolist() == [1000] * 10
    got_mean, got_std = channel_stats(train.images)
    assert round(got_mean.item(), 4) == mean and round(got_std.item(), 4) == std
