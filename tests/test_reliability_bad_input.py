"""Hostile and bad input through the command line: one clear line, a non-zero exit, nothing half-written.

Every case runs ``ninlab ...`` in-process and checks that stderr is exactly one ``ninlab: error:`` line naming the
problem (no traceback), that the exit code is the expected one, that no run directory and no output file were left,
that a rejected dataset left no cache entry, and that code smuggled into a pickle never ran. The library-level
behaviour of each reader is tested in ``test_data_*.py``; this table is the user's view of all of them.
"""

from __future__ import annotations

import gzip
import os
import pickle
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import cifar_members, idx_bytes, write_archive
from ninlab.cli import main
from ninlab.data.cifar import CIFAR10

QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
TINY = ["--model.model_kwargs", "{widths: [8, 8, 16]}"]


class Payload:
    """Unpickling this runs ``touch <marker>``: the file must never appear."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@dataclass
class Env:
    """What a case builds on: a scratch dir, where runs go, the trained tiny checkpoint and the payload marker."""

    tmp: Path
    runs: Path
    checkpoint: Path
    marker: Path
    mounts: list[Path] = field(default_factory=list)

    def fit(self, root: Path, *extra: str) -> list[str]:
        return ["fit", "--data.root", str(root), "--data.val_size", "8", "--data.batch_size", "8",
                "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(self.runs), *TINY, *QUIET,
                *extra]  # fmt: skip

    def test(self, *extra: str) -> list[str]:
        return ["test", "--ckpt_path", str(self.checkpoint), "--trainer.default_root_dir", str(self.runs), *TINY,
                *QUIET, *extra]  # fmt: skip


def _fashion(folder: Path, n: int = 40, images: bytes | None = None, labels: bytes | None = None) -> Path:
    """Fashion-MNIST-format files in ``folder/fashion-mnist``; ``images``/``labels`` replace the train files' bytes."""
    rng = np.random.default_rng(0)
    target = folder / "fashion-mnist"
    target.mkdir(parents=True)
    for prefix, count in (("train", n), ("t10k", 20)):
        data = {"images": idx_bytes(rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)),
                "labels": idx_bytes((np.arange(count) % 10).astype(np.uint8))}  # fmt: skip
        if prefix == "train":
            data["images"] = data["images"] if images is None else images
            data["labels"] = data["labels"] if labels is None else labels
        for kind, raw in data.items():
            dims = 3 if kind == "images" else 1
            (target / f"{prefix}-{kind}-idx{dims}-ubyte.gz").write_bytes(gzip.compress(raw))
    return folder


def _train_images(n: int = 40) -> bytes:
    return idx_bytes(np.random.default_rng(0).integers(0, 256, (n, 28, 28), dtype=np.uint8))


def _image_folder(root: Path, classes: int = 10, mode: str = "L", bad: tuple[str, bytes] | None = None) -> Path:
    """``root/train|test/<class>/*.png`` (28x28, ``mode``); ``bad`` = (file name, bytes) added to class 0's train."""
    for split in ("train", "test"):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(2):
                Image.new(mode, (28, 28), 20 * c + i).save(folder / f"{i}.png")
    if bad is not None:
        (root / "train" / "class0" / bad[0]).write_bytes(bad[1])
    return root


def _folder_fit(env: Env, root: Path) -> list[str]:
    return env.fit(root, "--data.dataset", "folder", "--data.val_size", "4")


def _cifar(env: Env, members: dict[str, bytes] | None = None, extra=()) -> list[str]:
    members = {**cifar_members(CIFAR10), **(members or {})}
    write_archive(env.tmp / "data" / CIFAR10.archive, CIFAR10.folder, members, extra)
    return env.fit(env.tmp / "data", "--data.dataset", "cifar10", "--data.val_size", "4")


def _unreadable_image(env: Env) -> list[str]:
    root = _image_folder(env.tmp / "images")
    (root / "train" / "class0" / "gone.png").symlink_to(env.tmp / "missing.png")  # exists in the listing only
    return _folder_fit(env, root)


def _tampered_checkpoint(env: Env) -> Path:
    checkpoint = torch.load(env.checkpoint, weights_only=True)
    checkpoint["hyper_parameters"]["model"] = Payload(env.marker)
    path = env.tmp / "tampered.ckpt"
    torch.save(checkpoint, path)  # a real checkpoint except for one object whose unpickling runs a command
    return path


def _foreign_checkpoint(env: Env) -> Path:
    """A Lightning checkpoint of some other LightningModule (its own hyperparameters and weights)."""
    path = env.tmp / "other-model.ckpt"
    torch.save({"epoch": 3, "global_step": 30, "state_dict": {"encoder.weight": torch.zeros(4, 4)},
                "hyper_parameters": {"hidden_dim": 64, "lr": 0.01}}, path)  # fmt: skip
    return path


def _truncated_checkpoint(env: Env) -> Path:
    data = env.checkpoint.read_bytes()
    path = env.tmp / "truncated.ckpt"
    path.write_bytes(data[: len(data) // 2])
    return path


def _mount(env: Env, name: str, options: str) -> Path:
    """A tmpfs at ``env.tmp/name`` (a real read-only or full file system); skips where mounting is not allowed."""
    target = env.tmp / name
    target.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True,
                          check=False)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    env.mounts.append(target)
    return target


def _read_only_output(env: Env) -> list[str]:
    if os.geteuid() == 0:  # chmod does not bind root: use a read-only file system
        out = _mount(env, "read-only", "ro,size=64k")
    else:
        out = env.tmp / "read-only"
        out.mkdir()
        out.chmod(0o555)
    return ["export", str(env.checkpoint), "--output", str(out / "model.onnx")]


def _full_disk_export(env: Env) -> list[str]:
    out = _mount(env, "full", "size=12k")  # the tiny model's ONNX file needs more
    return ["export", str(env.checkpoint), "--output", str(out / "model.onnx")]


def _full_disk_runs(env: Env) -> list[str]:
    env.runs = _mount(env, "full", "size=48k") / "runs"  # room for the config and logs, not for a checkpoint
    return env.fit(_fashion(env.tmp / "data"))


@dataclass(frozen=True)
class Case:
    """One bad input: how to build the command, a phrase the error line must contain, and the exit code."""

    kind: str
    build: Callable[[Env], list[str]]
    says: str
    code: int = 2
    data_case: bool = True  # a rejected dataset must leave no cache entry


CASES = [
    Case("idx-truncated", lambda e: e.fit(_fashion(e.tmp / "d", images=_train_images()[:-100])), "truncated"),
    Case("idx-oversized", lambda e: e.fit(_fashion(e.tmp / "d", images=_train_images() + b"\0" * 7)), "oversized"),
    Case(
        "idx-wrong-magic",
        lambda e: e.fit(_fashion(e.tmp / "d", images=b"\x01\x02" + _train_images()[2:])),
        "starting with two zero bytes",
    ),
    Case(
        "idx-wrong-dimensions",
        lambda e: e.fit(_fashion(e.tmp / "d", images=idx_bytes(np.zeros((40, 784), "u1")))),
        "with 3 dimension(s), found 2",
    ),
    Case("idx-not-gzip", lambda e: e.fit(_corrupt_gzip(e)), "gzip"),
    Case(
        "image-label-count-mismatch",
        lambda e: e.fit(_fashion(e.tmp / "d", labels=idx_bytes(np.zeros(39, "u1")))),
        "expected 40 labels",
    ),
    Case("checksum-mismatch", lambda e: e.fit(_fashion(e.tmp / "d"), "--data.verify", "true"), "md5"),
    Case(
        "cifar-pickle-code-payload",
        lambda e: _cifar(e, {"data_batch_1": pickle.dumps(Payload(e.marker))}),
        "found a reference to posix.system",
    ),
    Case("tar-parent-path", lambda e: _cifar(e, extra=[("../escape.txt", b"x")]), "unsafe member '../escape.txt'"),
    Case("tar-absolute-path", lambda e: _cifar(e, extra=[("/tmp/escape.txt", b"x")]), "unsafe member '/tmp/escape"),
    Case(
        "folder-zero-byte-image",
        lambda e: _folder_fit(e, _image_folder(e.tmp / "i", bad=("z.png", b""))),
        "z.png: expected an image, found an empty file",
    ),
    Case("folder-unreadable-image", _unreadable_image, "gone.png: expected a readable image"),
    Case(
        "folder-non-image-file",
        lambda e: _folder_fit(e, _image_folder(e.tmp / "i", bad=("notes.txt", b"hi"))),
        "notes.txt: expected only images",
    ),
    Case(
        "folder-corrupt-image",
        lambda e: _folder_fit(e, _image_folder(e.tmp / "i", bad=("c.png", b"\x89PNG junk"))),
        "c.png: expected an image Pillow can read",
    ),
    Case(
        "input-too-small-for-model",
        lambda e: e.fit(_fashion(e.tmp / "d"), "--model.model", "nin_d2l", "--model.model_kwargs", "{}"),
        "too small",
        data_case=False,
    ),
    Case(
        "negative-lr",
        lambda e: e.fit(_fashion(e.tmp / "d"), "--model.lr", "-1"),
        "lr must be a positive number",
        data_case=False,
    ),
    Case(
        "unknown-model",
        lambda e: e.fit(_fashion(e.tmp / "d"), "--model.model", "resnet"),
        "unknown model 'resnet'",
        data_case=False,
    ),
    Case(
        "num-classes-vs-data",
        lambda e: e.fit(_fashion(e.tmp / "d"), "--model.model_kwargs", "{num_classes: 5}"),
        "model_kwargs.num_classes=5 contradicts num_classes=10",
        data_case=False,
    ),
    Case(
        "grey-checkpoint-on-rgb-data",
        lambda e: e.test("--data.dataset", "folder", "--data.root", str(_image_folder(e.tmp / "i", mode="RGB"))),
        "channels 1 vs 3",
        data_case=False,
    ),
    Case(
        "num-classes-vs-checkpoint",
        lambda e: e.test("--data.dataset", "folder", "--data.root", str(_image_folder(e.tmp / "i", classes=3))),
        "classes 10 vs 3",
        data_case=False,
    ),
    Case(
        "checkpoint-of-another-model",
        lambda e: e.test("--data.root", str(_fashion(e.tmp / "d")), "--ckpt_path", str(_foreign_checkpoint(e))),
        "is not a ninlab checkpoint",
        data_case=False,
    ),
    Case(
        "tampered-checkpoint-export",
        lambda e: ["export", str(_tampered_checkpoint(e)), "--output", str(e.tmp / "m.onnx")],
        "refers to code (posix.system)",
        data_case=False,
    ),
    Case(
        "tampered-checkpoint-resume",
        lambda e: [*e.fit(_fashion(e.tmp / "d")), "--ckpt_path", str(_tampered_checkpoint(e))],
        "refers to code (posix.system)",
        data_case=False,
    ),
    Case(
        "truncated-checkpoint",
        lambda e: ["predict-images", str(_truncated_checkpoint(e)), str(e.tmp)],
        "truncated, damaged or not a PyTorch checkpoint",
        data_case=False,
    ),
    Case("read-only-output-dir", _read_only_output, "Read-only file system", code=1, data_case=False),
    Case("full-disk-export", _full_disk_export, "No space left on device", code=1, data_case=False),
    Case("full-disk-run-dir", _full_disk_runs, "No space left on device", code=1, data_case=False),
]


def _corrupt_gzip(env: Env) -> Path:
    root = _fashion(env.tmp / "d")
    (root / "fashion-mnist" / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b\x08\x00 not really gzip")
    return root


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory) -> Path:
    """``last.ckpt`` of a one-epoch tiny fit (nin_fast 8-8-16, 1 channel, 10 classes)."""
    runs = tmp_path_factory.mktemp("trained")
    data = _fashion(tmp_path_factory.mktemp("data"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NINLAB_DATA", str(tmp_path_factory.mktemp("cache")))
        env = Env(runs, runs, runs, runs)
        assert main(env.fit(data)) == 0
    return next(runs.rglob("last.ckpt"))


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def test_the_table_covers_twenty_kinds():
    assert len({case.kind for case in CASES}) == len(CASES) >= 20


@pytest.mark.parametrize("case", CASES, ids=[case.kind for case in CASES])
def test_bad_input_is_one_line_and_leaves_nothing(case, trained_checkpoint, tmp_path, isolated_cache, capsys):
    env = Env(tmp_path, tmp_path / "runs", trained_checkpoint, tmp_path / "payload-ran")
    argv = case.build(env)
    capsys.readouterr()
    try:
        code = main(argv)
        outputs = [path for folder in (tmp_path / "read-only", tmp_path / "full") for path in _files(folder)]
    finally:
        for mount in env.mounts:
            subprocess.run(["umount", str(mount)], check=True)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == case.code, err
    assert len(lines) == 1 and lines[0].startswith("ninlab: error: ") and "Traceback" not in err, err
    assert case.says in lines[0], lines[0]
    assert not env.marker.exists(), "the pickled payload ran"
    assert not _files(env.runs), "a rejected command must leave no run directory"
    assert not list(tmp_path.glob("*.onnx")) and not outputs, "no (partial) output file may be left"
    if case.data_case:
        assert not list(isolated_cache.rglob("*.pt")), "a rejected dataset must leave no cache entry"


def test_disk_full_mid_checkpoint_write_leaves_no_checkpoint(trained_checkpoint, tmp_path, monkeypatch, capsys):
    """Where no tmpfs can be mounted: the file system reports 1000 bytes free when the first checkpoint is written.

    A real full disk is in test_reliability_resources.py (torch.save fails there with a RuntimeError, not ENOSPC).
    """
    monkeypatch.setattr("ninlab._runtime.tensor_files.free_bytes", lambda folder: 1000)
    env = Env(tmp_path, tmp_path / "runs", trained_checkpoint, tmp_path / "payload-ran")
    assert main(env.fit(_fashion(tmp_path / "d"))) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "No space left on device (needs about" in lines[0] and "1000 bytes free" in lines[0]
    assert not _files(env.runs)
