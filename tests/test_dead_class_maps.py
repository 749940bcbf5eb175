"""Dead class maps of the d2l NiN document's recipe: the cause at step 0, its fix, and the guard naming them in a run.

The recipe's as-written init (Xavier weights, PyTorch's default biases) zeroes several class maps for every image at
step 0 on real Fashion-MNIST; the fixed recipe (zero biases, no ReLU on the class maps) leaves none without gradient.
"""

import importlib.util
import json
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import ninlab
from ninlab.cli import main
from ninlab.data.datamodule import ImageDataModule
from ninlab.training.callbacks.guards import class_map_conv
from ninlab.training.module import NiNClassifier

ROOT = Path(__file__).resolve().parents[1]
PROXY_SIZE = 67  # nin_d2l's smallest input: the recipe's network at 1/11 of the 224 step's cost
RECIPES = {
    "as-written": {"init": "xavier"},
    "fixed": {"init": "xavier_zero_bias", "model_kwargs": {"final_act": False}},
}


@pytest.fixture(scope="module")
def real_batch(real_data_dir):
    """128 real Fashion-MNIST training images, in [0, 1] and resized to the proxy size as the recipe's data does."""
    data = ImageDataModule(root=str(real_data_dir / "fashion-mnist"), image_size=PROXY_SIZE, augment=False,
                           normalize="none", val_size=0, limit_train=128, channels_last=False)  # fmt: skip
    data.setup("fit")
    images, labels = next(iter(data.train_dataloader()))
    return data.prepare_batch(images), labels


def _step0_deaths(recipe: str, seed: int, batch) -> tuple[int, int]:
    """(class maps whose weights get exactly zero gradient, channels of the last block's 1x1 hidden conv that are
    zero for every image) after one forward and backward of a fresh model at step 0."""
    torch.manual_seed(seed)
    model = NiNClassifier(model="nin_d2l", num_classes=10, in_chans=1, **RECIPES[recipe])
    block = model.net.features[-1]
    hidden = {}
    block.conv1.register_forward_hook(lambda module, args, out: hidden.setdefault("out", out.detach().clone()))
    images, labels = batch
    F.cross_entropy(model(images), labels).backward()
    silent = block.conv2.weight.grad.flatten(1).abs().amax(1) + block.conv2.bias.grad.abs()
    return int((silent == 0).sum()), int(((hidden["out"] > 0).sum((0, 2, 3)) == 0).sum())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_default_biases_kill_class_maps_at_step0_and_the_fix_does_not(real_batch, seed):
    dead_maps, dead_hidden = _step0_deaths("as-written", seed, real_batch)
    # The biases, not the images, set the last block's outputs: seeds 0-2 zero 3-5 maps and 4-7 hidden channels.
    assert dead_maps >= 3 and dead_hidden >= 4
    assert _step0_deaths("fixed", seed, real_batch) == (0, 0)


def test_class_map_conv_is_found_where_maps_can_die():
    net = ninlab.create_model("nin_d2l")
    assert class_map_conv(net) is net.features[-1].conv2
    cifar = ninlab.create_model("nin_cifar")
    assert class_map_conv(cifar) is cifar.features[-1].conv2
    assert class_map_conv(ninlab.create_model("nin_d2l", final_act=False)) is None  # maps may go negative
    assert class_map_conv(ninlab.create_model("nin_fast")) is None  # no ReLU on its class maps
    assert class_map_conv(ninlab.create_model("nin_micro")) is None  # a linear head, no class maps
    assert class_map_conv(ninlab.create_model("nin_d2l", act_layer="gelu")) is None  # never exactly zero


def test_class_map_deaths_script_shows_the_failure_and_the_fix(real_data_dir, monkeypatch, capsys):
    """scripts/class_map_deaths.py (the CPU proxy of the recipe) runs end to end on real data and finds the deaths."""
    spec = importlib.util.spec_from_file_location("class_map_deaths", ROOT / "scripts" / "class_map_deaths.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setattr("sys.argv", ["class_map_deaths.py", "--root", str(real_data_dir / "fashion-mnist"), "--steps",
                                     "2", "--seeds", "0", "--variants", "as-written", "fixed", "--test-images", "128",
                                     "--limit-train", "256"])  # fmt: skip
    script.main()
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    as_written, fixed = rows
    assert len(as_written["dead_at_step0"]) >= 3 and as_written["hidden_dead_at_step0"][1] >= 4
    assert fixed["dead_at_step0"] == [] and fixed["hidden_dead_at_step0"][1] == 0


def test_guard_names_the_dead_maps_and_the_fix_within_the_first_epoch(real_data_dir, tmp_path, caplog):
    # The d2l NiN document's recipe as shipped, every default callback, on real data at the proxy size. Batch 16, 60
    # steps and two test batches keep the test fast: which maps die is decided by the init at step 0, before any
    # batch is seen, and the test split's size does not change what the guard does.
    args = ["fit", "-c", str(ROOT / "configs" / "d2l_fashion_mnist.yaml"), "--data.root",
            str(real_data_dir / "fashion-mnist"), "--data.image_size", str(PROXY_SIZE), "--data.batch_size", "16",
            "--data.val_size", "64", "--trainer.max_steps", "60", "--trainer.limit_test_batches", "2",
            "--trainer.default_root_dir", str(tmp_path)]  # fmt: skip
    assert main(args) == 0
    # One line per newly dead set of maps (Lightning's rank-zero logger prints them on stderr): the maps dead since
    # step 0 at step 50, then any that died in the first steps.
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("ninlab: warning:")]
    line = lines[0]
    assert re.search(r"ninlab: warning: step 50: class maps [\d, ]+ of 10 have been zero for every image", line)
    assert "fix: --model.init xavier_zero_bias --model.model_kwargs '{final_act: false}'" in line
    assert "configs/d2l_fashion_mnist_fixed.yaml" in line
