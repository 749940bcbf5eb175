"""A run SIGKILLed mid-epoch, during validation or while writing ``last.ckpt`` resumes to the same bits.

Each case runs ``ninlab fit`` in a subprocess that kills itself (``killpoints.KillAt``), checks that the newest
``last.ckpt`` is intact, resumes with ``--ckpt_path last`` and compares the final weights and the summary's metrics
bitwise with one uninterrupted run (CPU, seed 0, ``--trainer.deterministic true``, dropout on so the global RNG
matters). Runs are tiny (3 epochs x 4 batches of 64, 8-8-16 channels) so each subprocess takes seconds.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import idx_bytes

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("val_acc", "val_loss", "test_acc", "test_loss", "epochs", "steps")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """Fashion-MNIST-format files: 320 training images (256 train + 64 val) and 64 test images."""
    root = tmp_path_factory.mktemp("data")
    folder = root / "fashion-mnist"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 320), ("t10k", 64)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        for kind, array in (("images", images), ("labels", labels)):
            (folder / f"{prefix}-{kind}-idx{array.ndim}-ubyte.gz").write_bytes(gzip.compress(idx_bytes(array)))
    return root


def _fit(data_root: Path, runs: Path, cache: Path, *extra: str) -> subprocess.CompletedProcess:
    args = ["fit", "--data.root", str(data_root), "--data.val_size", "64", "--data.batch_size", "64",
            "--trainer.max_epochs", "3", "--trainer.deterministic", "true", "--seed_everything", "0",
            "--model.model_kwargs", "{widths: [8, 8, 16], drop_rate: 0.3}", "--trainer.default_root_dir", str(runs),
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false", *extra]  # fmt: skip
    # tests/ on the path for killpoints; one thread, as in every run compared, and the same cache for all of them.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")]),
           "NINLAB_DATA": str(cache), "OMP_NUM_THREADS": "1"}  # fmt: skip
    return subprocess.run([sys.executable, "-m", "ninlab.cli", *args], env=env, capture_output=True, text=True,
                          timeout=180, check=False)  # fmt: skip


def _newest_run(runs: Path) -> Path:
    return max(p for p in runs.glob("*/*") if p.is_dir())


def _final(run: Path) -> tuple[dict, dict]:
    summary = json.loads((run / "summary.json").read_text())
    weights = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    return {key: summary[key] for key in METRICS}, weights


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def uninterrupted(data_root, cache, tmp_path_factory) -> tuple[dict, dict]:
    runs = tmp_path_factory.mktemp("uninterrupted")
    done = _fit(data_root, runs, cache)
    assert done.returncode == 0, done.stderr[-3000:]
    return _final(_newest_run(runs))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("point", "epoch", "batch", "resumed_epoch"),
    [("train_batch", 2, 2, 1), ("validation", 1, 0, 0), ("checkpoint_write", 1, 0, 0)],
    ids=["mid-epoch", "during-validation", "during-checkpoint-write"],
)
def test_killed_run_resumes_bitwise_identical(point, epoch, batch, resumed_epoch, data_root, cache, uninterrupted,
                                              tmp_path):  # fmt: skip
    kill = {"class_path": "killpoints.KillAt", "init_args": {"point": point, "epoch": epoch, "batch": batch}}
    killed = _fit(data_root, tmp_path, cache, f"--trainer.callbacks+={json.dumps(kill)}")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    checkpoints = _newest_run(tmp_path) / "checkpoints"
    # The newest last.ckpt is whole (it loads as plain data) and is the previous epoch's, even when the kill hit its
    # rewrite: then only the hidden temporary file is torn.
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["epoch"] == resumed_epoch
    torn = list(checkpoints.glob(".last.ckpt.*.tmp"))
    assert len(torn) == (point == "checkpoint_write")

    resumed = _fit(data_root, tmp_path, cache, "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    metrics, weights = _final(_newest_run(tmp_path))
    expected_metrics, expected_weights = uninterrupted
    assert metrics == expected_metrics
    assert weights.keys() == expected_weights.keys()
    for name, tensor in expected_weights.items():
        assert torch.equal(weights[name], tensor), name
