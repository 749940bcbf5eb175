"""``ninlab fit|test|export|predict-images`` end to end: recipes, run directories, resume, ONNX, prediction, errors."""

import csv
import importlib.util
import json
import logging
import os
import pickle
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnxruntime
import pytest
import torch
from lightning.pytorch.profilers import SimpleProfiler
from lightning.pytorch.trainer.connectors import callback_connector
from PIL import Image

from conftest import write_learnable_idx
from ninlab.cli import main
from ninlab.errors import CheckpointError, TrainingError
from ninlab.inference.export import export_onnx
from ninlab.inference.loading import load_classifier
from ninlab.training.lightning_cli import BF16_HINT, EMULATED_BF16_HINT, NinlabCLI
from ninlab.training.preflight import check_fit_trained
from ninlab.training.profiler import NullProfiler

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted(p.stem for p in (ROOT / "configs").glob("*.yaml"))
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def _write_cifar(folder: Path, per_batch: int = 8, seed: int = 0) -> None:
    """A tiny CIFAR-10 in the official python format (pickled dicts of uint8 N x 3072 data and label lists)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        batch = {"data": data, "labels": [int(v) for v in np.arange(per_batch) % 10]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=3))
    meta = {"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=3))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_learnable_idx(root / "fashion-mnist")
    write_learnable_idx(root / "mnist")  # the same official file names
    _write_cifar(root / "cifar-10-batches-py")
    return root


def _fit_args(root: Path, runs: Path, *extra: str) -> list[str]:
    return ["fit", "--data.root", str(root), "--data.val_size", "16", "--data.batch_size", "16",
            "--trainer.default_root_dir", str(runs), *QUIET, *extra]  # fmt: skip


def _only_run(runs: Path) -> Path:
    (run,) = [p for p in runs.glob("*/*") if p.is_dir()]
    return run


@pytest.fixture(scope="module")
def trained_run(data_root, tmp_path_factory) -> Path:
    """One short ``ninlab fit`` of the default recipe on the tiny data; its run directory."""
    runs = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NINLAB_DATA", str(tmp_path_factory.mktemp("cache")))
        assert main(_fit_args(data_root, runs, "--trainer.max_epochs", "2", "--trainer.log_every_n_steps", "1")) == 0
    return _only_run(runs)


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_recipe_runs_fast_dev_run(recipe, data_root, tmp_path, monkeypatch):
    assert {"d2l_fashion_mnist", "fast_cifar10", "fast_fashion_mnist", "gpu_fashion_mnist", "lightning_cifar10",
            "long_fashion_mnist", "paper_cifar10"} <= set(RECIPES)  # fmt: skip
    args = _fit_args(data_root, tmp_path, "--trainer.fast_dev_run", "1")
    if recipe.startswith("gpu_"):
        # bf16-mixed and device-resident data run as configured; bf16 is emulated (slow) on a CPU, so at 96x96 rather
        # than 224x224 (nin_d2l takes >= 67x67); compile is tested in test_gpu_path.py.
        args += ["--model.compile", "false", "--data.image_size", "96"]
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)  # restored afterwards
    assert main([args[0], "-c", str(ROOT / "configs" / f"{recipe}.yaml"), *args[1:]]) == 0
    # The GPU recipe lets cuDNN pick its convolution algorithms by timing them (trainer.benchmark).
    assert torch.backends.cudnn.benchmark == recipe.startswith("gpu_")
    summary = json.loads((_only_run(tmp_path) / "summary.json").read_text())
    assert summary["test_images"] > 0 and 0 <= summary["test_acc"] <= 1


def test_run_directory_holds_the_whole_record(trained_run, capsys):
    files = {p.relative_to(trained_run).as_posix() for p in trained_run.rglob("*") if p.is_file()}
    assert {"config.yaml", "metrics.csv", "curves.png", "confusion_matrix.png", "class_maps.png", "summary.json",
            "checkpoints/last.ckpt"} <= files  # fmt: skip
    assert any(f.startswith("checkpoints/epoch") for f in files)
    assert any(f.startswith("tensorboard/events.out.tfevents") for f in files)
    summary = json.loads((trained_run / "summary.json").read_text())
    assert summary["epochs"] == 2 and summary["train_images_per_s"] > 0 and summary["wall_s"] > 0
    # The steady rate is the second epoch's: the median of the epochs after the first.
    epoch_rates = [float(row["train/images_per_s"]) for row in csv.DictReader((trained_run / "metrics.csv").open())
                   if row.get("train/images_per_s")]  # fmt: skip
    assert len(epoch_rates) == 2 and summary["train_images_per_s_steady"] == round(epoch_rates[1], 1)
    assert {"test_acc", "val_acc", "versions", "machine"} <= set(summary)
    assert set(summary["versions"]) == {
        "python",
        "ninlab",
        "torch",
        "lightning",
        "torchmetrics",
        "numpy",
        "onnxruntime",
    }
    assert summary["machine"]["cpu_count"] >= 1
    header = (trained_run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train/loss", "train/acc", "val/loss", "val/acc", "test/acc", "lr-SGD/pg1"} <= set(header)


def test_checkpoints_are_plain_data_with_class_names(trained_run):
    checkpoint = torch.load(trained_run / "checkpoints" / "last.ckpt", weights_only=True)
    hparams = checkpoint["hyper_parameters"]
    assert hparams["class_names"][0] == "T-shirt/top" and hparams["input_size"] == (1, 28, 28)
    assert hparams["num_classes"] == 10 and len(hparams["mean"]) == 1


def test_resume_from_last_continues_the_newest_run(trained_run, data_root):
    runs = trained_run.parents[1]
    args = _fit_args(data_root, runs, "--trainer.max_epochs", "3", "--ckpt_path", "last")
    assert main(args) == 0
    resumed = max(p for p in runs.glob("*/*") if p.is_dir())
    assert resumed != trained_run
    summary = json.loads((resumed / "summary.json").read_text())
    assert summary["epochs"] == 3 and summary["steps"] == 3 * (96 - 16) // 16


def test_test_subcommand_with_the_saved_config(trained_run, tmp_path):
    best = next((trained_run / "checkpoints").glob("epoch*.ckpt"))
    args = ["test", "-c", str(trained_run / "config.yaml"), "--ckpt_path", str(best),
            "--trainer.default_root_dir", str(tmp_path), *QUIET]  # fmt: skip
    assert main(args) == 0
    assert json.loads((_only_run(tmp_path) / "summary.json").read_text())["test_images"] == 40


def test_export_onnx_matches_pytorch(trained_run, tmp_path, capsys):
    output = tmp_path / "model.onnx"
    assert main(["export", str(trained_run / "checkpoints" / "last.ckpt"), "--output", str(output)]) == 0
    assert "max abs diff" in capsys.readouterr().out
    model = load_classifier(trained_run / "checkpoints" / "last.ckpt")
    session = onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    x = torch.randn(5, 1, 28, 28)
    (logits,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(logits, model(x).numpy(), atol=1e-4)
    metadata = session.get_modelmeta().custom_metadata_map
    assert json.loads(metadata["class_names"])[1] == "Trouser"


def test_export_leaves_no_file_when_onnxruntime_disagrees(trained_run, tmp_path, monkeypatch):
    class Skewed(onnxruntime.InferenceSession):
        def run(self, *args, **kwargs):
            return [out + 1.0 for out in super().run(*args, **kwargs)]

    monkeypatch.setattr(onnxruntime, "InferenceSession", Skewed)
    with pytest.raises(CheckpointError, match="differ from PyTorch's by 1"):
        export_onnx(load_classifier(trained_run / "checkpoints" / "last.ckpt"), tmp_path / "model.onnx")
    assert list(tmp_path.iterdir()) == []


def test_export_of_a_network_with_large_logits_is_judged_by_their_size(trained_run, tmp_path):
    """A barely trained network can have logits in the thousands (a CIFAR-10 NiN after one epoch: up to 3,700):
    float32 rounding alone then differs by more than 1e-4, and the export must not be refused for it."""
    model = load_classifier(trained_run / "checkpoints" / "last.ckpt")
    with torch.no_grad():
        last_conv = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-1]
        last_conv.weight.mul_(1e4)  # logits 1e4 times as large, their rounding with them
    diff = export_onnx(model, tmp_path / "model.onnx")
    assert (tmp_path / "model.onnx").is_file() and diff > 1e-4  # above the absolute tolerance alone


def _band_images(folder: Path, labels: tuple[int, ...]) -> Path:
    """``folder`` with one 28x28 PNG per label, ``band<label>.png``: a bright band whose row depends on the label."""
    folder.mkdir()
    for label in labels:
        pixels = np.full((28, 28), 30, dtype=np.uint8)
        pixels[2 * label + 4 : 2 * label + 7] = 255
        Image.fromarray(pixels).save(folder / f"band{label}.png")
    return folder


def test_predict_images_prints_top_k(trained_run, tmp_path, capsys):
    folder = _band_images(tmp_path / "images", (1, 7))
    ckpt = str(trained_run / "checkpoints" / "last.ckpt")
    assert main(["predict-images", ckpt, str(folder), "--top-k", "3", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [Path(r["file"]).name for r in rows] == ["band1.png", "band7.png"]
    for row in rows:
        probs = [t["probability"] for t in row["top"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
        assert all(t["class"] in load_classifier(ckpt).class_names for t in row["top"])
    assert main(["predict-images", ckpt, str(folder / "band1.png"), "--format", "csv", "-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "file,rank,class,probability" and len(lines) == 3
    assert main(["predict-images", ckpt, str(folder)]) == 0
    assert "%" in capsys.readouterr().out


def test_predict_images_takes_the_exported_onnx_file_and_agrees_with_its_checkpoint(trained_run, tmp_path, capsys):
    """``predict-images model.onnx IMAGE...``: the deployed file gives the checkpoint's classes and probabilities."""
    folder = _band_images(tmp_path / "images", (1, 7))
    ckpt, onnx = str(trained_run / "checkpoints" / "last.ckpt"), str(tmp_path / "model.onnx")
    assert main(["export", ckpt, "-o", onnx]) == 0
    capsys.readouterr()
    rows = {}
    for model in (ckpt, onnx):
        assert main(["predict-images", model, str(folder), "--format", "json", "-k", "10"]) == 0
        rows[model] = json.loads(capsys.readouterr().out)
    for from_ckpt, from_onnx in zip(rows[ckpt], rows[onnx], strict=True):
        assert from_ckpt["file"] == from_onnx["file"]
        assert [t["class"] for t in from_ckpt["top"]][:1] == [t["class"] for t in from_onnx["top"]][:1]
        np.testing.assert_allclose(sorted(t["probability"] for t in from_ckpt["top"]),
                                   sorted(t["probability"] for t in from_onnx["top"]), atol=1e-5)  # fmt: skip
    assert main(["explain", onnx, str(folder)]) == 2
    assert "is an ONNX model: this command needs the checkpoint" in capsys.readouterr().err


def _onnx_with_metadata(source: Path, target: Path, **changes: str | None) -> Path:
    """A copy of the ONNX file ``source`` with metadata entries replaced (or, given None, removed)."""
    import onnx

    proto = onnx.load_from_string(source.read_bytes())
    kept = {p.key: p.value for p in proto.metadata_props}
    kept.update(changes)
    del proto.metadata_props[:]
    for key, value in kept.items():
        if value is not None:
            proto.metadata_props.add(key=key, value=value)
    target.write_bytes(proto.SerializeToString())
    return target


@pytest.mark.parametrize(("case", "expected"), [
    ("not onnx", "expected an ONNX model written by ninlab export, found one onnxruntime cannot load"),
    ("no ninlab metadata", "expected the metadata ninlab export writes"),
    ("class names not a list", "expected a list of class names"),
    ("huge input size", "expected an input size [C, H, W]"),
    ("std of zero", "expected 1 finite std values"),
    ("metadata not json", "its metadata 'mean' is not JSON"),
    ("missing", "no ONNX file at"),
])  # fmt: skip
def test_a_bad_onnx_file_is_one_line(case, expected, trained_run, tmp_path, capsys):
    onnx = tmp_path / "model.onnx"
    assert main(["export", str(trained_run / "checkpoints" / "last.ckpt"), "-o", str(onnx)]) == 0
    bad = tmp_path / "bad.onnx"
    if case == "not onnx":
        bad.write_bytes(b"\x08\x07not a model at all" * 10)
    elif case == "no ninlab metadata":
        _onnx_with_metadata(onnx, bad, producer=None)
    elif case == "class names not a list":
        _onnx_with_metadata(onnx, bad, class_names='"Shirt"')
    elif case == "huge input size":
        _onnx_with_metadata(onnx, bad, input_size="[1, 100000, 100000]")
    elif case == "std of zero":
        _onnx_with_metadata(onnx, bad, std="[0.0]")
    elif case == "metadata not json":
        _onnx_with_metadata(onnx, bad, mean="[0.2,")
    image = tmp_path / "one.png"
    Image.fromarray(np.full((28, 28), 9, dtype=np.uint8)).save(image)
    capsys.readouterr()
    assert main(["predict-images", str(bad), str(image)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("ninlab: error: ") and expected in line, line


def test_lightnings_predict_writes_each_images_top_classes_into_its_run(trained_run, tmp_path, capsys):
    """``ninlab predict`` (LightningCLI's batch prediction) used to compute every probability and show none."""
    folder = _band_images(tmp_path / "images", (1, 7, 3))
    ckpt = str(trained_run / "checkpoints" / "last.ckpt")
    args = ["predict", "-c", str(trained_run / "config.yaml"), "--ckpt_path", ckpt, "--data.predict_root",
            str(folder), "--data.batch_size", "2", "--trainer.default_root_dir", str(tmp_path / "runs")]  # fmt: skip
    assert main(args) == 0
    (run,) = (tmp_path / "runs").glob("*/*/")
    written = run / "predictions.csv"
    assert capsys.readouterr().out.splitlines()[-1] == f"wrote the top 3 classes of 3 images to {written}"
    rows = list(csv.reader(written.read_text().splitlines()))
    assert rows[0] == ["file", "rank", "class", "probability"] and len(rows) == 1 + 3 * 3  # two batches: 2 + 1
    assert [Path(r[0]).name for r in rows[1::3]] == ["band1.png", "band3.png", "band7.png"]  # the files' order
    assert all(r[1:2] == [str(i % 3 + 1)] for i, r in enumerate(rows[1:]))
    classes = load_classifier(ckpt).class_names
    assert all(r[2] in classes and 0 <= float(r[3]) <= 1 for r in rows[1:])


def test_summary_of_a_checkpoint_shows_the_network_as_trained(trained_run, capsys):
    """``ninlab summary CKPT``: the recipe's widths and the data's classes, not the variant's defaults."""
    ckpt = str(trained_run / "checkpoints" / "last.ckpt")
    assert main(["summary", ckpt]) == 0
    out = capsys.readouterr().out
    params = sum(p.numel() for p in load_classifier(ckpt).net.parameters())
    (total,) = [line for line in out.splitlines() if line.startswith("total")]
    assert f" {params:,} " in total and params != 459_594  # nin_fast's default widths would give 459,594
    assert main(["summary", ckpt, "--num-classes", "3"]) == 2
    assert "--num-classes is fixed by the checkpoint" in capsys.readouterr().err


def test_print_config_shows_the_default_recipe(capsys):
    assert main(["fit", "--print_config"]) == 0
    out = capsys.readouterr().out
    assert "name: fast_fashion_mnist" in out and "model: nin_fast" in out


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--model.model", "resnet"], "unknown model 'resnet'"), (["--model.lr", "-1"], "lr must be a positive"),
     (["--trainer.no_such_flag", "1"], "no_such_flag"), (["--model.optimizer", "lbfgs"], "unknown optimizer"),
     (["--trainer.enable_checkpointing", "false"], "enable_checkpointing=False")],
)  # fmt: skip
def test_cli_errors_are_one_line(extra, message, data_root, tmp_path, capsys):
    assert main(_fit_args(data_root, tmp_path, *extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ninlab: error:") and message in err[0]
    assert not list(tmp_path.rglob("*")), "a rejected command must leave no run directory"


def test_missing_checkpoint_is_one_line(tmp_path, capsys):
    assert main(["export", str(tmp_path / "none.ckpt")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_ddp_on_cpu_shares_one_run_directory_and_shards_the_data(data_root, tmp_path):
    """Two gloo processes (``--trainer.strategy ddp``) write one run from disjoint shards of the training set.

    DDP re-runs the command line for its second process, so this runs ``python -m ninlab.cli`` in a subprocess (with
    a timeout, so a hang fails the test). ``shard_recorder`` writes the indices each process trains on per epoch.
    """
    shards = tmp_path / "shards"
    recorder = {"class_path": "shard_recorder.RecordShards", "init_args": {"folder": str(shards)}}
    # The progress bar and model summary stay on (a run with the bar once hung at the first epoch's end).
    args = ["fit", "--data.root", str(data_root), "--data.val_size", "16", "--data.batch_size", "8",
            "--trainer.default_root_dir", str(tmp_path / "runs"), "--trainer.max_epochs", "2",
            "--trainer.accelerator", "cpu", "--trainer.strategy", "ddp", "--trainer.devices", "2",
            f"--trainer.callbacks+={json.dumps(recorder)}"]  # fmt: skip
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")]),
        "OMP_NUM_THREADS": "1",
    }
    done = subprocess.run([sys.executable, "-m", "ninlab.cli", *args], env=env, capture_output=True, text=True,
                          timeout=400, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("test accuracy") == 1
    summary = json.loads((_only_run(tmp_path / "runs") / "summary.json").read_text())
    assert summary["test_images"] == 40
    train_size = 96 - 16
    for epoch in range(2):
        ranks = [json.loads((shards / f"rank{rank}-epoch{epoch}.json").read_text()) for rank in range(2)]
        assert all(record["world_size"] == 2 for record in ranks)
        seen = [[index for batch in record["batches"] for index in batch] for record in ranks]
        assert len(seen[0]) == len(seen[1]) == train_size // 2  # equal shares, so every step has both processes
        assert not set(seen[0]) & set(seen[1]), "the two processes trained on overlapping samples"
        assert set(seen[0]) | set(seen[1]) == set(range(train_size))


@pytest.mark.parametrize(
    ("user_bar", "rich_installed"),
    [(None, False), (None, True), ("flag", False), ("config", True), ("rich-flag", True)],
)
def test_progress_bar_shows_running_loss_and_rate_unless_the_user_configures_one(
    user_bar, rich_installed, data_root, tmp_path, capsys, monkeypatch
):
    # Lightning's default bar is its RichProgressBar where rich is installed, else its TQDMProgressBar: ninlab's
    # bar replaces either, never one the user asked for.
    if rich_installed:
        pytest.importorskip("rich")
    monkeypatch.setattr(callback_connector, "_RICH_AVAILABLE", rich_installed)
    args = ["fit", "--data.root", str(data_root), "--data.val_size", "16", "--data.batch_size", "16",
            "--trainer.default_root_dir", str(tmp_path / "runs"), "--trainer.max_epochs", "1",
            "--trainer.enable_model_summary", "false"]  # fmt: skip
    if user_bar == "flag":
        args += ["--trainer.callbacks+=lightning.pytorch.callbacks.TQDMProgressBar"]
    elif user_bar == "config":  # a single callback, not a list
        config = tmp_path / "bar.yaml"
        config.write_text("trainer:\n  callbacks:\n    class_path: lightning.pytorch.callbacks.TQDMProgressBar\n")
        args[1:1] = ["-c", str(ROOT / "configs" / "fast_fashion_mnist.yaml"), "-c", str(config)]
    elif user_bar == "rich-flag":
        args += ["--trainer.callbacks+=lightning.pytorch.callbacks.RichProgressBar"]
    assert main(args) == 0
    bar = capsys.readouterr().out.replace("\r", "\n")  # Lightning's bars write to stdout
    if user_bar == "rich-flag":  # the user's rich bar stays: it draws boxes, not tqdm's percentages
        assert "Epoch 0/0" in bar and "Epoch 0: 100%" not in bar, bar[-2000:]
        return
    epoch_lines = [line for line in bar.splitlines() if line.startswith("Epoch 0: 100%")]
    assert epoch_lines, bar[-2000:]
    # ninlab's bar reads the loss and images/s without LightningModule.log; Lightning's shows neither.
    assert ("loss=" in epoch_lines[-1] and "img/s=" in epoch_lines[-1]) == (user_bar is None)


@pytest.mark.parametrize(("flag", "expected"), [(None, NullProfiler), ("simple", SimpleProfiler)])
def test_hooks_are_profiled_only_when_a_profiler_is_asked_for(flag, expected, data_root, tmp_path, monkeypatch,
                                                              caplog):  # fmt: skip
    # Lightning wraps every hook call in trainer.profiler.profile(): by default ninlab's NullProfiler, whose calls
    # cost next to nothing; a profiler the user names replaces it and reports as usual.
    seen = []
    monkeypatch.setattr(NinlabCLI, "before_fit", lambda cli: seen.append(cli.trainer.profiler))
    extra = [] if flag is None else ["--trainer.profiler", flag]
    with caplog.at_level(logging.INFO):
        assert main(_fit_args(data_root, tmp_path, "--trainer.fast_dev_run", "1", *extra)) == 0
    assert [type(profiler) for profiler in seen] == [expected]
    assert any("Profiler Report" in message for message in caplog.messages) == (flag is not None)


def test_null_profiler_contexts_nest_and_record_nothing():
    profiler = NullProfiler()
    with profiler.profile("[Callback]outer.on_train_batch_end"), profiler.profile("[LightningModule]inner"):
        pass
    assert profiler.summary() == ""


def test_resume_last_without_a_previous_run_is_one_line(tmp_path, capsys):
    assert main(["fit", "--ckpt_path", "last", "--trainer.default_root_dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no " in err[0] and "last.ckpt to resume from" in err[0]


def test_default_recipe_learns_real_fashion_mnist(real_data_dir, tmp_path, capsys):
    """An 8,000-image, 4-epoch ``ninlab fit`` of the default recipe reaches >= 80% on the official 10,000 test images.

    Its first two epochs train at 20x20 (the recipe's progressive resizing), the last two at 28x28, with the first
    convolution whitened from the training images; 86.1% on the 2-core Zen 4 CPU of 2026-12-04 (83.2% without the
    whitening on the AVX-512 CPU of 2026-12-01).
    """
    args = ["fit", "--data.root", str(real_data_dir), "--data.limit_train", "8000", "--data.val_size", "1000",
            "--trainer.max_epochs", "4", "--trainer.default_root_dir", str(tmp_path), *QUIET]  # fmt: skip
    assert main(args) == 0
    assert "test accuracy" in capsys.readouterr().out
    summary = json.loads((_only_run(tmp_path) / "summary.json").read_text())
    assert summary["test_images"] == 10_000
    assert summary["test_acc"] >= 0.80, summary


@pytest.mark.parametrize(("native", "precision", "hint"), [(True, "32-true", BF16_HINT), (False, "32-true", None),
                                                           (True, "bf16-mixed", None),
                                                           (False, "bf16-mixed", EMULATED_BF16_HINT)])  # fmt: skip
def test_fit_on_a_cpu_points_to_its_faster_precision(native, precision, hint, data_root, tmp_path, monkeypatch,
                                                     caplog):  # fmt: skip
    """fp32 on a CPU with bf16 instructions points to bf16-mixed; bf16 on one without (emulated) points to fp32."""
    monkeypatch.setattr("ninlab.training.lightning_cli.cpu_has_native_bf16", lambda: native)
    args = _fit_args(data_root, tmp_path, "--trainer.fast_dev_run", "1", "--trainer.precision", precision)
    with caplog.at_level(logging.INFO):
        assert main(args) == 0
    assert "GPU available: False, used: False" in caplog.messages  # Lightning's own lines are seen here too
    hints = [m for m in caplog.messages if m in (BF16_HINT, EMULATED_BF16_HINT)]
    assert hints == ([hint] if hint else []), hints


def test_a_bf16_fit_shows_no_model_size_warning(data_root, tmp_path, recwarn):
    """Lightning's summary warns that a bf16-mixed model's size "will not be accurate" and counts 32 bits: the right
    size, since the weights stay float32. The command line hides that warning; every other one still shows."""
    # The model summary on, as a user's fit has it (QUIET turns it off); the progress bar off: it cannot warn.
    args = ["fit", "--data.root", str(data_root), "--data.val_size", "16", "--data.batch_size", "16",
            "--trainer.default_root_dir", str(tmp_path), "--trainer.enable_progress_bar", "false",
            "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "1",
            "--trainer.precision", "bf16-mixed"]  # fmt: skip
    assert main(args) == 0
    messages = [str(w.message) for w in recwarn]
    assert not [m for m in messages if "not supported by the model summary" in m], messages


@pytest.mark.parametrize(("flag", "value"), [("max_epochs", "0"), ("max_steps", "0"), ("limit_train_batches", "0"),
                                             ("limit_train_batches", "0.0")])  # fmt: skip
def test_fit_that_would_train_nothing_is_refused_before_anything_runs(flag, value, data_root, tmp_path, capsys):
    # It used to test the random initial weights and exit 0 with a test accuracy, as if a model had been trained.
    assert main(_fit_args(data_root, tmp_path, f"--trainer.{flag}", value)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"ninlab: error: --trainer.{flag} {value} trains nothing"), err
    assert not list(tmp_path.rglob("*")), "a refused fit must leave no run directory"


@pytest.mark.parametrize(("accelerator", "expected"), [
    ("gpu", "sees no CUDA or MPS device: pass --trainer.accelerator cpu (or auto)"),
    ("tpu", "Requirement 'torch_xla"),  # Lightning raises ModuleNotFoundError: it was a traceback
])  # fmt: skip
def test_an_accelerator_this_machine_lacks_is_one_line_and_leaves_no_run(accelerator, expected, data_root, tmp_path,
                                                                          capsys):  # fmt: skip
    if accelerator == "gpu" and (torch.cuda.is_available() or torch.backends.mps.is_available()):
        pytest.skip("this machine has a GPU")
    if accelerator == "tpu" and importlib.util.find_spec("torch_xla") is not None:
        pytest.skip("torch_xla is installed")
    assert main(_fit_args(data_root, tmp_path / "runs", "--trainer.accelerator", accelerator)) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("ninlab: error: ") and expected in line
    assert not list(tmp_path.rglob("*/*")), "a run directory was left"


@pytest.mark.parametrize(("config", "suggestion"), [
    ("trainer:\n  max_epoch: 3\n", "; did you mean 'trainer.max_epochs'?"),
    ("data:\n  batch_sise: 64\n", "; did you mean 'data.batch_size'?"),
    ("model:\n  label_smothing: 0.1\n", "; did you mean 'model.label_smoothing'?"),
    ("seed_everythin: 1\n", "; did you mean 'seed_everything'?"),
    ("model:\n  learning_rate: 0.1\n", ""),  # nothing close enough: no guess
])  # fmt: skip
def test_a_misspelt_option_in_a_config_file_names_the_closest_one(config, suggestion, tmp_path, capsys):
    recipe = tmp_path / "mine.yaml"
    recipe.write_text(config)
    assert main(["fit", "-c", str(recipe), "--trainer.default_root_dir", str(tmp_path / "runs")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("ninlab: error: Subcommand 'fit' does not accept option '")
    assert line.endswith(f"'{suggestion}") and not (tmp_path / "runs").exists()


def test_default_recipe_on_a_smaller_dataset_suggests_a_validation_size(tmp_path, capsys):
    """The default recipe holds out 5,000 images (for Fashion-MNIST); the digits have 1,437 to train on."""
    assert main(["fit", "--data.dataset", "digits", "--trainer.default_root_dir", str(tmp_path)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("ninlab: error: val_size must be below the 1437 training images of digits, found 5000")
    assert line.endswith("lower --data.val_size (e.g. 143, a tenth of them)") and not list(tmp_path.iterdir())


def test_empty_test_split_is_refused_before_training_with_one_line(tmp_path):
    """Run as a user does (a subprocess, Lightning's own log handler): the error is the only line on stderr."""
    write_learnable_idx(tmp_path / "data" / "fashion-mnist", n_test=0)
    args = ["fit", "--data.root", str(tmp_path / "data"), "--data.val_size", "16", "--data.batch_size", "16",
            "--trainer.default_root_dir", str(tmp_path / "runs"), "--trainer.max_epochs", "1"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "NINLAB_DATA": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-m", "ninlab.cli", *args], env=env, capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    (line,) = done.stderr.strip().splitlines()  # before Lightning's "GPU available..." lines, not after them
    assert line.startswith("ninlab: error: the test split of fashion-mnist") and "holds no images" in line
    assert "test accuracy" not in done.stdout and not (tmp_path / "runs").exists()


@pytest.mark.parametrize(("step", "batches", "stops"), [(0, 0, True), (0, float("inf"), False), (12, 0, False)])
def test_fit_that_took_no_step_stops_before_testing(step, batches, stops):
    # (0, inf): ddp_spawn's launching process, whose trainer did not train itself; (12, 0): a resumed, finished run.
    trainer = SimpleNamespace(global_step=step, num_training_batches=batches)
    if stops:
        with pytest.raises(TrainingError, match="fit took no training step"):
            check_fit_trained(trainer)
    else:
        check_fit_trained(trainer)


@pytest.mark.parametrize("argv", [["models"], ["summary", "nin_fast"], ["pack", "--help"], ["--help"]])
def test_light_commands_never_import_lightning(argv):
    """Only the command being run is imported: ``ninlab models``, ``summary``, ``pack`` and ``--help`` need no
    Lightning (whose import took ~5.5 s of a 2-core Zen 3's 11 s for ``ninlab models`` when every command's module
    was imported)."""
    code = "\n".join(["import sys", "from ninlab.cli.main import main", "try:", "    code = main(sys.argv[1:])",
                      "except SystemExit as e:", "    code = e.code", "assert 'lightning' not in sys.modules",
                      "sys.exit(code)"])  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip()
