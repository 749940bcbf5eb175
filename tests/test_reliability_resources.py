"""Exhausted resources through the command line: real full and read-only disks, memory bombs, non-finite weights.

Disks are real tmpfs mounts (skipped where mounting is not allowed); bombs are real files that would inflate to
gigabytes, run through ``python -m ninlab.cli`` in a subprocess under an address-space limit of 200 MiB above what
the same command needs to fail on a missing file, so a reader that inflated first would die of ``MemoryError``.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import time
import zipfile
import zlib
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch import Callback

from conftest import REPO_ROOT, idx_bytes
from ninlab._runtime import tensor_files
from ninlab.cli import main
from ninlab.data.cifar import CIFAR10
from ninlab.data.download import download_file
from ninlab.errors import DataError
from ninlab.training.checkpoint_io import read_checkpoint

TINY = ["--model.model_kwargs", "{widths: [8, 8, 16]}"]
EXTRA_MEMORY = 200 << 20
ZEROS = 64 << 20
GZ_ZEROS = gzip.compress(b"\0" * ZEROS, 9)  # one gzip member of 64 MiB of zeros (64 KiB), reused by every bomb


def _mount(target: Path, options: str) -> Path:
    """A real tmpfs at ``target``; skips where mounting is not allowed (not root, containers without CAP_SYS_ADMIN)."""
    target.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    return target


@pytest.fixture
def tmpfs(tmp_path):
    """Mounts tmpfs file systems on request and unmounts them all after the test."""
    mounts = []

    def mount(name: str, options: str) -> Path:
        mounts.append(_mount(tmp_path / name, options))
        return mounts[-1]

    yield mount
    for target in reversed(mounts):
        subprocess.run(["umount", "-l", str(target)], check=False)


def _data(root: Path, n: int = 40) -> Path:
    """A small Fashion-MNIST-format dataset (official file names, gzipped) under ``root/fashion-mnist``."""
    folder = root / "fashion-mnist"
    folder.mkdir(parents=True)
    gen = torch.Generator().manual_seed(0)
    for prefix, count in (("train", n), ("t10k", 20)):
        images = torch.randint(0, 256, (count, 28, 28), dtype=torch.uint8, generator=gen).numpy()
        labels = (torch.arange(count) % 10).to(torch.uint8).numpy()
        for kind, array, dims in (("images", images, 3), ("labels", labels, 1)):
            (folder / f"{prefix}-{kind}-idx{dims}-ubyte.gz").write_bytes(gzip.compress(idx_bytes(array)))
    return root


def _fit(data: Path, runs: Path, *extra: str) -> list[str]:
    """``ninlab fit`` with the default recipe (its model, progress bar and callbacks) on the small dataset."""
    return ["fit", "--data.root", str(data), "--data.val_size", "8", "--data.batch_size", "8",
            "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(runs), *extra]  # fmt: skip


def _error_lines(err: str) -> list[str]:
    assert "Traceback" not in err, err
    return [line for line in err.splitlines() if line.startswith("ninlab: error:")]


# --- full and read-only disks ------------------------------------------------------------------------------------


@pytest.mark.parametrize("statvfs", ["reports-free-space", "reports-nothing"])
def test_full_disk_checkpoint_is_one_line_naming_file_and_room(statvfs, tmpfs, tmp_path, capsys, monkeypatch):
    """600 KiB hold the config and logs but not the default recipe's 0.85 MiB checkpoint."""
    if statvfs == "reports-nothing":  # a file system without usable statvfs: the write itself fails with ENOSPC
        monkeypatch.setattr("ninlab._runtime.tensor_files.free_bytes", lambda folder: None)
    runs = tmpfs("full", "size=600k") / "runs"
    code = main(_fit(_data(tmp_path / "data"), runs))
    lines = _error_lines(capsys.readouterr().err)
    assert code == 1 and len(lines) == 1, lines
    assert "No space left on device (needs about" in lines[0] and lines[0].endswith(".ckpt"), lines[0]
    assert not [p for p in runs.rglob("*") if p.is_file()], "a run without a checkpoint is removed, torn files too"


class FillDisk(Callback):
    """Fills the file system of ``folder`` up to ``leave`` bytes when epoch ``epoch`` starts, or when training ends
    (``epoch=-1``: the checkpoints are written, the run record is not)."""

    def __init__(self, folder: str, epoch: int = 1, leave: int = 64 * 1024) -> None:
        self.folder, self.epoch, self.leave = Path(folder), epoch, leave

    def _fill(self) -> None:
        stat = os.statvfs(self.folder)
        with open(self.folder / "filler", "wb") as file:
            file.write(b"\0" * max(0, stat.f_bavail * stat.f_frsize - self.leave))

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            self._fill()

    def on_train_end(self, trainer, pl_module) -> None:
        if self.epoch == -1:
            self.leave = 0
            self._fill()


def _fill_disk(disk: Path, epoch: int) -> str:
    init = {"folder": str(disk), "epoch": epoch}
    return json.dumps([{"class_path": "test_reliability_resources.FillDisk", "init_args": init}])


def test_disk_filling_mid_run_keeps_earlier_checkpoints_resumable(tmpfs, tmp_path, capsys):
    disk = tmpfs("disk", "size=8m")
    runs, data = disk / "runs", _data(tmp_path / "data")
    code = main(_fit(data, runs, "--trainer.max_epochs", "2", "--trainer.callbacks", _fill_disk(disk, 1)))
    lines = _error_lines(capsys.readouterr().err)
    assert code == 1 and len(lines) == 1 and "No space left on device (needs about" in lines[0], lines
    assert lines[0].endswith(".ckpt"), lines[0]
    (last,) = runs.rglob("last.ckpt")
    assert read_checkpoint(last)["epoch"] == 0, "epoch 0's checkpoint must stay as it was"
    assert not list(runs.rglob(".*.tmp")), "no temporary file may be left"
    (disk / "filler").unlink()
    assert main(_fit(data, runs, "--trainer.max_epochs", "2", "--ckpt_path", "last")) == 0
    resumed = max(runs.rglob("last.ckpt"), key=lambda p: p.stat().st_mtime)
    assert resumed != last and read_checkpoint(resumed)["epoch"] == 1


def test_disk_full_when_writing_the_run_record_names_it_and_keeps_the_checkpoints(tmpfs, tmp_path, capsys):
    disk = tmpfs("disk", "size=8m")
    runs = disk / "runs"
    code = main(_fit(_data(tmp_path / "data"), runs, *TINY, "--trainer.callbacks", _fill_disk(disk, -1)))
    lines = _error_lines(capsys.readouterr().err)
    assert code == 1 and len(lines) == 1 and "No space left on device" in lines[0], lines
    assert lines[0].endswith(("summary.json", "curves.png")), lines[0]
    (last,) = runs.rglob("last.ckpt")
    assert read_checkpoint(last)["epoch"] == 0
    assert not list(runs.rglob(".*.tmp")) and not list(runs.rglob("curves.png")), "no torn file may be left"


class NamelessWriteFailure(Callback):
    """Fails as a logger's write to a full disk does: an ``OSError`` with no file name (CSVLogger, TensorBoard)."""

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_nameless_write_failure_names_the_run_directory(tmp_path, capsys):
    callbacks = json.dumps([{"class_path": "test_reliability_resources.NamelessWriteFailure"}])
    runs = tmp_path / "runs"
    code = main(_fit(_data(tmp_path / "data"), runs, *TINY, "--trainer.callbacks", callbacks))
    lines = _error_lines(capsys.readouterr().err)
    assert code == 1 and len(lines) == 1, lines
    assert "No space left on device writing the run's logs (" in lines[0] and str(runs) in lines[0], lines[0]


def test_quota_exceeded_mid_write_is_one_line(tmp_path, capsys, monkeypatch):
    """EDQUOT (which statvfs cannot foresee) from the file's write(), swallowed by torch.save's zip writer."""
    atomic_open = tensor_files.atomic_open

    @contextlib.contextmanager
    def over_quota_after(path, limit=4096):
        with atomic_open(path) as file:
            written = 0

            def write(data):
                nonlocal written
                written += len(data)
                if written > limit:
                    raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))
                return type(file).write(file, data)

            yield SimpleNamespace(write=write, flush=file.flush)

    monkeypatch.setattr(tensor_files, "atomic_open", over_quota_after)
    runs = tmp_path / "runs"
    code = main(_fit(_data(tmp_path / "data"), runs, *TINY, "--trainer.enable_progress_bar", "false"))
    lines = _error_lines(capsys.readouterr().err)
    assert code == 1 and len(lines) == 1 and "Disk quota exceeded (needs about" in lines[0], lines
    assert lines[0].endswith(".ckpt") and not [p for p in runs.rglob("*") if p.is_file()], lines[0]


def test_short_writes_still_give_whole_files(tmp_path, monkeypatch):
    """NFS-style short write() counts: every atomic write (checkpoints, summary, plots) loops until all is written."""
    fdopen = os.fdopen

    class ShortWrites(io.FileIO):
        def write(self, data) -> int:
            return super().write(memoryview(data)[:1000])  # never more than 1000 bytes per call

    def short_fdopen(fd, mode="r", *args, **kwargs):
        return io.BufferedWriter(ShortWrites(fd, "w")) if mode == "wb" else fdopen(fd, mode, *args, **kwargs)

    monkeypatch.setattr(os, "fdopen", short_fdopen)
    runs = tmp_path / "runs"
    assert main(_fit(_data(tmp_path / "data"), runs, *TINY, "--trainer.enable_progress_bar", "false")) == 0
    monkeypatch.undo()
    (last,) = runs.rglob("last.ckpt")
    assert read_checkpoint(last)["epoch"] == 0
    (summary,) = runs.rglob("summary.json")
    assert json.loads(summary.read_text())["test_acc"] is not None
    assert next(runs.rglob("curves.png")).read_bytes().startswith(b"\x89PNG")


def test_read_only_run_root_is_one_line(tmpfs, tmp_path, capsys):
    runs = tmpfs("read-only", "ro,size=64k")
    code = main(_fit(_data(tmp_path / "data"), runs, *TINY))
    lines = _error_lines(capsys.readouterr().err)
    assert code == 1 and len(lines) == 1 and "Read-only file system" in lines[0] and str(runs) in lines[0], lines


@pytest.mark.parametrize("options", ["size=16k", "ro,size=16k"], ids=["full", "read-only"])
def test_unwritable_cache_warns_once_and_training_goes_on(options, tmpfs, tmp_path, capsys, caplog, monkeypatch):
    cache = tmpfs("cache", options)
    monkeypatch.setenv("NINLAB_DATA", str(cache))
    code = main(_fit(_data(tmp_path / "data"), tmp_path / "runs", *TINY))
    assert code == 0, capsys.readouterr().err
    warnings = [r.getMessage() for r in caplog.records if "not cached" in r.getMessage()]
    assert warnings and all(w.startswith("ninlab: warning: decoded fashion-mnist/") for w in warnings), warnings
    assert all("\n" not in w and str(cache) in w for w in warnings), warnings
    assert list((tmp_path / "runs").rglob("last.ckpt")), "training went on without the cache"


# --- memory bombs: a subprocess under an address-space limit ------------------------------------------------------

_DRIVER = (
    "import os, sys\n"
    "from ninlab.cli.main import main\n"
    "code = main(sys.argv[1:])\n"
    "peak = [line for line in open('/proc/self/status') if line.startswith('VmPeak')][0].split()[1]\n"
    "open(os.environ['PEAK_FILE'], 'w').write(peak)\n"
    "sys.exit(code)\n"
)


def _run_cli(argv: list[str], tmp_path: Path, limit: int | None = None) -> tuple[int, str, int]:
    """``ninlab ARGV`` in a fresh interpreter: exit code, stderr and peak address space in bytes."""
    import resource

    def cap() -> None:
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    peak_file = tmp_path / "peak"
    peak_file.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": f"{REPO_ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "PEAK_FILE": str(peak_file)}  # fmt: skip
    done = subprocess.run([sys.executable, "-c", _DRIVER, *argv], env=env, capture_output=True, text=True,
                          preexec_fn=cap, timeout=120)  # fmt: skip
    peak = int(peak_file.read_text()) * 1024 if peak_file.is_file() else -1
    return done.returncode, done.stderr, peak


@pytest.fixture(scope="module")
def baseline_peak(tmp_path_factory) -> int:
    """Peak address space of ``ninlab fit`` failing on a missing dataset: the heaviest imports, no data read."""
    tmp = tmp_path_factory.mktemp("baseline")
    code, err, peak = _run_cli(_fit(tmp / "empty", tmp / "runs", *TINY), tmp)
    assert code == 2 and peak > 0, err
    return peak


def _refused_within_budget(argv: list[str], tmp_path: Path, peak: int, says: str, capsys) -> None:
    """``argv`` fails with one line saying ``says``, in a subprocess capped at ``peak`` + 200 MiB, and in-process
    within 2 s (the refusal itself takes well under a second; the slack is for a machine loaded by other jobs)."""
    code, err, _ = _run_cli(argv, tmp_path, limit=peak + EXTRA_MEMORY)
    lines = _error_lines(err)
    assert code == 2 and len(lines) == 1 and says in lines[0], err
    start = time.perf_counter()
    assert main(argv) == 2
    assert time.perf_counter() - start < 2.0
    assert says in capsys.readouterr().err


def _gz_bomb(header: bytes, members: int = 32) -> bytes:
    """``header`` followed by ``members`` x 64 MiB of zeros (2 GiB for 32), as concatenated gzip members (2 MB)."""
    return gzip.compress(header, 9) + GZ_ZEROS * members


def test_idx_gzip_bomb_is_refused_without_inflating_it(tmp_path, baseline_peak, capsys):
    data = _data(tmp_path / "data")
    header = struct.pack(">BBBBIII", 0, 0, 0x08, 3, 60000, 28, 28)  # Fashion-MNIST's own header, then 2 GiB
    (data / "fashion-mnist" / "train-images-idx3-ubyte.gz").write_bytes(_gz_bomb(header))
    _refused_within_budget(_fit(data, tmp_path / "runs", *TINY), tmp_path, baseline_peak, "oversized", capsys)


def test_idx_header_declaring_more_than_the_file_can_hold_is_refused_unread(tmp_path):
    data = _data(tmp_path / "data")
    header = struct.pack(">BBBBIII", 0, 0, 0x08, 3, 4_000_000_000, 28, 28)
    (data / "fashion-mnist" / "train-images-idx3-ubyte.gz").write_bytes(_gz_bomb(header, members=1))
    code = main(_fit(data, tmp_path / "runs", *TINY))
    assert code == 2


def _bomb_checkpoint(source: Path, out: Path, monkeypatch) -> Path:
    """``source`` with its largest tensor record replaced by a deflated record of 2 GiB of zeros (a 2.6 MB file)."""
    chunk = 1 << 20
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    piece = deflate.compress(b"\0" * chunk) + deflate.flush(zlib.Z_FULL_FLUSH)  # identical for every chunk of zeros
    tail = deflate.flush()

    class Replay:  # zipfile's deflater, replaying the one compressed chunk instead of deflating 2 GiB again
        def compress(self, data: bytes) -> bytes:
            return piece

        def flush(self) -> bytes:
            return tail

    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(out, "w") as bomb:
        names = archive.namelist()
        target = max((n for n in names if "/data/" in n), key=lambda n: archive.getinfo(n).file_size)
        for name in names:
            if name != target:
                bomb.writestr(archive.getinfo(name), archive.read(name))
                continue
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            with monkeypatch.context() as patch:
                patch.setattr(zipfile, "_get_compressor", lambda *args, **kwargs: Replay())
                with bomb.open(info, "w", force_zip64=True) as record:
                    zeros = b"\0" * chunk
                    for _ in range(2048):
                        record.write(zeros)
    return out


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """``last.ckpt`` of a one-epoch tiny fit."""
    root = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NINLAB_DATA", str(root / "cache"))
        assert main(_fit(_data(root / "data"), root / "runs", *TINY, "--trainer.enable_progress_bar", "false")) == 0
    return next((root / "runs").rglob("last.ckpt"))


def test_checkpoint_decompression_bomb_is_refused_before_torch_load(
    checkpoint, tmp_path, monkeypatch, baseline_peak, capsys
):
    bomb = _bomb_checkpoint(checkpoint, tmp_path / "bomb.ckpt", monkeypatch)
    assert bomb.stat().st_size < 4 << 20
    argv = ["export", str(bomb), "--output", str(tmp_path / "m.onnx")]
    _refused_within_budget(argv, tmp_path, baseline_peak, "decompression bomb", capsys)
    assert not (tmp_path / "m.onnx").exists()


def test_cifar_member_declaring_a_huge_size_is_refused_unread(tmp_path, baseline_peak, capsys):
    info = tarfile.TarInfo(f"{CIFAR10.folder}/data_batch_1")
    info.size = 32 * ZEROS  # 2 GiB of zeros behind a valid header
    header = info.tobuf(format=tarfile.GNU_FORMAT)
    folder = tmp_path / "data" / "cifar10"
    folder.mkdir(parents=True)
    (folder / CIFAR10.archive).write_bytes(_gz_bomb(header))
    argv = _fit(tmp_path / "data", tmp_path / "runs", "--data.dataset", "cifar10", "--data.val_size", "4", *TINY)
    _refused_within_budget(argv, tmp_path, baseline_peak, "decompression bomb", capsys)


def _png(width: int, height: int) -> bytes:
    """A valid greyscale PNG of ``width`` x ``height`` zeros."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    raw = zlib.compress((b"\0" * (width + 1)) * height, 9)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def test_image_decompression_bomb_is_one_line(checkpoint, tmp_path, baseline_peak, capsys):
    images = tmp_path / "images"
    images.mkdir()
    (images / "bomb.png").write_bytes(_png(10_000, 10_000))  # 100 M pixels: above Pillow's 89 M warning limit
    argv = ["predict-images", str(checkpoint), str(images)]
    _refused_within_budget(argv, tmp_path, baseline_peak, "bomb.png", capsys)


def test_download_larger_than_the_cap_is_cut_off(tmp_path):
    source = tmp_path / "big.bin"
    source.write_bytes(b"\0" * (3 << 20))
    dest = tmp_path / "out" / "file.bin"
    with pytest.raises(DataError, match="to take at most 1048576 bytes"):
        download_file(source.as_uri(), dest, "0" * 32, max_bytes=1 << 20)
    assert list(dest.parent.iterdir()) == []


# --- non-finite weights ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nan_checkpoint(checkpoint, tmp_path_factory) -> Path:
    state = torch.load(checkpoint, weights_only=True)
    name = next(key for key in state["state_dict"] if key.endswith("weight"))
    state["state_dict"][name][0].fill_(float("nan"))
    path = tmp_path_factory.mktemp("nan") / "diverged.ckpt"
    torch.save(state, path)
    return path


ENTRY_POINTS = {
    "fit-resume": lambda c, d, r: [*_fit(d, r, *TINY), "--ckpt_path", str(c)],
    "validate": lambda c, d, r: ["validate", "--data.root", str(d), "--ckpt_path", str(c), *TINY],
    "test": lambda c, d, r: ["test", "--data.root", str(d), "--ckpt_path", str(c), *TINY],
    "predict": lambda c, d, r: ["predict", "--data.root", str(d), "--ckpt_path", str(c), *TINY],
    "export": lambda c, d, r: ["export", str(c), "--output", str(r / "m.onnx")],
    "predict-images": lambda c, d, r: ["predict-images", str(c), str(d)],
}


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_non_finite_weights_are_refused_by_every_entry_point(entry, nan_checkpoint, tmp_path, capsys, monkeypatch):
    data = _data(tmp_path / "data")
    runs = tmp_path / "runs"
    monkeypatch.chdir(tmp_path)  # validate/test/predict put their run dir under ./runs
    code = main(ENTRY_POINTS[entry](nan_checkpoint, data, runs))
    lines = _error_lines(capsys.readouterr().err)
    assert code == 2 and len(lines) == 1, lines
    assert "NaN/inf value(s)" in lines[0] and "state_dict." in lines[0] and str(nan_checkpoint) in lines[0], lines
    assert not list(tmp_path.rglob("*.onnx")) and not list(tmp_path.rglob("last.ckpt"))


def test_zip_screen_lets_ordinary_checkpoints_through(checkpoint):
    assert read_checkpoint(checkpoint)["state_dict"]
