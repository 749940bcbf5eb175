"""Nothing read from a checkpoint or a config becomes code, a class or an import; export never clobbers files.

Every payload would create a marker file if it ran (``subprocess.Popen`` running ``touch``, ``logging.FileHandler``
opening the marker, or a class of a module planted on ``sys.path`` whose ``__init__`` writes it). Each case runs the
real CLI in-process and checks: exit 2, exactly one ``ninlab: error:`` line on stderr, no marker, no run directory.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import tarfile
import textwrap
import typing
from collections.abc import Callable
from pathlib import Path

import onnxruntime
import pytest
import torch
import yaml

from ninlab.cli import main
from ninlab.data import ImageDataModule
from ninlab.models import nin
from ninlab.models.registry import ModelKwargs
from ninlab.training.module import NiNClassifier
from ninlab.training.untrusted import hyperparameter_problem

ROOT = Path(__file__).resolve().parents[1]
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
TINY = ["--model.model_kwargs", "{widths: [8, 8, 16]}"]


def popen(marker: Path) -> dict:
    return {"class_path": "subprocess.Popen", "init_args": {"args": f"touch {marker}", "shell": True}}


def file_handler(marker: Path) -> dict:
    return {"class_path": "logging.FileHandler", "init_args": {"filename": str(marker)}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """A one-epoch tiny ``ninlab fit`` (nin_fast 8-8-16) on generated Fashion-MNIST: its data, checkpoint and config."""
    from conftest import write_learnable_idx

    base = tmp_path_factory.mktemp("trained")
    write_learnable_idx(base / "data" / "fashion-mnist", n_train=48, n_test=16)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NINLAB_DATA", str(base / "cache"))
        argv = ["fit", "--data.root", str(base / "data"), "--data.val_size", "8", "--data.batch_size", "8",
                "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(base / "runs"), *TINY,
                *QUIET]  # fmt: skip
        assert main(argv) == 0
    checkpoint = next((base / "runs").rglob("last.ckpt"))
    return {"data": base / "data", "checkpoint": checkpoint, "config": checkpoint.parents[1] / "config.yaml"}


def _tampered(trained: dict, folder: Path, change: Callable[[dict], None], name: str = "evil.ckpt") -> Path:
    """The trained checkpoint (real structure, real weights) with ``change`` applied; it still loads weights-only."""
    checkpoint = torch.load(trained["checkpoint"], weights_only=True)
    change(checkpoint)
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)
    torch.load(path, weights_only=True)  # plain data: torch's own safe loader accepts it
    return path


def _refused(argv: list[str], marker: Path, runs: Path, capsys, says: str = "") -> str:
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err[-3000:]
    assert len(lines) == 1 and lines[0].startswith("ninlab: error: ") and "Traceback" not in err, err[-3000:]
    assert says in lines[0], lines[0]
    assert "weights_only=False" not in lines[0] and "weights_only` set to `False" not in lines[0]
    assert not marker.exists(), "the payload ran"
    made = [p for p in runs.rglob("*") if p.is_file() and "planted" not in p.parts] if runs.exists() else []
    assert not made, f"a refused command left {made}"
    return lines[0]


def _lightning(subcommand: str, trained: dict, runs: Path, *extra: str) -> list[str]:
    return [subcommand, "--data.root", str(trained["data"]), "--data.val_size", "8", "--data.batch_size", "8",
            "--trainer.default_root_dir", str(runs), *QUIET, *extra]  # fmt: skip


# Payloads inside a checkpoint's hyper_parameters: each a (name, change(checkpoint, marker)) pair.
CHECKPOINT_PAYLOADS: dict[str, Callable[[dict, Path], None]] = {
    "model_kwargs-class_path": lambda c, m: c["hyper_parameters"].update(model_kwargs={"x": popen(m)}),
    "model_kwargs-file-handler": lambda c, m: c["hyper_parameters"].update(model_kwargs={"x": file_handler(m)}),
    "model_kwargs-in-list": lambda c, m: c["hyper_parameters"].update(model_kwargs={"widths": [8, popen(m)]}),
    "model_kwargs-init_args-only": lambda c, m: c["hyper_parameters"].update(model_kwargs={"x": {"init_args": {}}}),
    "class_names": lambda c, m: c["hyper_parameters"].update(class_names=[popen(m)] * 10),
    "mean": lambda c, m: c["hyper_parameters"].update(mean=popen(m)),
    "dunder-path-key": lambda c, m: c["hyper_parameters"].update(model_kwargs={"__path__": str(m)}),
    "lightning-_class_path": lambda c, m: c["hyper_parameters"].update(_class_path="logging.FileHandler"),
    "unknown-key": lambda c, m: c["hyper_parameters"].update(evil=file_handler(m)),
    "wrong-type": lambda c, m: c["hyper_parameters"].update(lr="0.1; touch it"),
    "datamodule-hparams": lambda c, m: c["datamodule_hyper_parameters"].update(root=file_handler(m)),
}


@pytest.mark.parametrize("payload", CHECKPOINT_PAYLOADS, ids=list(CHECKPOINT_PAYLOADS))
def test_checkpoint_hyperparameters_never_become_code(payload, trained, tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = _tampered(trained, tmp_path, lambda c: CHECKPOINT_PAYLOADS[payload](c, marker))
    runs = tmp_path / "runs"
    line = _refused(_lightning("test", trained, runs, "--ckpt_path", str(evil)), marker, runs, capsys)
    assert "cannot be used" in line and "nothing of it was run" in line


@pytest.mark.parametrize("subcommand", ["fit", "validate", "test", "predict"])
def test_every_lightning_subcommand_checks_the_checkpoint(subcommand, trained, tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = _tampered(trained, tmp_path, lambda c: c["hyper_parameters"].update(model_kwargs={"x": popen(marker)}))
    runs = tmp_path / "runs"
    extra = ["--data.predict_root", str(tmp_path)] if subcommand == "predict" else []
    _refused(_lightning(subcommand, trained, runs, "--ckpt_path", str(evil), *extra), marker, runs, capsys,
             says="model_kwargs.x has a 'class_path' key")  # fmt: skip


def test_ckpt_path_last_checks_the_planted_checkpoint(trained, tmp_path, capsys):
    marker = tmp_path / "pwned"
    runs = tmp_path / "runs"
    # --ckpt_path last picks the newest runs/<name>/*/checkpoints/last.ckpt; the recipe's name is fast_fashion_mnist.
    planted = runs / "fast_fashion_mnist" / "planted" / "checkpoints"
    _tampered(trained, planted, lambda c: c["hyper_parameters"].update(model_kwargs={"x": popen(marker)}), "last.ckpt")
    _refused(
        _lightning("fit", trained, runs, "--ckpt_path", "last"), marker, runs, capsys, says="last.ckpt cannot be used"
    )
    assert [p.name for p in (runs / "fast_fashion_mnist").iterdir()] == ["planted"]


@pytest.mark.parametrize("command", ["export", "predict-images"])
def test_export_and_predict_images_check_the_checkpoint(command, trained, tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = _tampered(
        trained, tmp_path, lambda c: c["hyper_parameters"].update(model_kwargs={"x": file_handler(marker)})
    )
    argv = [command, str(evil), *([str(tmp_path)] if command == "predict-images" else [])]
    _refused(argv, marker, tmp_path / "runs", capsys, says="cannot be used")
    assert not list(tmp_path.glob("*.onnx"))


def _config(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


# Payloads in a ``-c`` config (YAML text) and on the command line (arguments).
CONFIG_PAYLOADS: dict[str, Callable[[Path], str]] = {
    "model_kwargs-popen": lambda m: "model:\n  model_kwargs: " + json.dumps({"x": popen(m)}),
    "model_kwargs-file-handler": lambda m: "model:\n  model_kwargs: " + json.dumps({"widths": file_handler(m)}),
    "python-tag": lambda m: f"model:\n  model_kwargs:\n    widths: !!python/object/apply:os.system ['touch {m}']",
    "model-class_path": lambda m: "model: " + json.dumps(file_handler(m)),
    "data-class_path": lambda m: "data: " + json.dumps(file_handler(m)),
    "data-root-class_path": lambda m: "data:\n  root: " + json.dumps(file_handler(m)),
}
COMMAND_LINE_PAYLOADS: dict[str, Callable[[Path], list[str]]] = {
    "model_kwargs": lambda m: ["--model.model_kwargs", json.dumps({"x": popen(m)})],
    "model_kwargs-nested": lambda m: ["--model.model_kwargs", json.dumps({"norm_layer": file_handler(m)})],
    "class_names": lambda m: ["--model.class_names", json.dumps([file_handler(m)])],
}


@pytest.mark.parametrize(
    "payload",
    [*CONFIG_PAYLOADS, *COMMAND_LINE_PAYLOADS],
    ids=[*(f"config-{n}" for n in CONFIG_PAYLOADS), *(f"cli-{n}" for n in COMMAND_LINE_PAYLOADS)],
)
def test_config_and_command_line_values_never_become_code(payload, trained, tmp_path, capsys):
    marker = tmp_path / "pwned"
    runs = tmp_path / "runs"
    if payload in CONFIG_PAYLOADS:
        extra = ["-c", str(_config(tmp_path, CONFIG_PAYLOADS[payload](marker) + "\n"))]
    else:
        extra = COMMAND_LINE_PAYLOADS[payload](marker)
    _refused(_lightning("fit", trained, runs, *extra, "--trainer.fast_dev_run", "1"), marker, runs, capsys)


def test_a_saved_run_config_with_a_payload_is_refused(trained, tmp_path, capsys):
    """``ninlab test -c runs/.../config.yaml`` re-uses a run's config; one edited to carry a payload runs nothing."""
    marker = tmp_path / "pwned"
    config = yaml.safe_load(trained["config"].read_text())
    config["model"]["model_kwargs"] = {"widths": [8, 8, 16], "x": popen(marker)}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    runs = tmp_path / "runs"
    argv = ["test", "-c", str(path), "--trainer.default_root_dir", str(runs), "--ckpt_path", str(trained["checkpoint"])]
    _refused(argv, marker, runs, capsys, says="model.model_kwargs")


@pytest.fixture
def planted_module(tmp_path, monkeypatch) -> Path:
    """A module on ``sys.path`` whose class writes the marker when it is built (not a Callback, Logger...)."""
    marker = tmp_path / "pwned"
    (tmp_path / "planted_code.py").write_text(textwrap.dedent(f"""
        class Touch:
            def __init__(self, *args, **kwargs):
                open({str(marker)!r}, "w").close()
    """))  # fmt: skip
    monkeypatch.syspath_prepend(str(tmp_path))
    return marker


@pytest.mark.parametrize("option", ["callbacks", "logger", "profiler", "plugins", "strategy", "accelerator"])
@pytest.mark.parametrize("target", ["subprocess.Popen", "logging.FileHandler", "planted_code.Touch"])
def test_class_typed_trainer_options_take_only_their_base_type(option, target, planted_module, trained, tmp_path,
                                                               capsys):  # fmt: skip
    """Configs choose trainer callbacks, loggers, profilers, plugins and strategies by class (a LightningCLI feature),
    but jsonargparse builds only subclasses of the option's type: anything else is refused before it is called."""
    init_args = {"args": f"touch {planted_module}", "shell": True} if target == "subprocess.Popen" else (
        {"filename": str(planted_module)})  # fmt: skip
    value = json.dumps({"class_path": target, "init_args": init_args})
    runs = tmp_path / "runs"
    _refused(_lightning("fit", trained, runs, f"--trainer.{option}={value}", "--trainer.fast_dev_run", "1"),
             planted_module, runs, capsys)  # fmt: skip


def _alias_bomb(levels: int = 9) -> str:
    """A "billion laughs" document: 9 ** levels strings from a few hundred bytes."""
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines)


BOMB_RUNNER = """
import json, resource, sys, time
import ninlab.training.lightning_cli  # imports done before the clock and the memory cap start
from ninlab.cli import main
main(["fit", "--model.lr", "abc"])  # builds and caches the parser the way the timed calls will
vm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmSize:")) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + 200 * 2**20, resource.RLIM_INFINITY))
for argv in json.loads(sys.argv[1]):
    start = time.perf_counter()
    code = main(argv)
    print(code, round(time.perf_counter() - start, 3), flush=True)
"""
BOMB_PLACES = ("config-top", "config-model_kwargs", "cli-model_kwargs", "cli-float", "cli-callbacks")


def test_yaml_alias_bomb_is_refused_fast_in_bounded_memory(trained, tmp_path):
    """Each place in one process (start-up costs ~10 s here), capped at its size after start-up + 200 MB."""
    bomb, argvs = _alias_bomb(), []
    for where in BOMB_PLACES:
        if where == "config-top":
            extra = ["-c", str(_config(tmp_path, bomb + "\n"))]
        elif where == "config-model_kwargs":
            text = "model:\n  model_kwargs:\n" + textwrap.indent(bomb, "    ") + "\n"
            extra = ["-c", str(_config(tmp_path, text, "in-model.yaml"))]
        else:
            flow = "{" + ", ".join(bomb.splitlines()) + "}"
            option = {"cli-model_kwargs": "--model.model_kwargs", "cli-float": "--model.lr",
                      "cli-callbacks": "--trainer.callbacks"}[where]  # fmt: skip
            extra = [option, flow]
        argvs.append(_lightning("fit", trained, tmp_path / "runs", *extra, "--trainer.fast_dev_run", "1"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")])}
    done = subprocess.run([sys.executable, "-c", BOMB_RUNNER, json.dumps(argvs)], env=env, capture_output=True,
                          text=True, timeout=180, check=False)  # fmt: skip
    results = [line.split() for line in done.stdout.splitlines() if line[:1].isdigit()]
    lines = [line for line in done.stderr.splitlines() if line.startswith("ninlab: error:")]
    assert len(results) == len(BOMB_PLACES), (done.stdout, done.stderr[-2000:])
    for where, (code, seconds) in zip(BOMB_PLACES, results, strict=True):
        assert int(code) == 2 and float(seconds) < 1.0, (where, code, seconds)
    assert len(lines) == 1 + len(BOMB_PLACES), done.stderr[-2000:]  # the warm-up's line, then one per bomb
    assert "Traceback" not in done.stderr and "MemoryError" not in done.stderr
    assert all("alias bomb" in line for line in lines[1:3]), lines[1:3]  # the two config files
    assert not (tmp_path / "runs").exists()


def test_aliases_within_the_bound_still_work(trained, tmp_path, capsys):
    config = _config(
        tmp_path,
        """
        model:
          model_kwargs: {widths: &w [8, 8, 16]}
          step_epochs: *w
    """,
    )
    argv = _lightning("fit", trained, tmp_path / "runs", "-c", str(config), "--print_config")
    assert main(argv) == 0
    assert yaml.safe_load(capsys.readouterr().out)["model"]["step_epochs"] == [8, 8, 16]


# ---- checkpoints that are not plain data: every format torch.load accepts ----


class _Reduce:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _raw_pickle(checkpoint: dict, path: Path, protocol: int) -> None:
    with path.open("wb") as file:
        pickle.dump(checkpoint, file, protocol=protocol)


def _legacy_tar(checkpoint: dict, path: Path) -> None:
    """PyTorch's pre-0.4 tar layout (``sys_info``, ``pickle``, ``storages``, ``tensors`` members)."""
    with tarfile.open(path, "w") as tar:
        for name in ("sys_info", "pickle", "storages", "tensors"):
            data = pickle.dumps(checkpoint if name == "pickle" else {}, protocol=2)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, __import__("io").BytesIO(data))


WRITERS: dict[str, Callable[[dict, Path], None]] = {
    "raw-pickle-protocol-2": lambda c, p: _raw_pickle(c, p, 2),
    "raw-pickle-protocol-4": lambda c, p: _raw_pickle(c, p, 4),
    "raw-pickle-protocol-5": lambda c, p: _raw_pickle(c, p, 5),
    "torch-legacy": lambda c, p: torch.save(c, p, _use_new_zipfile_serialization=False),
    "torch-zip": lambda c, p: torch.save(c, p),
    "torch-legacy-tar": _legacy_tar,
}


@pytest.mark.parametrize("writer", WRITERS, ids=list(WRITERS))
@pytest.mark.parametrize("command", ["export", "test"])
def test_code_carrying_checkpoints_get_ninlabs_own_line(writer, command, trained, tmp_path, capsys):
    marker = tmp_path / "pwned"
    checkpoint = torch.load(trained["checkpoint"], weights_only=True)
    checkpoint["hyper_parameters"]["model"] = _Reduce(marker)
    path = tmp_path / "evil.ckpt"
    WRITERS[writer](checkpoint, path)
    runs = tmp_path / "runs"
    argv = ["export", str(path)] if command == "export" else _lightning("test", trained, runs, "--ckpt_path", str(path))
    line = _refused(argv, marker, runs, capsys, says="cannot be read safely as a checkpoint")
    assert "weights_only" not in line and "nothing of it was run" in line


def test_every_builder_option_is_a_plain_model_kwargs_field():
    fields = typing.get_type_hints(ModelKwargs)
    for builder in (nin.nin_cifar, nin.nin_d2l, nin.nin_fast, nin.nin_imagenet, nin.nin_micro):
        assert set(typing.get_type_hints(builder)) - {"return"} <= set(fields), builder.__name__


def test_a_real_checkpoint_passes_the_checks(trained):
    checkpoint = torch.load(trained["checkpoint"], weights_only=True)
    assert hyperparameter_problem(NiNClassifier, checkpoint["hyper_parameters"]) is None
    assert hyperparameter_problem(ImageDataModule, checkpoint["datamodule_hyper_parameters"]) is None


# ---- ninlab export never writes over the checkpoint or an existing file ----


def _same_file(kind: str, checkpoint: Path, tmp_path: Path) -> Path:
    if kind == "same-path":
        return checkpoint
    link = tmp_path / "model.onnx"
    if kind == "symlink":
        link.symlink_to(checkpoint)
    else:
        os.link(checkpoint, link)
    return link


@pytest.mark.parametrize("kind", ["same-path", "symlink", "hardlink"])
def test_export_refuses_to_write_over_its_checkpoint(kind, trained, tmp_path, capsys):
    checkpoint = tmp_path / "a.ckpt"
    checkpoint.write_bytes(trained["checkpoint"].read_bytes())
    before = checkpoint.read_bytes()
    output = _same_file(kind, checkpoint, tmp_path)
    line = _refused(
        ["export", str(checkpoint), "-o", str(output), "--overwrite"], tmp_path / "x", tmp_path / "r", capsys
    )
    assert "is the checkpoint being exported" in line
    assert checkpoint.read_bytes() == before and torch.load(checkpoint, weights_only=True)["state_dict"]


def test_export_keeps_an_existing_output_unless_overwrite_and_honours_the_umask(trained, tmp_path, capsys):
    output = tmp_path / "model.onnx"
    output.write_bytes(b"someone's file")
    _refused(["export", str(trained["checkpoint"]), "-o", str(output)], tmp_path / "x", tmp_path / "r", capsys,
             says="already exists; pass --overwrite")  # fmt: skip
    assert output.read_bytes() == b"someone's file"
    old = os.umask(0o027)
    try:
        assert main(["export", str(trained["checkpoint"]), "-o", str(output), "--overwrite"]) == 0
    finally:
        os.umask(old)
    assert output.stat().st_mode & 0o777 == 0o640  # 0666 & ~umask, not mkstemp's 0600
    session = onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    assert json.loads(session.get_modelmeta().custom_metadata_map["class_names"])[1] == "Trouser"


def test_a_failed_export_removes_the_folders_it_created(trained, tmp_path, monkeypatch, capsys):
    def full_disk(*args, **kwargs):
        raise OSError(28, os.strerror(28))

    monkeypatch.setattr("ninlab.inference.export.atomic_open", full_disk)
    (tmp_path / "existing").mkdir()
    output = tmp_path / "existing" / "new" / "deeper" / "model.onnx"
    capsys.readouterr()
    assert main(["export", str(trained["checkpoint"]), "-o", str(output)]) == 1
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert list((tmp_path / "existing").iterdir()) == []


def test_a_recursive_yaml_document_is_one_line(trained, tmp_path, capsys):
    config = _config(tmp_path, "model:\n  step_epochs: &a [1, *a]\n")
    _refused(_lightning("fit", trained, tmp_path / "runs", "-c", str(config)), tmp_path / "x", tmp_path / "runs",
             capsys, says="a YAML alias refers to the node that contains it")  # fmt: skip


def test_export_refuses_a_folder_as_output(trained, tmp_path, capsys):
    (tmp_path / "out").mkdir()
    _refused(["export", str(trained["checkpoint"]), "-o", str(tmp_path / "out"), "--overwrite"], tmp_path / "x",
             tmp_path / "r", capsys, says="is a folder")  # fmt: skip
    assert list((tmp_path / "out").iterdir()) == []
