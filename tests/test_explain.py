"""``ninlab explain`` end to end, and the one preprocessing step every path shares.

The checkpoints here are a NiNClassifier's hyperparameters and weights saved as ``ninlab fit`` stores them (the
keys load_classifier reads); the shipped, really trained model is explained in test_pretrained.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from ninlab.cli import main
from ninlab.data import ImageDataModule
from ninlab.inference.loading import load_classifier
from ninlab.inference.predict import network_inputs, predict_files, read_images
from ninlab.models import registry
from ninlab.models.layers import GlobalAvgPool
from ninlab.models.registry import create_model
from ninlab.training.module import NiNClassifier


def nin_two_layer_head(*, in_chans: int = 1, num_classes: int = 10) -> nn.Module:
    """nin_fast with a two-layer dense head: pooled features are no longer class maps."""
    net = create_model("nin_fast", in_chans=in_chans, num_classes=num_classes)
    net.head = nn.Sequential(GlobalAvgPool(), nn.Flatten(), nn.Linear(num_classes, 8), nn.Linear(8, num_classes))
    return net


def save_classifier(model: NiNClassifier, path) -> str:
    torch.save({"hyper_parameters": dict(model.hparams), "state_dict": model.state_dict()}, path)
    return str(path)


@pytest.fixture
def checkpoint(tmp_path) -> str:
    torch.manual_seed(0)
    model = NiNClassifier("nin_fast", {"widths": [8, 8, 16]}, num_classes=3, in_chans=1, class_names=["a", "b", "c"],
                          input_size=(1, 28, 28), mean=[0.3], std=[0.2], tta_flip=True)  # fmt: skip
    return save_classifier(model, tmp_path / "model.ckpt")


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("one", "two"):
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(folder / f"{name}.png")
    Image.fromarray(rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)).save(folder / "colour.png")  # RGB, other size
    return folder


def test_explain_writes_figures_grid_and_maps(checkpoint, images, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["explain", checkpoint, str(images), "-o", str(out), "--grid", "--save-maps", "-k", "2"]) == 0
    assert "wrote 7 file(s)" in capsys.readouterr().out
    names = sorted(p.name for p in out.iterdir())
    assert names == ["colour.npy", "colour.png", "grid.png", "one.npy", "one.png", "two.npy", "two.png"]
    for png in out.glob("*.png"):
        with Image.open(png) as figure:
            assert figure.format == "PNG" and figure.width > 300
    model = load_classifier(checkpoint)
    pixels, files = read_images(model, [images])  # the colour image converted to grey, as predict-images does
    with torch.no_grad():
        logits = model(network_inputs(model, pixels))
    maps = np.stack([np.load(out / f"{f.stem}.npy") for f in files])
    assert maps.shape == (3, 3, 7, 7)
    torch.testing.assert_close(torch.from_numpy(maps).mean((2, 3)), logits, rtol=1e-5, atol=1e-6)


def test_explain_refuses_to_overwrite(checkpoint, images, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["explain", checkpoint, str(images / "one.png"), "-o", str(out)]) == 0
    before = (out / "one.png").read_bytes()
    (out / "one.png").write_bytes(b"mine")
    capsys.readouterr()
    assert main(["explain", checkpoint, str(images), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "exists" in err[0] and "--overwrite" in err[0]
    assert sorted(p.name for p in out.iterdir()) == ["one.png"] and (out / "one.png").read_bytes() == b"mine"
    assert main(["explain", checkpoint, str(images / "one.png"), "-o", str(out), "--overwrite"]) == 0
    assert (out / "one.png").read_bytes() == before  # the same figure again: deterministic


def test_an_output_named_like_a_figure_is_refused_not_made_a_folder(checkpoint, images, tmp_path, capsys):
    """``-o maps.png`` made a folder called maps.png; a folder of that name that exists is still used."""
    assert main(["explain", checkpoint, str(images / "one.png"), "-o", str(tmp_path / "maps.png")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "is a folder" in line and "maps.png" in line and f"-o {tmp_path / 'maps'}" in line
    assert not (tmp_path / "maps.png").exists()
    (tmp_path / "old.png").mkdir()
    assert main(["explain", checkpoint, str(images / "one.png"), "-o", str(tmp_path / "old.png")]) == 0
    assert [p.name for p in (tmp_path / "old.png").iterdir()] == ["one.png"]


@pytest.mark.parametrize("case", ["no class maps", "unknown pretrained", "damaged image", "no checkpoint"])
def test_bad_input_is_one_line_and_writes_nothing(case, checkpoint, images, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    if case == "no class maps":  # registered for this test only: other tests list the registry's variants
        monkeypatch.setitem(registry._BUILDERS, "nin_two_layer_head", nin_two_layer_head)
        model = NiNClassifier("nin_two_layer_head", num_classes=3, in_chans=1, input_size=(1, 28, 28))
        args, expected = [save_classifier(model, tmp_path / "dense.ckpt"), str(images)], "has no class maps"
    elif case == "unknown pretrained":
        args, expected = ["--pretrained", "imagenet", str(images)], "no pretrained weights 'imagenet'"
    elif case == "damaged image":
        (images / "zz.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
        args, expected = [checkpoint, str(images)], "zz.png"
    else:
        args, expected = [str(images / "one.png")], "expected a checkpoint and at least one image"
    assert main(["explain", *args, "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ninlab: error:") and expected in err[0], err
    assert not out.exists()


def test_a_training_image_predicts_as_validation_saw_it(tmp_path):
    # image_size 32 makes every path resize (28 -> 32): prediction must resize as training did, bit for bit.
    root = tmp_path / "data"
    rng = np.random.default_rng(1)
    for label in ("cat", "dog"):
        (root / label).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(root / label / f"{i}.png")
    dm = ImageDataModule("folder", root=str(root), val_size=8, batch_size=8, image_size=32, channels_last=True)
    dm.setup("fit")
    images, _ = next(iter(dm.val_dataloader()))
    x_val, _ = dm.on_after_batch_transfer((images, None), 0)
    torch.manual_seed(0)
    model = NiNClassifier("nin_fast", {"widths": [8, 8, 16]}, num_classes=2, in_chans=1, class_names=dm.classes,
                          input_size=dm.input_size, mean=dm.mean_std[0].tolist(), std=dm.mean_std[1].tolist(),
                          channels_last=True, tta_flip=True).eval()  # fmt: skip
    files = tmp_path / "val"
    files.mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image[0].numpy()).save(files / f"{i}.png")  # lossless: the training image as a file
    with torch.no_grad():
        val_logits = model(x_val)
        pixels, _ = read_images(model, [files])
        predicted = model(network_inputs(model, pixels))
    assert torch.equal(predicted, val_logits)
    probabilities = val_logits.softmax(1)
    for i, (_, top) in enumerate(predict_files(model, [files], top_k=2, batch_size=8)):
        assert [p for _, p in top] == probabilities[i].sort(descending=True).values.tolist()
