"""Image folders through ``ninlab fit``: the layouts users have train and evaluate, hostile folders get one line.

Every command runs the real CLI in-process with the defaults a user gets (progress bar, model summary, every
callback); only the network is shrunk (``nin_fast`` 8-8-16) so a fit takes seconds.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import idx_bytes
from ninlab.cli import main
from ninlab.data import decode as decode_module

TINY = ["--model.model_kwargs", "{widths: [8, 8, 16]}"]


def fit(root: Path, runs: Path, *extra: str) -> list[str]:
    return ["fit", "--data.dataset", "folder", "--data.root", str(root), "--data.val_size", "4",
            "--data.batch_size", "8", "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(runs), *TINY,
            *extra]  # fmt: skip


def split(folder: Path, classes=("ant", "bee", "cat"), n=4, mode="L", suffix=".png") -> Path:
    """``folder/<class>/<i><suffix>``: 28x28 images whose brightness tells the class apart."""
    for c, name in enumerate(classes):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.new(mode, (28, 28), 60 * c + i).save(folder / name / f"{i}{suffix}")
    return folder


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


# --- hostile folders: one line, exit 2, nothing left behind ---


def _test_with_extra_class(tmp: Path) -> Path:
    split(tmp / "d" / "train")
    return split(tmp / "d" / "test", classes=("ant", "bee", "cat", "dog")).parent


def _folder_beside_train(tmp: Path) -> Path:
    split(tmp / "d" / "train")
    return split(tmp / "d" / "extra").parent


def _renamed_test_class(tmp: Path) -> Path:
    split(tmp / "d" / "train")
    return split(tmp / "d" / "test", classes=("ant", "bee", "cats")).parent


def _symlink_loop(tmp: Path) -> Path:
    root = split(tmp / "d")
    (root / "ant" / "again").symlink_to(root)
    return root


def _empty_class(tmp: Path) -> Path:
    (split(tmp / "d") / "dog").mkdir()
    return tmp / "d"


def _hidden_only_class(tmp: Path) -> Path:
    (split(tmp / "d") / "dog").mkdir()
    (tmp / "d" / "dog" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    return tmp / "d"


def _float_image(tmp: Path) -> Path:
    root = split(tmp / "d")
    Image.new("F", (28, 28), 0.5).save(root / "bee" / "depth.tif")
    return root


def _fashion_in_cache_and_root_a_file(tmp: Path, cache: Path) -> list[str]:
    rng = np.random.default_rng(0)
    (cache / "fashion-mnist").mkdir(parents=True)
    for prefix, count in (("train", 40), ("t10k", 20)):
        for kind, data in (("images", rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)),
                           ("labels", (np.arange(count) % 10).astype(np.uint8))):  # fmt: skip
            dims = 3 if kind == "images" else 1
            (cache / "fashion-mnist" / f"{prefix}-{kind}-idx{dims}-ubyte").write_bytes(idx_bytes(data))
    (tmp / "data.zip").write_bytes(b"PK\3\4")
    return ["fit", "--data.root", str(tmp / "data.zip"), "--data.val_size", "8", "--trainer.max_epochs", "1",
            "--trainer.default_root_dir", str(tmp / "runs"), *TINY]  # fmt: skip


@dataclass(frozen=True)
class Case:
    """A hostile folder: how to build the command (from the scratch dir and cache), and what the line says."""

    kind: str
    build: Callable[[Path, Path], list[str]]
    says: str
    cached_train: bool = False  # the training split decoded fine, so its cache entry may stay


CASES = [
    Case("test-class-train-lacks", lambda t, c: fit(_test_with_extra_class(t), t / "runs"), "found also dog;"),
    Case("test-class-renamed", lambda t, c: fit(_renamed_test_class(t), t / "runs"), "found also cats and lacks cat;"),
    Case(
        "symlink-loop",
        lambda t, c: fit(_symlink_loop(t), t / "runs"),
        "ant/again: expected a folder of images, found a link back to",
    ),
    Case(
        "empty-class-folder",
        lambda t, c: fit(_empty_class(t), t / "runs"),
        "dog: expected images in every class folder, found nothing",
    ),
    Case(
        "hidden-files-only-class",
        lambda t, c: fit(_hidden_only_class(t), t / "runs"),
        "found only skipped files (.DS_Store)",
    ),
    Case("single-class", lambda t, c: fit(split(t / "d", ("ant",)), t / "runs"), "expected at least 2 class folders"),
    Case("float-image", lambda t, c: fit(_float_image(t), t / "runs"), "depth.tif: expected 8- or 16-bit pixels"),
    Case("folder-beside-train", lambda t, c: fit(_folder_beside_train(t), t / "runs"), "found also extra/"),
    Case(
        "decoded-split-exceeds-memory",
        lambda t, c: fit(split(t / "d"), t / "runs", "--data.folder_image_size", "1000000"),
        "decoding 12 images at 1x1000000x1000000 needs 12 TB of memory",
    ),
    Case(
        "float-batch-exceeds-memory",
        lambda t, c: fit(split(t / "d"), t / "runs", "--data.image_size", "1000000"),
        "a batch of 8 images at 1x1000000x1000000 (float32) needs 32 TB of memory",
        cached_train=True,
    ),
    Case(
        "no-held-out-images",
        lambda t, c: fit(split(t / "d"), t / "runs", "--data.val_size", "0"),
        "val_size=0 and no val/ or test/ folder leaves no image to evaluate on",
        cached_train=True,
    ),
    Case(
        "root-is-a-file",
        _fashion_in_cache_and_root_a_file,
        "data.zip: expected a directory holding the dataset files (--data.root, root=), found a file",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.kind for case in CASES])
def test_hostile_folder_is_one_line_and_leaves_nothing(case, tmp_path, isolated_cache, capsys):
    argv = case.build(tmp_path, isolated_cache)
    before = set(isolated_cache.rglob("*.pt"))
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("ninlab: error: ") and "Traceback" not in err, err
    assert case.says in lines[0], lines[0]
    assert len(lines[0]) < 400, "one short line"
    assert not files_under(tmp_path / "runs"), "a rejected command must leave no run directory"
    entries = set(isolated_cache.rglob("*.pt")) - before
    assert len(entries) <= (1 if case.cached_train else 0), entries


# --- the layouts users have: each trains and evaluates without renaming anything ---


@pytest.mark.parametrize("layout", ["train+val", "train+test", "train+val+test", "classes"])
def test_layout_trains_and_evaluates(layout, tmp_path, capsys, caplog, monkeypatch):
    root = tmp_path / "data"
    if layout == "classes":
        split(root)
    for name in layout.split("+") if "+" in layout else ():
        split(root / name, n=4 if name == "train" else 2)
    if layout == "train+val+test":  # the decode's worker processes, through the CLI
        monkeypatch.setattr(decode_module, "PARALLEL_MIN", 1)
        monkeypatch.setattr(decode_module, "usable_cores", lambda: 2)
    caplog.set_level(logging.INFO)  # Lightning's info lines go to the stderr it saw at import: read them here
    assert main(fit(root, tmp_path / "runs")) == 0
    (line,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("test accuracy")]
    (run,) = (tmp_path / "runs").glob("*/*/")
    recorded = json.loads((run / "summary.json").read_text())["test_split"]
    assert (run / "confusion_matrix.png").is_file()
    checkpoint = torch.load(next(run.rglob("last.ckpt")), weights_only=True)
    assert checkpoint["hyper_parameters"]["class_names"] == ["ant", "bee", "cat"]
    said = "\n".join(caplog.messages)
    # Without test/, the accuracy printed and recorded names what it was measured on: not an independent test.
    if layout == "train+val":
        assert f"{root}: no test/ folder; the final evaluation uses {root / 'val'} (6 images" in said
        assert recorded == str(root / "val") and f" on {root / 'val'} (no test split: also the validation" in line
    elif layout == "classes":
        assert f"{root}: no test/ folder; the final evaluation uses the images held out of {root}" in said
        assert recorded.startswith(f"the images held out of {root}") and f" on {recorded} (no test split" in line
    else:
        assert "no test/ folder" not in said and recorded == "test" and "no test split" not in line


def test_hostile_but_valid_images_train_and_predict(tmp_path, capsys):
    """16-bit, EXIF-rotated, transparent, palette, animated and CMYK images, hidden files and a non-UTF-8 class."""
    root = split(tmp_path / "data", classes=("ant", "bee"))
    latin1 = os.path.join(os.fsencode(root), b"caf\xe9")  # "café" written by an old Windows zip tool
    os.makedirs(latin1)
    folder = Path(os.fsdecode(latin1))
    Image.fromarray(np.full((28, 28), 50000, np.uint16)).save(folder / "deep.png")
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (14, 56), (200, 200, 200)).save(folder / "phone.jpg", exif=exif)
    Image.new("RGBA", (28, 28), (0, 0, 0, 0)).save(folder / "clear.png")
    frames = [Image.new("P", (28, 28), i) for i in (1, 2)]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:])
    Image.new("CMYK", (28, 28), (0, 0, 0, 40)).save(folder / "print.jpg")
    for name in (".DS_Store", "Thumbs.db"):
        (folder / name).write_bytes(b"\0junk")
    assert main(fit(root, tmp_path / "runs")) == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out
    (run,) = (tmp_path / "runs").glob("*/*/")
    assert (run / "confusion_matrix.png").is_file()
    checkpoint = next(run.rglob("last.ckpt"))
    assert torch.load(checkpoint, weights_only=True)["hyper_parameters"]["class_names"] == ["ant", "bee", "caf\\xe9"]
    assert main(["predict-images", str(checkpoint), str(folder / "deep.png"), "-k", "3"]) == 0
    assert "caf\\xe9" in capsys.readouterr().out
