"""Memory bombs and non-finite checkpoints through the command line: one line, before anything is inflated.

Bombs are real files that would inflate to gigabytes, run through ``ninlab.cli.main`` in a fresh interpreter under an
address-space limit of 200 MiB above what ``ninlab fit`` needs to fail on a missing dataset, so a reader that
inflated first would die of ``MemoryError``; each refusal is timed again in-process.
"""

from __future__ import annotations

import gzip
import os
import struct
import subprocess
import sys
import tarfile
import time
import zipfile
import zlib
from pathlib import Path

import pytest
import torch

from conftest import REPO_ROOT
from ninlab.cli import main
from ninlab.data.cifar import CIFAR10
from ninlab.data.download import download_file
from ninlab.errors import DataError
from ninlab.training.checkpoint_io import read_checkpoint
from test_reliability_resources import TINY, _data, _error_lines, _fit

EXTRA_MEMORY = 200 << 20
ZEROS = 64 << 20
GZ_ZEROS = gzip.compress(b"\0" * ZEROS, 9)  # one gzip member of 64 MiB of zeros (64 KiB), reused by every bomb


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
