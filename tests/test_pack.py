"""``ninlab pack``: shards hold exactly the source's images and labels; re-runs, a killed pack, bad sources."""

import io
import json
import os
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import write_id_images
from ninlab.cli import main
from ninlab.data import ImageDataModule, load_dataset
from ninlab.data.folder import load_folder
from ninlab.data.shards import read_index
from ninlab.data.shards.reader import read_shard

ROOT = Path(__file__).resolve().parents[1]


def _split(out: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    index = read_index(str(out))
    samples = [(key, image, label) for shard in index.splits[split] for key, image, label in read_shard(index, shard)]
    assert [key for key, _, _ in samples] == list(range(len(samples))), "keys are positions in the split"
    return np.stack([image for _, image, _ in samples]), np.array([label for _, _, label in samples])


def _as_set(images: np.ndarray, labels: np.ndarray) -> list[tuple[int, bytes]]:
    return sorted((int(label), image.tobytes()) for image, label in zip(images, labels, strict=True))


@pytest.mark.parametrize("encoding", ["npy", "png"])
def test_folder_pack_holds_what_the_folder_reader_decodes(tmp_path, capsys, encoding):
    """Mixed sizes, modes and formats, resized to 12x12 RGB: the shards equal load_folder's decode, image by image,
    stored as raw pixels (the default) or as PNGs."""
    source = tmp_path / "photos"
    rng = np.random.default_rng(0)
    for split, n in (("train", 30), ("test", 8)):
        for i in range(n):
            label = f"class{i % 3}"
            (source / split / label).mkdir(parents=True, exist_ok=True)
            size = (10 + i % 5, 14)
            if i % 2:
                Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(
                    source / split / label / f"{i}.jpg"
                )
            else:
                Image.fromarray(rng.integers(0, 256, size, dtype=np.uint8)).save(source / split / label / f"{i}.png")
    out = tmp_path / "packed"
    assert main(["pack", str(source), str(out), "--image-size", "12", "--channels", "3", "--val-size", "0",
                 "--workers", "2", "--encoding", encoding]) == 0  # fmt: skip
    assert "train 30 in 1 shards, test 8 in 1 shards; 12x12x3, 3 classes" in capsys.readouterr().out
    for split in ("train", "test"):
        expected = load_folder(source, split, image_size=12, channels=3)
        images, labels = _split(out, split)
        assert _as_set(images, labels) == _as_set(expected.images.numpy(), expected.labels.numpy())
    index = read_index(str(out))
    assert index.classes == ["class0", "class1", "class2"] and (index.channels, index.height) == (3, 12)
    assert index.encoding == encoding
    with tarfile.open(out / index.splits["train"][0].name) as tar:
        member = tar.extractfile(f"00000000.{encoding}").read()
    if encoding == "npy":  # a standard .npy that NumPy (and WebDataset's decoders) read without pickle
        assert np.load(io.BytesIO(member), allow_pickle=False).shape == (3, 12, 12)
    else:
        assert member.startswith(b"\x89PNG")
    train = load_folder(source, "train", image_size=12, channels=3).images.permute(1, 0, 2, 3).reshape(3, -1) / 255
    assert np.allclose(index.mean, train.mean(dim=1).numpy()) and np.allclose(
        index.std, train.std(dim=1, correction=0).numpy()
    )


def test_builtin_pack_splits_like_the_data_module_and_keeps_the_test_split(tmp_path):
    out = tmp_path / "digits"
    assert main(["pack", "digits", str(out), "--shard-size", "64KB", "--workers", "2"]) == 0
    index = read_index(str(out))
    assert {split: index.count(split) for split in index.splits} == {"train": 1294, "val": 143, "test": 360}
    assert len({shard.count for shard in index.splits["train"]}) <= 2, "shard counts differ by at most one"
    data = ImageDataModule("digits", val_size=143, seed=0)
    data.setup("fit")
    val_images, val_labels = _split(out, "val")  # the same held-out images, in the same order
    assert torch.equal(torch.from_numpy(val_images), data._splits["val"].tensors[0])
    assert torch.equal(torch.from_numpy(val_labels), data._splits["val"].tensors[1])
    test = load_dataset("digits", "test")
    test_images, test_labels = _split(out, "test")
    assert torch.equal(torch.from_numpy(test_images), test.images) and test_labels.tolist() == test.labels.tolist()
    train_images, train_labels = _split(out, "train")
    assert _as_set(train_images, train_labels) == _as_set(*(t.numpy() for t in data.train_tensors))
    assert index.hflip is False  # digits: mirror images are other shapes


_KILLED_PACK = textwrap.dedent("""
    import os, signal, sys
    import webdataset
    from ninlab.data.shards.pack import pack

    calls = 0
    write = webdataset.TarWriter.write

    def write_then_die(self, sample):  # die inside the third shard, after two of its samples
        global calls
        calls += 1
        if calls == 2 * {per_shard} + 3:
            os.kill(os.getpid(), signal.SIGKILL)
        return write(self, sample)

    webdataset.TarWriter.write = write_then_die  # the class ninlab.data.shards.pack writes with
    pack(sys.argv[1], sys.argv[2], shard_size=64 << 10, workers=2)
""")


def test_killed_pack_leaves_no_complete_looking_shard_and_a_rerun_equals_a_fresh_pack(tmp_path):
    source = tmp_path / "ids"
    write_id_images(source, 200)
    fresh, killed = tmp_path / "fresh", tmp_path / "killed"
    assert main(["pack", str(source), str(fresh), "--shard-size", "64KB", "--workers", "2"]) == 0
    per_shard = read_index(str(fresh)).splits["train"][0].count
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    script = _KILLED_PACK.format(per_shard=per_shard)
    done = subprocess.run([sys.executable, "-c", script, str(source), str(killed)], env=env, timeout=120, check=False)
    assert done.returncode == -9
    assert not (killed / "index.json").exists(), "the index is written last"
    assert sorted(p.name for p in (killed / "train").iterdir() if not p.name.startswith(".")) == [
        "train-000000.tar", "train-000001.tar"]  # fmt: skip
    assert [p.name for p in (killed / "train").glob(".train-000002.tar.*.tmp")], "the torn shard has a temp name"
    assert main(["pack", str(source), str(killed), "--shard-size", "64KB", "--workers", "2"]) == 0
    assert not list(killed.rglob(".*.tmp")) and not (killed / ".pack-state.json").exists()
    assert (
        json.loads((killed / "index.json").read_text())["splits"]
        == json.loads((fresh / "index.json").read_text())["splits"]
    )
    for shard in (fresh / "train").iterdir():
        assert (killed / "train" / shard.name).read_bytes() == shard.read_bytes()
    # A finished pack re-run is a no-op; one with other options is refused, never mixed in.
    assert main(["pack", str(source), str(killed), "--shard-size", "64KB"]) == 0
    assert main(["pack", str(source), str(killed), "--shard-size", "64KB", "--image-size", "4"]) == 2


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ninlab: error: "), err
    return err[0]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda path: path.write_bytes(b""), "expected an image, found an empty file; delete it or replace it"),
        (lambda path: path.write_bytes(b"not an image at all"), "expected an image Pillow can read"),
        (lambda path: path.write_bytes(path.read_bytes()[:60]), "expected a decodable image"),
    ],
)
def test_bad_image_is_refused_with_the_folder_readers_line_and_leaves_nothing(tmp_path, capsys, damage, message):
    source = tmp_path / "ids"
    write_id_images(source, 40, size=16)
    damage(source / "c1" / "00007.png")
    assert main(["pack", str(source), str(tmp_path / "out"), "--image-size", "16", "--channels", "1"]) == 2
    line = _one_line(capsys)
    assert "00007.png" in line and message in line
    assert not (tmp_path / "out").exists()


def test_bad_source_and_options_are_one_line(tmp_path, capsys):
    assert main(["pack", str(tmp_path / "nowhere"), str(tmp_path / "out")]) == 2
    assert "expected an image folder" in _one_line(capsys)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    assert main(["pack", "digits", str(tmp_path / "busy")]) == 2
    assert "expected an empty or new folder" in _one_line(capsys)
    assert main(["pack", "digits", str(tmp_path / "out"), "--shard-size", "lots"]) == 2
    assert "expected a size such as 256MB" in _one_line(capsys)
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine" and not (tmp_path / "out").exists()
