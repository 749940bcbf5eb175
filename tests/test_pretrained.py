"""The trained models shipped in the package: measured accuracy, loading by name, refusal of a changed file."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from PIL import Image

import ninlab
from ninlab.cli import main
from ninlab.data import load_dataset
from ninlab.errors import CheckpointError, ConfigError
from ninlab.inference.loading import load_pretrained_classifier
from ninlab.inference.predict import count_correct
from ninlab.models import pretrained
from ninlab.models.pretrained import list_pretrained

SHIPPED = ("fashion-mnist", "mnist")


def test_both_models_are_shipped_with_their_record():
    weights = list_pretrained()
    assert sorted(weights) == sorted(SHIPPED)
    for entry in weights.values():
        assert entry["test_correct"] / entry["test_images"] == entry["test_accuracy"]
        assert entry["command"].startswith("ninlab fit") and isinstance(entry["seed"], int)
        assert entry["bytes"] < 2**20  # weights only: no optimiser state


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_scores_its_recorded_accuracy(name, real_data_dir):
    entry = list_pretrained()[name]
    model = load_pretrained_classifier(name)
    test = load_dataset(entry["dataset"], "test", real_data_dir / entry["dataset"])
    assert count_correct(model, test.images, test.labels) == entry["test_correct"]


def test_create_model_with_pretrained_weights():
    net = ninlab.create_model("nin_fast", pretrained="fashion-mnist")
    classifier = load_pretrained_classifier("fashion-mnist")
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(net(x), classifier.net(x))
    with pytest.raises(ConfigError, match="are for nin_fast, not nin_d2l"):
        ninlab.create_model("nin_d2l", pretrained="fashion-mnist")
    with pytest.raises(ConfigError, match="do not fit num_classes=5"):
        ninlab.create_model("nin_fast", pretrained="fashion-mnist", num_classes=5)
    with pytest.raises(ConfigError, match="no pretrained weights 'cifar10'; ninlab ships: fashion-mnist, mnist"):
        ninlab.create_model("nin_fast", pretrained="cifar10")


@pytest.fixture
def test_images(real_data_dir, tmp_path):
    """The first test image of each Fashion-MNIST class as PNG files, and their labels."""
    test = load_dataset("fashion-mnist", "test", real_data_dir / "fashion-mnist")
    folder = tmp_path / "images"
    folder.mkdir()
    labels = []
    for label in range(10):
        index = int(torch.nonzero(test.labels == label)[0])
        name = test.classes[label].replace("/", "-")  # T-shirt/top
        Image.fromarray(test.images[index, 0].numpy()).save(folder / f"{label}_{name}.png")
        labels.append(test.classes[label])
    return folder, labels


def test_cli_predict_explain_export_with_pretrained(test_images, tmp_path, capsys):
    folder, labels = test_images
    assert main(["predict-images", "--pretrained", "fashion-mnist", str(folder), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    top1 = [row["top"][0]["class"] for row in rows]
    assert sum(p == t for p, t in zip(top1, labels, strict=True)) >= 8  # a 92% model on one image per class
    out = tmp_path / "maps"
    assert main(["explain", "--pretrained", "fashion-mnist", str(folder), "-o", str(out), "--grid"]) == 0
    assert len(list(out.glob("*.png"))) == 11
    onnx = tmp_path / "model.onnx"
    assert main(["export", "--pretrained", "fashion-mnist", "-o", str(onnx)]) == 0
    assert onnx.stat().st_size > 100_000
    assert main(["models"]) == 0
    listing = capsys.readouterr().out
    entry = list_pretrained()["fashion-mnist"]
    assert "pretrained: fashion-mnist, mnist" in listing and f"{entry['test_accuracy']:.4f}" in listing


def test_changed_weights_file_is_refused(tmp_path, monkeypatch, capsys, test_images):
    copy = tmp_path / "pretrained"
    shutil.copytree(pretrained._folder(), copy)
    data = bytearray((copy / "fashion-mnist.pt").read_bytes())
    data[len(data) // 2] ^= 1  # one bit of one weight
    (copy / "fashion-mnist.pt").write_bytes(bytes(data))
    monkeypatch.setattr(pretrained, "_folder", lambda: copy)
    with pytest.raises(CheckpointError, match="sha256"):
        load_pretrained_classifier("fashion-mnist")
    out = tmp_path / "maps"
    assert main(["explain", "--pretrained", "fashion-mnist", str(test_images[0]), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sha256" in err[0] and "reinstall ninlab" in err[0]
    assert not out.exists()
