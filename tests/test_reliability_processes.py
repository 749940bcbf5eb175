"""Several processes and stop signals: DDP runs with every default end, and a signalled run stops cleanly.

Every case runs ``python -m ninlab.cli fit`` in a subprocess, as a user does, with the progress bar, the model
summary and every default callback on, one thread per process, and a timeout so a hang fails the test rather than
CI. Signals are real: sent to the process group's leader from outside, or by ``killpoints.KillAt`` from inside
the run at an exact batch (``os.kill``), so the resumed run can be compared bit for bit with an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import write_learnable_idx

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("val_acc", "val_loss", "test_acc", "test_loss", "epochs", "steps")


def _write_fashion_mnist(root: Path, n_train: int, n_test: int) -> Path:
    write_learnable_idx(root / "fashion-mnist", n_train, n_test)
    return root


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> Path:
    """96 training images (16 for validation) and 40 test images."""
    return _write_fashion_mnist(tmp_path_factory.mktemp("small"), 96, 40)


@pytest.fixture(scope="module")
def resume_data(tmp_path_factory) -> Path:
    """320 training images (64 for validation) and 64 test images: 4 batches of 64 an epoch."""
    return _write_fashion_mnist(tmp_path_factory.mktemp("resume"), 320, 64)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def _env(cache: Path) -> dict[str, str]:
    # tests/ on the path for killpoints; one thread per process (the machine has 2 cores); one cache for all runs.
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")]),
            "NINLAB_DATA": str(cache), "OMP_NUM_THREADS": "1"}  # fmt: skip


def _default_stop_signals() -> None:
    # A shell that starts the tests in the background (`cmd &`) ignores SIGINT in them, and nohup ignores SIGHUP;
    # ninlab rightly keeps an ignored signal ignored, so the runs here start with the dispositions of a terminal.
    for name in ("SIGINT", "SIGHUP"):
        signal.signal(getattr(signal, name), signal.SIG_DFL)


def _ninlab(args: list[str], cache: Path, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ninlab.cli", *args], env=_env(cache), capture_output=True,
                          text=True, timeout=timeout, check=False, preexec_fn=_default_stop_signals)  # fmt: skip


def _only_run(runs: Path) -> Path:
    (run,) = [p for p in runs.glob("*/*") if p.is_dir()]
    return run


def _group_members(pgid: int) -> list[int]:
    """Processes still alive (not zombies) in process group ``pgid``."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def _stop_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("ninlab:")]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "ddp_spawn"])
def test_ddp_with_every_default_trains_validates_and_tests(strategy, small_data, cache, tmp_path):
    # The run that hung: at the end of the first epoch rank 0's progress bar reduced a logged value while rank 1
    # was already gathering the epoch's tally. Two epochs with validation, then the test of the best checkpoint.
    runs = tmp_path / "runs"
    args = ["fit", "--data.root", str(small_data), "--data.val_size", "16", "--data.batch_size", "8",
            "--trainer.default_root_dir", str(runs), "--trainer.max_epochs", "2", "--trainer.accelerator", "cpu",
            "--trainer.devices", "2", "--trainer.strategy", strategy]  # fmt: skip
    done = _ninlab(args, cache, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.stdout.count("test accuracy") == 1 and "Epoch 1: 100%" in done.stdout
    run = _only_run(runs)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs"] == 2 and summary["test_images"] == 40 and summary["train_images_per_s"] > 0
    # The best checkpoint was tested, and the line says which (ddp_spawn tests in processes of its own).
    assert summary["best_checkpoint"] in done.stdout and "last weights" not in done.stdout


# Registered before the model's setup, so it runs after ninlab's own exit handler (atexit runs last-in, first-out).
_PROCESS_GROUP_AT_EXIT = """
import atexit, sys
import torch, torch.distributed as dist
from ninlab.training.module import NiNClassifier
atexit.register(lambda: print("initialized at exit:", dist.is_initialized(), flush=True))
dist.init_process_group("gloo", init_method=sys.argv[1], rank=0, world_size=1)
gathered = [torch.zeros(2)]
dist.all_gather(gathered, torch.ones(2))
NiNClassifier(model="nin_fast", model_kwargs={"widths": [4, 4, 8]}).setup("fit")
"""


def test_a_ddp_process_destroys_its_process_group_before_the_interpreter_finalises(tmp_path):
    # A gloo worker thread still letting go of the last collective when the interpreter finalised aborted DDP ranks
    # at exit (SIGABRT, "terminate called without an active exception"); destroying the group first joins it.
    store = (tmp_path / "store").as_uri()
    done = subprocess.run([sys.executable, "-c", _PROCESS_GROUP_AT_EXIT, store], env=_env(tmp_path),
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "initialized at exit: False" in done.stdout, done.stdout


@pytest.mark.slow
def test_sigterm_to_the_ddp_parent_stops_every_process(cache, tmp_path):
    data = _write_fashion_mnist(tmp_path / "data", 2000, 40)
    runs = tmp_path / "runs"
    args = ["fit", "--data.root", str(data), "--data.val_size", "16", "--data.batch_size", "8",
            "--trainer.default_root_dir", str(runs), "--trainer.max_epochs", "50", "--trainer.accelerator", "cpu",
            "--trainer.devices", "2", "--trainer.strategy", "ddp"]  # fmt: skip
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with out.open("w") as stdout, err.open("w") as stderr:
        parent = subprocess.Popen([sys.executable, "-m", "ninlab.cli", *args], env=_env(cache), stdout=stdout,
                                  stderr=stderr, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while "Epoch 1:" not in out.read_text() and parent.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert parent.poll() is None, err.read_text()[-3000:]
        assert len(_group_members(parent.pid)) == 2, "expected the parent and one DDP process"
        parent.send_signal(signal.SIGTERM)  # the parent only, as `kill PID` does
        sent = time.monotonic()
        returncode = parent.wait(timeout=60)
        while _group_members(parent.pid) and time.monotonic() - sent < 60:
            time.sleep(0.2)
        stopped_in = time.monotonic() - sent
        assert not _group_members(parent.pid), "a DDP process outlived its parent"
    finally:
        if parent.poll() is None or _group_members(parent.pid):
            os.killpg(parent.pid, signal.SIGKILL)
    assert returncode == 128 + signal.SIGTERM, err.read_text()[-3000:]
    assert stopped_in < 30, f"took {stopped_in:.1f} s"
    (line,) = _stop_lines(err.read_text())  # once, from global rank 0
    assert line.startswith("ninlab: stopped by SIGTERM") and "--ckpt_path" in line
    assert "Traceback" not in err.read_text()
    last = _only_run(runs) / "checkpoints" / "last.ckpt"
    assert str(last) in line and torch.load(last, weights_only=True)["epoch"] >= 0


def _resume_args(data: Path, runs: Path, *extra: str) -> list[str]:
    return ["fit", "--data.root", str(data), "--data.val_size", "64", "--data.batch_size", "64",
            "--trainer.max_epochs", "3", "--trainer.deterministic", "true", "--seed_everything", "0",
            "--model.model_kwargs", "{widths: [8, 8, 16], drop_rate: 0.3}", "--trainer.default_root_dir", str(runs),
            *extra]  # fmt: skip


def _final(run: Path) -> tuple[dict, dict]:
    summary = json.loads((run / "summary.json").read_text())
    weights = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    return {key: summary[key] for key in METRICS}, weights


@pytest.fixture(scope="module")
def uninterrupted(resume_data, cache, tmp_path_factory) -> tuple[dict, dict]:
    runs = tmp_path_factory.mktemp("uninterrupted")
    done = _ninlab(_resume_args(resume_data, runs), cache, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    return _final(_only_run(runs))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "resume"), [("SIGTERM", True), ("SIGINT", True), ("SIGHUP", False), ("SIGUSR1", False)]
)
def test_stop_signal_ends_fit_with_one_line_and_the_resumed_run_matches(name, resume, resume_data, cache,
                                                                        uninterrupted, tmp_path):  # fmt: skip
    # Sent from inside the run before batch 2 of epoch 1, so the stop point is exact.
    kill = {"class_path": "killpoints.KillAt", "init_args": {"point": "train_batch", "epoch": 1, "batch": 2,
                                                            "send": name}}  # fmt: skip
    args = _resume_args(resume_data, tmp_path, f"--trainer.callbacks+={json.dumps(kill)}")
    stopped = _ninlab(args, cache, timeout=180)
    assert stopped.returncode == 128 + getattr(signal, name), stopped.stderr[-3000:]
    (line,) = _stop_lines(stopped.stderr)
    assert stopped.stderr.rstrip().endswith(line), "the stop line must be the last one"
    for noise in ("Traceback", "Detected KeyboardInterrupt", "Received SIGTERM"):
        assert noise not in stopped.stderr
    last = _only_run(tmp_path) / "checkpoints" / "last.ckpt"
    assert line.startswith(f"ninlab: stopped by {name}; last.ckpt holds the last finished epoch")
    assert torch.load(last, weights_only=True)["epoch"] == 0  # intact: the end of epoch 0
    summary = json.loads((_only_run(tmp_path) / "summary.json").read_text())
    assert summary["error"] == "stopped by a signal; resume from last.ckpt"
    command = shlex.split(line.split("resume with: ", 1)[1])
    assert command[0] == "ninlab" and command[-2:] == ["--ckpt_path", str(last)]
    assert command[1:-2] == args  # the user's command line, unchanged
    if not resume:
        return
    # Without the callback that sent the signal, which would stop the resumed run again.
    resumed = _ninlab([arg for arg in command[1:] if "killpoints" not in arg], cache, timeout=180)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    newest = max(p for p in tmp_path.glob("*/*") if p.is_dir())
    metrics, weights = _final(newest)
    expected_metrics, expected_weights = uninterrupted
    assert metrics == expected_metrics
    assert weights.keys() == expected_weights.keys()
    for key, tensor in expected_weights.items():
        assert torch.equal(weights[key], tensor), key
