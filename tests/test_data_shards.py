"""Streaming packed shards: disjoint, complete and equal shares per process and worker; training from them end to
end (one process, two gloo DDP processes, resume); bad shards refused with one line and never unpickled."""

import io
import json
import multiprocessing
import os
import pickle
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import write_id_images
from ninlab.cli import main
from ninlab.data.shards import PackedDataset, pack, read_index
from ninlab.data.shards.stream import ShardStream, batches_per_epoch, worker_shards
from ninlab.errors import ConfigError, DataError, DataNotFoundError

ROOT = Path(__file__).resolve().parents[1]
N_TRAIN, N_VAL = 300, 50


@pytest.fixture(scope="module")
def packed(tmp_path_factory) -> Path:
    """300 + 50 id-carrying 8x8 grey images packed into 64KB shards (10 train shards of 30, 2 val shards of 25)."""
    source = tmp_path_factory.mktemp("source")
    write_id_images(source / "train", N_TRAIN)
    write_id_images(source / "val", N_VAL, start=N_TRAIN)
    out = tmp_path_factory.mktemp("packed") / "ids"
    pack(str(source), out, shard_size=64 << 10, workers=2)
    return out


def _ids(images: torch.Tensor) -> list[int]:
    return (images[:, 0, 0, 0].long() + 256 * images[:, 0, 0, 1].long()).tolist()


def _read(stream: ShardStream, worker: int) -> list[list[int]]:
    return [_ids(images) for images, _ in stream._batches(worker)]


@pytest.mark.parametrize(("world_size", "workers"), [(1, 1), (2, 1), (2, 2), (3, 1), (4, 2)])
def test_training_shares_are_disjoint_equal_and_reshuffled_per_epoch(packed, world_size, workers):
    index = read_index(str(packed))
    counts = [shard.count for shard in index.splits["train"]]
    if len(counts) < world_size * workers:
        with pytest.raises(ConfigError, match="training shards cannot feed"):
            batches_per_epoch(counts, 8, world_size, workers)
        return
    orders = []
    for epoch in (0, 1):
        seen = []
        for rank in range(world_size):
            stream = ShardStream(index, "train", 8, train=True, seed=0, rank=rank, world_size=world_size,
                                 workers=workers)  # fmt: skip
            stream.epoch = epoch
            batches = [batch for worker in range(workers) for batch in _read(stream, worker)]
            assert len(batches) == len(stream), "every process must take the same number of steps"
            assert all(len(batch) == 8 for batch in batches)
            seen.append([i for batch in batches for i in batch])
        flat = [i for rank_ids in seen for i in rank_ids]
        assert len(set(flat)) == len(flat), "processes or workers overlapped"
        assert set(flat) <= set(range(N_TRAIN))
        orders.append(seen[0])
    assert orders[0] != orders[1], "the shard order and the shuffle buffer must change per epoch"
    # Reproducible: the same seed and epoch give the same stream.
    stream = ShardStream(index, "train", 8, train=True, seed=0, rank=0, world_size=world_size, workers=workers)
    stream.epoch = 1
    assert [i for worker in range(workers) for batch in _read(stream, worker) for i in batch] == orders[1]


def test_one_process_one_worker_uses_all_but_the_last_partial_batch(packed):
    stream = ShardStream(read_index(str(packed)), "train", 10, train=True, seed=0)
    assert len(stream) == N_TRAIN // 10
    assert sorted(i for batch in _read(stream, 0) for i in batch) == list(range(N_TRAIN))


@pytest.mark.parametrize(("world_size", "workers"), [(1, 1), (2, 2), (3, 1), (5, 2)])
def test_evaluation_reads_every_sample_once_across_processes_and_workers(packed, world_size, workers):
    # 2 val shards: with 3 or 5 processes they are split sample by sample instead of shard by shard.
    index = read_index(str(packed))
    seen = []
    for rank in range(world_size):
        stream = ShardStream(index, "val", 8, train=False, seed=0, rank=rank, world_size=world_size, workers=workers)
        batches = [batch for worker in range(workers) for batch in _read(stream, worker)]
        assert len(batches) == len(stream) > 0, "every process needs a batch, or the epoch-end all-reduce hangs"
        seen += [i for batch in batches for i in batch]
    assert sorted(seen) == list(range(N_TRAIN, N_TRAIN + N_VAL))


def test_a_pass_shuts_its_workers_down_before_its_last_batch(packed):
    """Lightning asks for len() batches and never for the end: the workers must be gone by then, or validation's
    workers start beside them (the trainer forked four times: OOM-killed under a tight memory cgroup)."""
    data = PackedDataset(str(packed))
    for split, train in (("train", True), ("val", False)):
        loader = data.loader(split, 8, train=train, seed=0, rank=0, world_size=1, num_workers=2, epoch=lambda: 0)
        alive = []
        for made, _ in enumerate(loader, 1):
            alive.append(len(multiprocessing.active_children()))
            if made == len(loader):
                break
        assert alive[0] == 2 and alive[-1] == 0, (split, alive)


def test_a_training_pass_ends_the_passes_lightning_left_open(packed):
    """The sanity check reads two validation batches and stops: that pass's workers end when training starts."""
    data = PackedDataset(str(packed))
    val = data.loader("val", 8, train=False, seed=0, rank=0, world_size=1, num_workers=2, epoch=lambda: 0)
    train = data.loader("train", 8, train=True, seed=0, rank=0, world_size=1, num_workers=2, epoch=lambda: 0)
    sanity = iter(val)
    next(sanity), next(sanity)
    assert len(multiprocessing.active_children()) == 2
    batches = iter(train)
    next(batches)
    assert len(multiprocessing.active_children()) == 2  # the training workers only
    with pytest.raises(StopIteration):
        next(sanity)


@pytest.mark.parametrize(("cores", "workers"), [(1, 0), (2, 0), (3, 1), (8, 4)])
def test_default_workers_leave_two_cores_to_the_training_step(packed, monkeypatch, cores, workers):
    from ninlab.data import ImageDataModule

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)))
    assert ImageDataModule("shards", root=str(packed), batch_size=16).num_workers == workers


def test_worker_shards_cover_each_shard_once_per_epoch():
    for world_size, workers in [(1, 1), (2, 3), (3, 2)]:
        taken = [s for rank in range(world_size) for worker in range(workers)
                 for s in worker_shards(13, train=True, seed=5, epoch=2, rank=rank, world_size=world_size,
                                        worker=worker, workers=workers)]  # fmt: skip
        assert sorted(taken) == list(range(13))


def test_data_module_takes_classes_size_and_stats_from_the_index(packed):
    from ninlab.data import ImageDataModule

    data = ImageDataModule("shards", root=str(packed), batch_size=16, num_workers=2)
    index = read_index(str(packed))
    assert data.classes == ["c0", "c1"] and data.num_classes == 2 and data.in_chans == 1
    assert data.input_size == (1, 8, 8)
    assert torch.allclose(data.mean_std[0], torch.tensor(index.mean)) and data.hflip is True
    data.setup("fit")
    images, labels = next(iter(data.train_dataloader()))
    assert images.dtype == torch.uint8 and images.shape == (16, 1, 8, 8) and labels.dtype == torch.int64
    assert [label == i % 2 for label, i in zip(labels.tolist(), _ids(images), strict=True)] == [True] * 16
    # No test split was packed: the final evaluation uses the packed val split, as a folder without test/ does.
    assert len(data.val_dataloader()) == 4 and len(data.test_dataloader()) == 4
    assert data.test_stand_in == "the packed val split"  # what ninlab fit's accuracy line then names


def test_the_normalised_training_sample_is_the_packs_first_training_images(packed):
    from ninlab.data import ImageDataModule

    data = ImageDataModule("shards", root=str(packed), batch_size=16, num_workers=2)
    data.setup("fit")
    sample = data.normalised_train_sample(40)  # more than a batch: read across batches and shards
    stream = ShardStream(read_index(str(packed)), "train", 40, train=False, seed=0)
    first, _ = next(stream._batches(0))
    assert torch.equal(sample, data.prepare_batch(first)) and sample.dtype == torch.float32
    assert len(data.normalised_train_sample(10_000)) == N_TRAIN


def test_a_dropped_unfinished_pass_stops_its_workers_at_once(packed):
    """Dropping a loader in the middle of a pass (an interrupted fit, a first batch looked at) ends its workers then.

    No reference cycle may tie the pass to its loader: freed only by the garbage collector, the pass's queues went
    before its shutdown reached the workers, and PyTorch waited 5 s for each worker before killing it.
    """
    import gc
    import weakref

    from ninlab.data import ImageDataModule

    data = ImageDataModule("shards", root=str(packed), batch_size=16, num_workers=2)
    data.setup("fit")
    gc.disable()  # what is freed below must be freed by reference counting alone
    try:
        for make in (data.train_dataloader, data.val_dataloader):
            loader = make()
            batches = iter(loader)
            next(batches)
            assert len(multiprocessing.active_children()) == 2
            dropped = weakref.ref(loader)
            del loader, batches
            assert dropped() is None and multiprocessing.active_children() == []
    finally:
        gc.enable()


def _fit(packed: Path, runs: Path, *extra: str) -> list[str]:
    # The model summary is turned off only to keep the output short; it cannot affect what is streamed. The default
    # recipe's progressive resizing is off because the recorder reads each image's id from its pixels, which a resize
    # blends; it acts after the batches are streamed, so it cannot change which samples arrive. The last block is
    # padded again because the recipe's unpadded one needs 12x12 images and these are 8x8: the network's shape
    # cannot change what is streamed either.
    return ["fit", "--data.dataset", "shards", "--data.root", str(packed), "--data.batch_size", "8",
            "--trainer.default_root_dir", str(runs), "--trainer.enable_model_summary", "false",
            "--data.train_scales", "null", "--model.model_kwargs.pad_last_block", "true", *extra]  # fmt: skip


def _recorded(folder: Path, rank: int, epoch: int) -> list[list[int]]:
    return json.loads((folder / f"rank{rank}-epoch{epoch}.json").read_text())["batches"]


def _recorder(folder: Path) -> str:
    return "--trainer.callbacks+=" + json.dumps({"class_path": "shard_recorder.RecordSamples",
                                                  "init_args": {"folder": str(folder)}})  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("workers", [None, 2])
def test_two_process_ddp_fit_from_shards_gives_disjoint_equal_shares(packed, tmp_path, workers):
    """Two gloo processes, with the default DataLoader workers (none on a 2-core machine) and with 2 each, progress
    bar on; a hang fails the timeout.

    Augmentation is off only so the recorder can read each image's id from its pixels (a crop would move them).
    """
    record = tmp_path / "record"
    chosen = ["--data.num_workers", str(workers)] if workers is not None else []
    args = _fit(packed, tmp_path / "runs", "--trainer.max_epochs", "2", "--trainer.accelerator", "cpu",
                "--trainer.strategy", "ddp", "--trainer.devices", "2", "--data.augment", "false", *chosen,
                _recorder(record))  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")])}
    done = subprocess.run([sys.executable, "-m", "ninlab.cli", *args], env=env, capture_output=True, text=True,
                          timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("test accuracy") == 1
    if workers is None:  # the data module's default for this machine
        from ninlab.data import ImageDataModule

        workers = ImageDataModule("shards", root=str(packed), batch_size=8).num_workers
    steps = batches_per_epoch([s.count for s in read_index(str(packed)).splits["train"]], 8, 2, max(workers, 1))
    # 10 shards of 30: with 2 workers per process 2 or 3 shards per worker, 7 batches of 8 each.
    for epoch in range(2):
        seen = [[i for batch in _recorded(record, rank, epoch) for i in batch] for rank in range(2)]
        assert len(seen[0]) == len(seen[1]) == steps * 8
        assert not set(seen[0]) & set(seen[1]), "the two processes trained on overlapping samples"
        assert len(set(seen[0])) == len(seen[0]) and set(seen[0]) | set(seen[1]) <= set(range(N_TRAIN))


def test_resume_from_last_continues_with_the_same_data_order(packed, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "tests"))
    straight, first, resumed = tmp_path / "straight", tmp_path / "first", tmp_path / "resumed"
    no_aug = ["--data.augment", "false", "--data.num_workers", "2"]  # augment off: ids are read from pixels
    assert main(_fit(packed, tmp_path / "a", "--trainer.max_epochs", "2", *no_aug, _recorder(straight))) == 0
    assert main(_fit(packed, tmp_path / "b", "--trainer.max_epochs", "1", *no_aug, _recorder(first))) == 0
    assert main(_fit(packed, tmp_path / "b", "--trainer.max_epochs", "2", "--ckpt_path", "last", *no_aug,
                     _recorder(resumed))) == 0  # fmt: skip
    assert _recorded(first, 0, 0) == _recorded(straight, 0, 0)
    assert _recorded(resumed, 0, 1) == _recorded(straight, 0, 1)
    assert not (resumed / "rank0-epoch0.json").exists(), "the resumed run must start at epoch 1"


# --- bad shards -----------------------------------------------------------------------------------------------


def _copy(packed: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(packed, tmp_path / "copy"))


def _fit_fails(root: Path, tmp_path: Path, capsys, match: str) -> None:
    assert main(_fit(root, tmp_path / "runs", "--trainer.max_epochs", "1", "--data.num_workers", "2")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ninlab: error:") and match in err[0], err
    assert not list((tmp_path / "runs").rglob("*.ckpt"))


def _rewrite_shard(path: Path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _members(path: Path) -> list[tuple[str, bytes]]:
    with tarfile.open(path) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]


def _fix_index(root: Path, name: str) -> None:
    """Record a rewritten shard's size and sha256 in the index, so only its contents are wrong."""
    import hashlib

    index = json.loads((root / "index.json").read_text())
    for shard in index["splits"]["train"]["shards"]:
        if shard["name"] == name:
            data = (root / name).read_bytes()
            shard["bytes"], shard["sha256"] = len(data), hashlib.sha256(data).hexdigest()
    (root / "index.json").write_text(json.dumps(index))


def test_truncated_shard_is_one_line(packed, tmp_path, capsys):
    root = _copy(packed, tmp_path)
    shard = root / "train" / "train-000003.tar"
    shard.write_bytes(shard.read_bytes()[:5000])
    _fit_fails(root, tmp_path, capsys, "bytes as the index says, found 5000 (truncated")
    _fix_index(root, "train/train-000003.tar")  # now only the stream can tell: tar cut inside a member
    _fit_fails(root, tmp_path, capsys, "expected a complete tar shard of 30 samples, found unexpected end of data")


def test_checksum_mismatch_is_one_line(packed, tmp_path, capsys):
    root = _copy(packed, tmp_path)
    shard = root / "train" / "train-000001.tar"
    data = bytearray(shard.read_bytes())
    data[-100] ^= 0xFF  # same size, one byte differs (in the tar's end padding: every sample still decodes)
    shard.write_bytes(bytes(data))
    _fit_fails(root, tmp_path, capsys, "expected sha256")


def test_missing_member_and_index_naming_a_missing_shard_are_one_line(packed, tmp_path, capsys):
    root = _copy(packed, tmp_path)
    name = "train/train-000000.tar"
    members = _members(root / name)
    _rewrite_shard(root / name, [m for m in members if m[0] != "00000005.cls"])
    _fix_index(root, name)
    _fit_fails(root, tmp_path, capsys, "found no ")
    (root / name).unlink()
    _fit_fails(root, tmp_path, capsys, "expected shard train/train-000000.tar named in the index, found no file")


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda index: "{not json", "expected a ninlab-shards index version 1"),
        (lambda index: json.dumps({**index, "version": 7}), "found an invalid one (format"),
        (lambda index: json.dumps(_rename(index, "../../etc/passwd")), "shard name '../../etc/passwd'"),
        (lambda index: json.dumps(_rename(index, "train/train-000000.tar; rm -rf ~")), "expected train/train-"),
    ],
)
def test_wrong_index_is_one_line(packed, tmp_path, capsys, edit, match):
    root = _copy(packed, tmp_path)
    (root / "index.json").write_text(edit(json.loads((root / "index.json").read_text())))
    _fit_fails(root, tmp_path, capsys, match)


def _rename(index: dict, name: str) -> dict:
    index["splits"]["train"]["shards"][0]["name"] = name
    return index


def test_no_index_points_to_ninlab_pack(tmp_path):
    with pytest.raises(DataNotFoundError, match="ninlab pack SOURCE"):
        PackedDataset(str(tmp_path))


class _Trap:
    """Unpickling this creates a file: proof that a member was unpickled."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


@pytest.mark.parametrize(
    "member", ["00000000.pyd", "00000000.pickle", "../../escape.npy", "00000000.npy/x", "00000000.png"]
)
def test_foreign_members_are_refused_and_never_unpickled(packed, tmp_path, member):
    root = _copy(packed, tmp_path)
    name = "train/train-000000.tar"
    trap = tmp_path / "unpickled"
    _rewrite_shard(root / name, [(member, pickle.dumps(_Trap(str(trap)))), *_members(root / name)])
    _fix_index(root, name)
    stream = ShardStream(read_index(str(root)), "train", 4, train=False, seed=0)
    with pytest.raises(DataError, match=r"expected only <8 digits>\.npy/\.cls sample members"):
        list(stream._batches(0))
    assert not trap.exists() and not (tmp_path / "escape.npy").exists()


@pytest.mark.parametrize(
    ("array", "found"),
    [
        (np.array([_Trap("x")] * 64, dtype=object).reshape(1, 8, 8), "of at most 192 bytes, found 460"),  # pickled
        (
            np.zeros((1, 64, 1), dtype=np.uint8),
            "header b\"\\x93NUMPY\\x01\\x00v\\x00{'descr': '|u1', 'fortran_order': False, 'shape': (1, 64, 1), }\"",
        ),  # same bytes, another shape
        (np.zeros((1, 8, 8), dtype=np.int8), "'descr': '|i1'"),  # same bytes, another dtype
        (np.asfortranarray(np.zeros((1, 8, 8), dtype=np.uint8)), "'fortran_order': True"),  # another order
    ],
)
def test_npy_member_other_than_uint8_pixels_of_the_packed_shape_is_refused(packed, tmp_path, array, found):
    """The raw-pixel member must carry exactly the NumPy header of the packed shape; it is never np.load-ed."""
    root = _copy(packed, tmp_path)
    name = "train/train-000000.tar"
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    members = [(m, buffer.getvalue() if m == "00000002.npy" else data) for m, data in _members(root / name)]
    _rewrite_shard(root / name, members)
    _fix_index(root, name)
    stream = ShardStream(read_index(str(root)), "train", 4, train=False, seed=0)
    with pytest.raises(DataError, match="00000002") as error:
        list(stream._batches(0))
    assert found in str(error.value) and "re-pack the dataset" in str(error.value), error.value


def test_index_without_an_encoding_is_a_png_pack(packed, tmp_path):
    """Packs written before raw pixels were the default hold PNGs and say nothing of it: they still read."""
    source = tmp_path / "source"
    write_id_images(source / "train", 40)
    out = tmp_path / "png"
    pack(str(source), out, shard_size=64 << 10, workers=1, encoding="png", val_size=0)
    index = json.loads((out / "index.json").read_text())
    del index["encoding"]
    (out / "index.json").write_text(json.dumps(index))
    stream = ShardStream(read_index(str(out)), "train", 8, train=False, seed=0)
    assert sorted(i for batch in _read(stream, 0) for i in batch) == list(range(40))


def test_pipe_root_streams_the_same_samples_as_the_folder(packed):
    """A ``pipe:`` root (here ``cat``; ``aws s3 cp ... -`` or ``curl`` for an object store) reads index and shards."""
    piped = PackedDataset(f"pipe:cat {packed}/{{}}")
    assert piped.classes == ["c0", "c1"]
    local = ShardStream(read_index(str(packed)), "val", 8, train=False, seed=0)
    remote = ShardStream(piped.index, "val", 8, train=False, seed=0)
    assert _read(remote, 0) == _read(local, 0)
    with pytest.raises(DataError, match="expected a pipe: command with"):
        PackedDataset(f"pipe:cat {packed}/index.json")


def test_png_member_of_another_size_is_refused(tmp_path):
    """In a PNG pack (``--encoding png``) a sample whose PNG is not of the packed size and mode is one line."""
    from PIL import Image

    source = tmp_path / "source"
    write_id_images(source / "train", 40)
    root = tmp_path / "png"
    pack(str(source), root, shard_size=64 << 10, workers=1, encoding="png", val_size=0)
    name = read_index(str(root)).splits["train"][0].name
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buffer, format="PNG")
    members = [(m, buffer.getvalue() if m == "00000000.png" else d) for m, d in _members(root / name)]
    _rewrite_shard(root / name, members)
    _fix_index(root, name)
    stream = ShardStream(read_index(str(root)), "train", 4, train=False, seed=0)
    with pytest.raises(DataError, match="expected sample 00000000 as a 8x8 L PNG, found 16x16 RGB; re-pack"):
        list(stream._batches(0))
