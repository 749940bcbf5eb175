"""Shared fixtures: an isolated cache dir for every test, and the real-data location."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest

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
