"""Ship a run's best checkpoint inside the package: weights only, re-measured, recorded in the manifest.

Takes the checkpoint a ``ninlab fit`` run tested (``summary.json``'s ``tested_checkpoint``), keeps its
hyperparameters and weights (no optimiser, schedule or loop state), re-evaluates it on the dataset's test split
exactly as :mod:`ninlab.inference.predict` prepares images, and refuses to ship it unless that count of correct
images equals the test accuracy the run printed. Then writes ``src/ninlab/pretrained/NAME.pt`` and its entry
(sha256, accuracy, the command and seed that trained it, the host) in ``src/ninlab/pretrained/manifest.json``.

    PYTHONPATH=src python scripts/package_pretrained.py runs/fast_fashion_mnist/<stamp> fashion-mnist \\
        --data-root /path/to/fashion-mnist --command "ninlab fit --data.root /path/to/fashion-mnist"
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import time
from pathlib import Path

import torch
import yaml

from ninlab._runtime.atomic import atomic_open
from ninlab._runtime.environment import machine_info
from ninlab.data import load_dataset
from ninlab.inference.loading import load_classifier
from ninlab.inference.predict import count_correct
from ninlab.training.checkpoint_io import read_checkpoint

HOST_KEYS = ("cpu", "cpu_capability", "cpu_native_bf16", "cpu_count", "torch_threads")
FOLDER = Path(__file__).resolve().parents[1] / "src" / "ninlab" / "pretrained"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("name", help="the weights' name, e.g. fashion-mnist")
    parser.add_argument("--data-root", required=True, help="folder of the dataset's files (the run's --data.root)")
    parser.add_argument("--command", required=True, help="the exact command that trained the run")
    args = parser.parse_args()

    summary = json.loads((args.run_dir / "summary.json").read_text())
    checkpoint = read_checkpoint(summary["tested_checkpoint"])
    hparams = dict(checkpoint["hyper_parameters"])
    config = _config(args.run_dir)
    dataset = load_dataset(config["data"]["dataset"], "test", args.data_root)
    model = load_classifier(summary["tested_checkpoint"])
    correct = count_correct(model, dataset.images, dataset.labels)
    if correct != round(summary["test_acc"] * len(dataset)):
        raise SystemExit(f"re-evaluation gives {correct}/{len(dataset)}, the run printed {summary['test_acc']}")

    buffer = io.BytesIO()
    torch.save({"hyper_parameters": hparams, "state_dict": checkpoint["state_dict"]}, buffer)
    data = buffer.getvalue()
    file = f"{args.name}.pt"
    with atomic_open(FOLDER / file) as out:
        out.write(data)
    manifest_path = FOLDER / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {"weights": {}}
    machine = machine_info()
    manifest["weights"][args.name] = {
        "file": file,
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "model": hparams["model"],
        "model_kwargs": hparams.get("model_kwargs"),
        "dataset": dataset.name,
        "classes": hparams.get("class_names"),
        "test_accuracy": correct / len(dataset),
        "test_correct": correct,
        "test_images": len(dataset),
        "command": args.command,
        "seed": config["seed_everything"],
        "epochs": summary.get("epochs"),
        "train_wall_s": summary.get("wall_s"),
        "host": {key: machine.get(key) for key in HOST_KEYS},
        "packaged": time.strftime("%Y-%m-%d"),
    }
    with atomic_open(manifest_path) as out:
        out.write((json.dumps(manifest, indent=2) + "\n").encode())
    print(f"{file}: {len(data):,} bytes, test accuracy {correct}/{len(dataset)}")


def _config(run_dir: Path) -> dict:
    return yaml.safe_load((run_dir / "config.yaml").read_text())


if __name__ == "__main__":
    main()
