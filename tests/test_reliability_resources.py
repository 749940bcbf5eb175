"""Exhausted disks through the command line: real full and read-only file systems, quotas, short writes.

Disks are real tmpfs mounts (skipped where mounting is not allowed); memory limits are real `ulimit -v` caps and
cgroups (fake cgroup trees, and a real cgroup v1 where one can be made). Memory bombs and non-finite checkpoints are in
``test_reliability_bombs.py``.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch import Callback

from conftest import idx_bytes
from ninlab._runtime import tensor_files
from ninlab._runtime.memory import cgroup_memory_left, memory_cgroup
from ninlab.cli import main
from ninlab.training.checkpoint_io import read_checkpoint

TINY = ["--model.model_kwargs", "{widths: [8, 8, 16]}"]


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


def _decode_refused_under(limit: str, limit_mb: int) -> None:
    """In a fresh process that has imported ninlab: ``limit`` caps its memory to ``limit_mb`` MB; an in-memory decode
    of ~1 GB must then be refused before allocating, with the one line that points to ``ninlab pack``."""
    code = f"""
import os, resource, sys
from pathlib import Path
from ninlab._runtime.memory import available_memory
from ninlab.data.decode import decode_images
from ninlab.errors import DataError
{limit}
assert available_memory() <= {limit_mb} * 2**20, available_memory()
try:
    decode_images([Path("x.png")] * 20_000, 3, (128, 128))  # ~1 GB decoded: more than the limit leaves
except DataError as error:
    print(error)
    sys.exit(0)
sys.exit(1)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "needs 983 MB of memory" in done.stdout and "ninlab pack" in done.stdout


def test_address_space_limit_refuses_an_in_memory_decode_with_the_pack_pointer():
    # `ulimit -v` (RLIMIT_AS) is how schedulers cap a job: the in-memory path must see it before allocating.
    _decode_refused_under(
        'mapped = int(Path("/proc/self/statm").read_text().split()[0]) * resource.getpagesize()\n'
        "resource.setrlimit(resource.RLIMIT_AS, (mapped + 300 * 2**20, resource.RLIM_INFINITY))",
        300,
    )


def _cgroup_files(directory: Path, **files: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name.replace("_", ".", 1)).write_text(text)


def test_cgroup_v1_limit_is_the_processs_own_hierarchical_one_less_used_memory(tmp_path):
    own = tmp_path / "memory" / "jobs" / "42"
    _cgroup_files(
        own,
        memory_limit_in_bytes=str(2**63 - 4096),
        memory_usage_in_bytes=str(700 * 2**20),
        memory_stat=f"cache 1\nhierarchical_memory_limit {1024 * 2**20}\ntotal_inactive_file {200 * 2**20}\n",
    )
    _cgroup_files(
        tmp_path / "memory",
        memory_limit_in_bytes=str(2**63 - 4096),
        memory_usage_in_bytes="0",
        memory_stat=f"hierarchical_memory_limit {2**63 - 4096}\n",
    )
    membership = "4:memory:/jobs/42\n1:cpu:/\n0::/\n"
    # 1024 MB limit (set on an ancestor, seen through hierarchical_memory_limit), 700 MB used of which 200 MB is
    # reclaimable page cache: 524 MB left.
    assert cgroup_memory_left(tmp_path, membership) == 524 * 2**20
    # Inside a cgroup namespace the process's path is not under the mount: the mount's own files are its cgroup's.
    assert cgroup_memory_left(tmp_path, "4:memory:/elsewhere/7\n") is None


def test_cgroup_v2_limit_is_the_tightest_of_the_cgroup_and_its_ancestors(tmp_path):
    _cgroup_files(
        tmp_path / "slurm", memory_max=str(800 * 2**20), memory_current=str(100 * 2**20), memory_stat="anon 1\n"
    )
    _cgroup_files(
        tmp_path / "slurm" / "job1",
        memory_max="max",
        memory_current=str(300 * 2**20),
        memory_stat=f"inactive_file {100 * 2**20}\n",
    )
    assert cgroup_memory_left(tmp_path, "0::/slurm/job1\n") == 700 * 2**20  # the parent's 800 MB less its 100 MB
    _cgroup_files(tmp_path / "slurm" / "job1", memory_max=str(400 * 2**20))
    assert cgroup_memory_left(tmp_path, "0::/slurm/job1\n") == 200 * 2**20  # its own 400 MB less 300 - 100 MB
    assert cgroup_memory_left(tmp_path, "0::/\n") is None  # no memory.max at the root: no limit


def test_memory_cgroup_limit_refuses_an_in_memory_decode_with_the_pack_pointer():
    # Containers, Kubernetes and Slurm cap a job's memory with a cgroup, not with `ulimit -v`: the in-memory path must
    # see the cgroup's limit before allocating. A real cgroup v1 memory controller, where this machine lets us make one.
    found = memory_cgroup()
    if found is None or found[1] != 1:
        pytest.skip("no cgroup v1 memory controller of this process's own to nest a cgroup in")
    cgroup = found[0] / f"ninlab-test-{os.getpid()}"
    try:
        cgroup.mkdir()
        (cgroup / "memory.limit_in_bytes").write_text(str(600 * 2**20))
    except OSError as error:
        pytest.skip(f"cannot make a memory cgroup here: {error}")
    try:
        _decode_refused_under(f"Path({str(cgroup / 'cgroup.procs')!r}).write_text(str(os.getpid()))", 600)
    finally:
        with contextlib.suppress(OSError):
            cgroup.rmdir()
