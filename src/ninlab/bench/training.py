"""Three ways to train the same NiN on the same real data, timed alike.

* ``seed_style`` (A): the Lightning NiN document's approach: a per-sample ``Dataset`` that returns normalised float
  tensors (through a PIL image, ``ToTensor`` and ``Normalize``, as torchvision does), a shuffling ``DataLoader``
  that collates them, NCHW tensors, driving ninlab's LightningModule.
* ``ninlab`` (B): the ``ninlab fit`` path: the recipe's LightningCLI configuration with ninlab's callbacks and
  loggers (uint8 data in memory, batched augmentation and normalisation on the device, channels-last).
* ``bare`` (C): a plain PyTorch loop over the same in-memory tensors with the same model, optimiser, lr schedule,
  augmentation and normalisation as B and nothing else: the floor that B's bookkeeping is measured against.

All three train on the CPU, also on a machine with a GPU: the bare loop is a CPU loop, and B/A and B/C compare like
with like only on one device. ``scripts/gpu_step_bench.py`` and the GPU recipe's run summary measure the GPU.
B and C train in the recipe's precision or in ``precision`` (``32-true`` or ``bf16-mixed``), the fast paths; A always
trains in fp32, as the Lightning NiN document does.

Each pipeline trains ``epochs`` epochs on the first ``limit`` training images; the last epoch is timed (the earlier
ones are warm-up) and cut into ``windows`` windows of steps. :func:`ninlab.bench.rounds.run_round` runs the pipelines
side by side, each in a fresh process (so its peak memory is its own), taking turns window by window (one runs while
the others wait), so that every pipeline's window ``w`` is timed within seconds of the others' and a shared machine's
changing speed hits them alike.
"""

from __future__ import annotations

import contextlib
import os
import resource
import statistics
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from ninlab._runtime.host_allocator import freed_memory_kept, keep_freed_memory
from ninlab.bench.clock import StepClock, Turns, window_rates
from ninlab.bench.rates import training_flops_per_image
from ninlab.data import ImageDataModule
from ninlab.data.sampler import ShardedBatchSampler
from ninlab.errors import ConfigError
from ninlab.training.lightning_cli import RUN_DIR_ENV, NinlabCLI, recipe_path, training_callbacks
from ninlab.training.module import NiNClassifier

__all__ = [
    "PIPELINES",
    "PRECISIONS",
    "BenchConfig",
    "PerSampleDataset",
    "PipelineResult",
    "recipe_cli",
    "run_pipeline",
    "scratch_dir",
]


@dataclass(frozen=True)
class BenchConfig:
    """What every pipeline trains: a recipe's model, optimiser and data, on its first ``limit`` training images."""

    recipe: str = "fast_fashion_mnist"
    root: str | None = None
    limit: int = 12_800
    epochs: int = 2
    windows: int = 5
    val_size: int = 512
    precision: str | None = None
    """B's and C's precision, ``32-true`` or ``bf16-mixed`` (autocast to bf16, as Lightning runs it on a CPU); None:
    the recipe's own."""


PRECISIONS = ("32-true", "bf16-mixed")


@dataclass
class PipelineResult:
    """One pipeline's timings: median window images/s, whole-epoch images/s, training FLOPs, peak RSS."""

    name: str
    precision: str
    images_per_s: float
    epoch_images_per_s: float
    window_images_per_s: list[float] = field(default_factory=list)
    train_flops_per_image: float = 0.0
    peak_rss_mb: float = 0.0
    keeps_freed_memory: bool = False
    """Whether the process kept freed memory in its heap (:func:`ninlab._runtime.host_allocator.keep_freed_memory`)."""
    window_times: list[tuple[float, float]] = field(default_factory=list)
    """Wall-clock start and end of each window when the pipeline took turns with others (:class:`Turns`)."""

    @property
    def achieved_flops_per_s(self) -> float:
        """Training FLOP/s over the whole timed epoch (data, augmentation, step and logging included)."""
        return self.train_flops_per_image * self.epoch_images_per_s


def recipe_cli(config: BenchConfig, workdir: str, callbacks: list, whole_recipe: bool = False,
               extra_args: Sequence[str] = ()) -> NinlabCLI:  # fmt: skip
    """The recipe as ``ninlab fit -c recipe`` builds it, on ``limit`` images, writing its run under ``workdir``.

    Every epoch trains at the recipe's full image size (no progressive resizing): A, B and C are timed on the same
    images, and the FLOPs per image are those of that size. ``whole_recipe`` builds it as a user's ``ninlab fit``
    would instead: all its data, epochs, sizes and sanity checks (on the CPU; only the precision is the bench's).
    ``extra_args`` are options of ``ninlab fit`` given after everything else, as a user's command line would.
    """
    args = ["--config", str(recipe_path(config.recipe)), f"--trainer.default_root_dir={workdir}",
            "--trainer.accelerator=cpu", "--trainer.devices=1"]  # fmt: skip
    if not whole_recipe:
        args += [f"--trainer.max_epochs={config.epochs}", "--data.train_scales=null",
                 "--trainer.num_sanity_val_steps=0", f"--data.limit_train={config.limit}",
                 f"--data.val_size={config.val_size}"]  # fmt: skip
    if config.root is not None:
        args.append(f"--data.root={config.root}")
    if config.precision is not None:
        args.append(f"--trainer.precision={config.precision}")
    args += extra_args
    return NinlabCLI(NiNClassifier, ImageDataModule, args=args, run=False, trainer_defaults={"callbacks": callbacks},
                     save_config_kwargs={"overwrite": True}, auto_configure_optimizers=False)  # fmt: skip


def _result(name: str, clock: StepClock, batch_size: int, config: BenchConfig, flops: float,
            precision: str) -> PipelineResult:  # fmt: skip
    rates = window_rates(clock.stamps, batch_size, config.windows)
    return PipelineResult(
        name=name,
        precision=precision,
        images_per_s=statistics.median(rates),
        epoch_images_per_s=clock.epoch_images / clock.epoch_seconds,
        window_images_per_s=[round(r, 1) for r in rates],
        train_flops_per_image=flops,
        window_times=clock.turns.window_times if clock.turns is not None else [],
    )


def run_ninlab(config: BenchConfig, workdir: str, turns: Turns | None = None) -> PipelineResult:
    """B: the ``ninlab fit`` path: the recipe's trainer, callbacks, loggers and datamodule."""
    clock = StepClock(turns)
    cli = recipe_cli(config, workdir, [*training_callbacks(), clock])
    flops = training_flops_per_image(cli.model.net, cli.datamodule.input_size)
    cli.trainer.fit(cli.model, cli.datamodule)
    return _result("ninlab", clock, cli.datamodule.batch_size, config, flops, str(cli.trainer.precision))


class PerSampleDataset(Dataset):
    """The Lightning NiN document's data path, one image at a time, as torchvision's datasets and transforms run it.

    The Lightning NiN document reads CIFAR-10 with
    ``torchvision.datasets.CIFAR10(transform=Compose([ToTensor(), Normalize(...)]))``.
    Its ``__getitem__`` turns the stored uint8 array into a PIL image; ``ToTensor`` copies the image back into a
    uint8 tensor, moves channels first and scales to float in [0, 1]; ``Normalize`` subtracts the mean and divides by
    the std on a copy. torchvision cannot be imported next to ninlab's CPU torch, so those steps are written out here,
    with Pillow, operation for operation.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> None:
        # Stored as torchvision stores them: H x W x C uint8 (H x W for greyscale, which PIL reads as mode "L").
        hwc = images.permute(0, 2, 3, 1).numpy()
        self.images = hwc[..., 0] if hwc.shape[-1] == 1 else hwc
        self.labels = labels.numpy()
        self.mean, self.std = mean.view(-1, 1, 1), std.view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = Image.fromarray(self.images[index])  # the dataset's __getitem__
        pixels = torch.from_numpy(np.array(image, np.uint8, copy=True))  # ToTensor
        pixels = pixels.view(image.size[1], image.size[0], len(image.getbands())).permute(2, 0, 1).contiguous()
        tensor = pixels.to(torch.float32).div(255)
        return tensor.clone().sub_(self.mean).div_(self.std), int(self.labels[index])  # Normalize


def run_seed_style(config: BenchConfig, workdir: str, turns: Turns | None = None) -> PipelineResult:
    """A: the Lightning NiN document's per-sample Dataset + DataLoader (NCHW, no augmentation), driving the same
    LightningModule."""
    cli = recipe_cli(config, workdir, [])
    datamodule = cli.datamodule
    datamodule.setup("fit")
    images, labels = datamodule.train_tensors
    model = cli.model
    model.whiten_first_conv_from(datamodule)  # the trainer's setup would look for a datamodule, which A does not use
    loader = DataLoader(PerSampleDataset(images, labels, *datamodule.mean_std), datamodule.batch_size, shuffle=True)
    model.net = model.net.to(memory_format=torch.contiguous_format)  # NCHW, as the Lightning NiN document trains
    flops = training_flops_per_image(model.net, datamodule.input_size)
    clock = StepClock(turns)
    trainer = L.Trainer(max_epochs=config.epochs, callbacks=[clock], logger=False, enable_checkpointing=False,
                        accelerator="cpu", devices=1,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        precision="32-true", default_root_dir=workdir)  # fmt: skip
    trainer.fit(model, train_dataloaders=loader)
    return _result("seed_style", clock, datamodule.batch_size, config, flops, str(trainer.precision))


def run_bare(config: BenchConfig, workdir: str, turns: Turns | None = None) -> PipelineResult:
    """C: a plain loop: slice a uint8 batch, augment and normalise it as B does, forward, backward, step the
    optimiser and the lr schedule (the recipe's, as B's ``configure_optimizers`` builds them).

    Under ``bf16-mixed`` the forward runs in ``torch.autocast`` as Lightning's precision plugin runs B's, and the
    logits go to fp32 before the loss, as in :class:`NiNClassifier`.
    """
    cli = recipe_cli(config, workdir, [])
    datamodule, hparams = cli.datamodule, cli.model.hparams
    datamodule.setup("fit")
    images, labels = datamodule.train_tensors
    cli.model.whiten_first_conv_from(datamodule)
    net = cli.model.net.train()
    flops = training_flops_per_image(net, datamodule.input_size)
    sampler = ShardedBatchSampler(images, datamodule.batch_size, shuffle=True, seed=datamodule.seed)
    optimizer, scheduler = cli.model.build_optimization(config.epochs * len(sampler), len(sampler))
    precision = str(cli.trainer.precision)  # what B trains in: the recipe's or the one asked for
    if precision not in PRECISIONS:
        raise ConfigError(f"ninlab bench times {' or '.join(PRECISIONS)} training, but the recipe {config.recipe!r} "
                          f"trains in {precision}; pass --precision")  # fmt: skip
    bf16 = precision == "bf16-mixed"
    clock = StepClock(turns)
    for epoch in range(config.epochs):
        sampler.set_epoch(epoch)
        clock.start_epoch(epoch, len(sampler))
        for indices in sampler:
            index = torch.as_tensor(indices)
            batch_images, batch_labels = images[index], labels[index]
            x = datamodule.prepare_batch(datamodule.augment_batch(batch_images))
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = net(x).float()
            loss = F.cross_entropy(logits, batch_labels, label_smoothing=hparams.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            clock.end_step(len(batch_images))
    return _result("bare", clock, datamodule.batch_size, config, flops, precision)


PIPELINES = {"seed_style": run_seed_style, "ninlab": run_ninlab, "bare": run_bare}
KEEPS_FREED_MEMORY = ("ninlab", "bare")
"""Pipelines run with the allocator setting of ``ninlab``'s command line: B, since it is that path, and C, so that B/C
measures only what Lightning and ninlab's bookkeeping cost. A runs as the Lightning NiN document's code would, in a
default process."""


@contextlib.contextmanager
def scratch_dir() -> Iterator[str]:
    """A temporary directory for the runs the recipe's CLI creates, forgotten (and deleted) afterwards.

    The CLI is built here without :func:`ninlab.training.lightning_cli.run`, so Lightning's lines are never held
    (only ``run`` holds them) and nothing is left to release.
    """
    with tempfile.TemporaryDirectory(prefix="ninlab-bench-") as workdir:
        try:
            yield workdir
        finally:
            os.environ.pop(RUN_DIR_ENV, None)


def run_pipeline(name: str, config: BenchConfig, turns: Turns | None = None) -> PipelineResult:
    """Run one pipeline in this process (seeded, in a scratch directory) and record this process's peak RSS."""
    if name in KEEPS_FREED_MEMORY:
        keep_freed_memory()
    L.seed_everything(0, verbose=False)
    with scratch_dir() as workdir:
        result = PIPELINES[name](config, workdir, turns)
    result.keeps_freed_memory = freed_memory_kept()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result.peak_rss_mb = peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux
    return result
