"""Shared fixtures: an isolated cache dir for every test, and the real-data location."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest

from ninlab.data.cifar import CIFAR10

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch) -> Path:
    """Point $NINLAB_DATA at a fresh temporary dir so no test reads or writes the user's cache.

    The system data dirs (Debian's /usr/share/datasets) are emptied too, so a test sees the same sources on a
    machine with dataset-fashion-mnist installed as on one without.
    """
    cache = tmp_path_factory.mktemp("ninlab-cache")
    monkeypatch.setenv("NINLAB_DATA", str(cache))
    monkeypatch.setattr("ninlab.data.locate.SYSTEM_DIRS", (tmp_path_factory.mktemp("system-datasets"),))
    return cache


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The official Fashion-MNIST/MNIST files: ``$NINLAB_TEST_DATA`` or ``../shared/data`` next to the repo.

    Tests using it skip when it is absent, unless ``NINLAB_REQUIRE_REAL_DATA=1`` (set by CI), where that is a failure.
    """
    path = Path(os.environ.get("NINLAB_TEST_DATA") or REPO_ROOT.parent / "shared" / "data")
    if not (path / "fashion-mnist").is_dir() or not (path / "mnist").is_dir():
        message = f"real data not found in {path} (set NINLAB_TEST_DATA)"
        if os.environ.get("NINLAB_REQUIRE_REAL_DATA") == "1":
            pytest.fail(message + " but NINLAB_REQUIRE_REAL_DATA=1")
        pytest.skip(message)
    return path


def idx_bytes(array: np.ndarray) -> bytes:
    """``array`` (uint8) in IDX format."""
    return struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_learnable_idx(folder: Path, n_train: int = 96, n_test: int = 40, seed: int = 0) -> None:
    """Official-format Fashion-MNIST files with learnable images: class k is a bright horizontal band at row 2k + 4."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        images = rng.integers(0, 60, (n, 28, 28), dtype=np.uint8)
        for i, label in enumerate(labels):
            images[i, 2 * label + 4 : 2 * label + 7] = 255
        for kind, array in (("images", images), ("labels", labels)):
            (folder / f"{prefix}-{kind}-idx{array.ndim}-ubyte.gz").write_bytes(gzip.compress(idx_bytes(array)))


@pytest.fixture
def write_mnist():
    """Write a small MNIST-style split (official names by default) and return the images and labels written."""

    def write(folder: Path, split: str = "train", n: int = 20, gz: bool = True, dotted: bool = False, seed: int = 0):
        rng = np.random.default_rng(seed)
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        prefix = "train" if split == "train" else "t10k"
        folder.mkdir(parents=True, exist_ok=True)
        for kind, array, dims in (("images", images, 3), ("labels", labels, 1)):
            name = f"{prefix}-{kind}{'.' if dotted else '-'}idx{dims}-ubyte"
            data = idx_bytes(array)
            if gz:
                (folder / (name + ".gz")).write_bytes(gzip.compress(data))
            else:
                (folder / name).write_bytes(data)
        return images, labels

    return write


def cifar_batch(n, key="labels", num_classes=10, seed=0):
    """A CIFAR batch dict as the official pickles hold it (bytes keys, uint8 N x 3072 data)."""
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": b"test",
        key.encode(): list(rng.integers(0, num_classes, n).tolist()),
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [b"x.png"] * n,
    }


def cifar_members(spec):
    """Pickled members (name -> bytes) of a tiny CIFAR-10 or CIFAR-100 in the official python format."""
    if spec is CIFAR10:
        members = {f"data_batch_{i}": cifar_batch(4, seed=i) for i in range(1, 6)}
        members["test_batch"] = cifar_batch(3, seed=9)
        members["batches.meta"] = {b"label_names": [f"c{i}".encode() for i in range(10)], b"num_vis": 3072}
    else:
        members = {
            "train": cifar_batch(6, "fine_labels", 100),
            "test": cifar_batch(2, "fine_labels", 100, seed=1),
            "meta": {b"fine_label_names": [f"f{i}".encode() for i in range(100)]},
        }
    # Protocol 3 writes the same globals as the official Python 2 pickles (numpy's reconstructor, ndarray, dtype).
    return {name: pickle.dumps(value, protocol=3) for name, value in members.items()}


def write_archive(path, folder, members, extra=()):
    """A ``.tar.gz`` holding ``members`` under ``folder/`` plus ``extra`` (name, bytes) entries as given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in [*((f"{folder}/{n}", d) for n, d in members.items()), *extra]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def write_id_images(folder, n, classes=2, start=0, size=8):
    """``n`` grey PNGs in ``folder/c<k>/``, each carrying its id (from ``start``) in its first two pixels.

    Pixel (0, 0) holds ``id % 256`` and (0, 1) ``id // 256``, the rest is random; the class is ``id % classes``.
    Returns ``{id: label}``.
    """
    from PIL import Image

    rng = np.random.default_rng(start)
    labels = {}
    for sample in range(start, start + n):
        image = rng.integers(0, 256, (size, size), dtype=np.uint8)
        image[0, 0], image[0, 1] = sample % 256, sample // 256
        label = sample % classes
        (folder / f"c{label}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"c{label}" / f"{sample:05d}.png")
        labels[sample] = label
    return labels
