"""Finding files, downloading them, the decoded cache, folders of images and the digits set."""

from __future__ import annotations

import hashlib
import io
import os
from typing import ClassVar

import pytest
import torch
from PIL import Image

from ninlab.data import load_dataset, load_images
from ninlab.data import mnist as mnist_module
from ninlab.data.download import download_file
from ninlab.errors import ConfigError, DataError, DataNotFoundError


def test_unknown_name_lists_known_ones():
    with pytest.raises(ConfigError, match="fashion-mnist, mnist, cifar10"):
        load_dataset("imagenet")


def test_not_found_names_the_three_ways(tmp_path, isolated_cache):
    with pytest.raises(DataNotFoundError) as error:
        load_dataset("fashion-mnist", root=tmp_path)
    message = str(error.value)
    assert "--data.root" in message and str(isolated_cache / "fashion-mnist") in message
    assert "dataset-fashion-mnist" in message and "download=True" in message


def test_download_file_url_verifies_and_is_atomic(tmp_path):
    source = tmp_path / "src.bin"
    source.write_bytes(b"payload" * 1000)
    md5 = hashlib.md5(source.read_bytes()).hexdigest()
    dest = tmp_path / "out" / "file.bin"
    with pytest.raises(DataError, match="md5"):
        download_file(source.as_uri(), dest, "0" * 32)
    assert list(dest.parent.iterdir()) == []
    assert download_file(source.as_uri(), dest, md5).read_bytes() == source.read_bytes()


@pytest.mark.parametrize("failure", [OSError("connection reset"), KeyboardInterrupt()])
def test_download_failing_midway_leaves_no_partial_file(tmp_path, monkeypatch, failure):
    class Response(io.BytesIO):
        headers: ClassVar[dict] = {"Content-Length": "4000000"}

        def read(self, size=-1):
            if self.tell() > 0:
                raise failure
            return super().read(size)

    monkeypatch.setattr("ninlab.data.download.urlopen", lambda url, timeout: Response(b"x" * 4_000_000))
    with pytest.raises(DataError if isinstance(failure, OSError) else KeyboardInterrupt):
        download_file("https://example.invalid/f.gz", tmp_path / "f.gz", "0" * 32)
    assert list(tmp_path.iterdir()) == []


def test_dataset_download_into_cache(tmp_path, monkeypatch, isolated_cache, write_mnist):
    mirror = tmp_path / "mirror"
    write_mnist(mirror, split="test", n=5)
    files = tuple(
        mnist_module.IdxFile(f.stem, hashlib.md5((mirror / f"{f.stem}.gz").read_bytes()).hexdigest(), f.content_md5)
        for f in mnist_module.MNIST.splits["test"]
    )
    spec = mnist_module.IdxDataset("mnist", mnist_module.MNIST.classes, mirror.as_uri() + "/", {"test": files})
    monkeypatch.setitem(mnist_module.IDX_DATASETS, "mnist", spec)
    with pytest.raises(DataNotFoundError):
        load_dataset("mnist", "test")
    loaded = load_dataset("mnist", "test", download=True, verify=False)
    assert len(loaded) == 5 and (isolated_cache / "mnist" / "t10k-images-idx3-ubyte.gz").is_file()


def test_cache_round_trip_and_invalidation(tmp_path, isolated_cache, write_mnist):
    write_mnist(tmp_path, n=10)
    first = load_dataset("mnist", root=tmp_path)
    entries = list((isolated_cache / "decoded").glob("*.pt"))
    assert len(entries) == 1
    again = load_dataset("mnist", root=tmp_path)
    assert torch.equal(again.images, first.images) and again.classes == first.classes
    images, _ = write_mnist(tmp_path, n=12, seed=1)  # source changed: new key, stale entry replaced
    os.utime(tmp_path / "train-images-idx3-ubyte.gz", ns=(1, 1))
    changed = load_dataset("mnist", root=tmp_path)
    assert len(changed) == 12 and torch.equal(changed.images[:, 0], torch.from_numpy(images))
    assert len(list((isolated_cache / "decoded").glob("*.pt"))) == 1


def test_damaged_cache_entry_is_rebuilt(tmp_path, isolated_cache, write_mnist):
    write_mnist(tmp_path, n=4)
    load_dataset("mnist", root=tmp_path)
    (entry,) = (isolated_cache / "decoded").glob("*.pt")
    entry.write_bytes(b"garbage")
    assert len(load_dataset("mnist", root=tmp_path)) == 4


def test_cached_real_fashion_mnist_loads_fast(real_data_dir):
    import time

    load_dataset("fashion-mnist", root=real_data_dir)
    start = time.perf_counter()
    load_dataset("fashion-mnist", root=real_data_dir)
    assert time.perf_counter() - start < 0.5


def write_image(path, size=(10, 8), mode="RGB", color=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)


def test_folder_uses_most_common_size_and_mode(tmp_path):
    for i in range(3):
        write_image(tmp_path / "cat" / f"{i}.png")
    write_image(tmp_path / "dog" / "a.jpg", size=(20, 20), mode="L")
    write_image(tmp_path / "dog" / "b.bmp")
    loaded = load_dataset("folder", root=tmp_path)
    assert loaded.images.shape == (5, 3, 8, 10) and loaded.classes == ["cat", "dog"]
    assert loaded.labels.tolist() == [0, 0, 0, 1, 1]
    explicit = load_dataset("folder", root=tmp_path, image_size=4, channels=1)
    assert explicit.images.shape == (5, 1, 4, 4)
    with pytest.raises(DataNotFoundError, match="test"):
        load_dataset("folder", "test", root=tmp_path)


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("bad.png", b"", "empty file"),
        ("bad.png", b"not an image", "Pillow"),
        ("notes.txt", b"hello", "expected only images"),
    ],
)
def test_folder_bad_files_raise_naming_the_file(tmp_path, isolated_cache, name, data, message):
    write_image(tmp_path / "cat" / "ok.png")
    write_image(tmp_path / "dog" / "ok.png")
    (tmp_path / "cat" / name).write_bytes(data)
    with pytest.raises(DataError, match=message) as error:
        load_dataset("folder", root=tmp_path)
    assert name in str(error.value)
    assert not list(isolated_cache.rglob("*.pt"))


def test_load_images_for_prediction(tmp_path):
    write_image(tmp_path / "a" / "1.png", size=(30, 30))
    write_image(tmp_path / "b.png", mode="L")
    images, files = load_images([tmp_path / "a", tmp_path / "b.png"], image_size=28, channels=1)
    assert images.shape == (2, 1, 28, 28) and images.dtype == torch.uint8
    assert [f.name for f in files] == ["1.png", "b.png"]


def test_digits_split():
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert len(train) == 1437 and len(test) == 360 and train.images.shape[1:] == (1, 8, 8)
    assert train.images.max() == 255 and train.images.dtype == torch.uint8
    assert torch.bincount(test.labels).min() >= 35  # stratified
    assert torch.equal(load_dataset("digits", "test").images, test.images)  # deterministic
