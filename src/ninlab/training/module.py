"""The training system: a thin LightningModule around a registered NiN network.

The network is built from its registry name plus keyword arguments, and every constructor argument is saved as a
hyperparameter, so a checkpoint alone rebuilds the model (and knows its class names and input size) for testing,
prediction and export. Train, validation and test share one step; prediction returns class probabilities.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch import nn

from ninlab._runtime.distributed import destroy_process_group_at_exit
from ninlab.errors import CheckpointError, ConfigError, check_choice
from ninlab.models.init import check_whitenable, first_conv, init_weights, patch_whitening_filters
from ninlab.models.registry import ModelKwargs, create_model
from ninlab.training.metrics import EpochTally
from ninlab.training.optim import OPTIMIZERS, SCHEDULES, build_optimizer, build_scheduler
from ninlab.training.untrusted import check_hyperparameters, plain_data_problem

__all__ = ["SPLITS", "NiNClassifier"]


SPLITS = ("train", "val", "test")
# torch.compile modes (torch._inductor.list_mode_options() names them, plus "default").
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
WHITENING_IMAGES = 5000
"""Training images whose patches set the whitened first convolution: fewer where 5,000 would take more than 128 MB
as float32 (668 at 1 x 224 x 224)."""


class NiNClassifier(LightningModule):
    """Image classification with a NiN: loss, accuracy, optimiser and schedule around ``create_model(model)``.

    Logs ``{split}/loss`` and ``{split}/acc`` for train, val and test (plus ``val/acc_top5`` and ``test/acc_top5``
    with more than five classes). ``training_step``, ``validation_step`` and ``test_step`` return ``{"loss",
    "logits"}`` so callbacks (guards, confusion matrix) can look at the logits without another forward pass.

    Args:
        model: Registered model name (see ``ninlab.list_models()``).
        model_kwargs: Keyword arguments of the model builder (``widths``, ``final_act``, ``norm_layer``...), plain
            values only (layers by name): see :class:`ModelKwargs`.
        num_classes: Number of classes; the CLI links it from the datamodule. None keeps the builder's default.
        in_chans: Input channels; the CLI links it from the datamodule. None keeps the builder's default.
        class_names: Class names, stored so prediction needs nothing but the checkpoint.
        input_size: Training input size (C, H, W), stored for export and prediction.
        mean: Per-channel mean the inputs were normalised with (stored for prediction and export).
        std: Per-channel std the inputs were normalised with.
        optimizer: ``sgd``, ``adam`` or ``adamw``.
        lr: Peak learning rate.
        momentum: SGD momentum.
        nesterov: Nesterov momentum (SGD only).
        weight_decay: L2 penalty on conv and linear weights (never on biases or norm parameters).
        betas: Adam/AdamW betas.
        schedule: ``constant``, ``step``, ``cosine`` or ``onecycle``; stepped every optimiser step.
        warmup_epochs: Linear warmup length in epochs (for ``onecycle``: the rising phase, 30% of the run if 0).
        step_epochs: Epochs at which ``step`` multiplies the lr by ``gamma``.
        gamma: Decay factor of the ``step`` schedule.
        min_lr_ratio: Final lr of ``cosine`` as a fraction of ``lr``.
        label_smoothing: Cross-entropy label smoothing of the training loss (validation/test loss is plain CE).
        init: Weight initialisation: ``default`` (PyTorch's), ``xavier`` (d2l), ``gaussian`` (Caffe, std 0.05),
            ``kaiming``.
        whiten_first_conv: Set the first convolution's filters, when a fit starts, to a whitening of the training
            images' patches (:func:`ninlab.models.init.patch_whitening_filters`: the leading principal directions
            and their negatives, from up to 5,000 training images) and keep them fixed while training, as the
            fast CIFAR-10 trainers do. A resumed fit keeps the checkpoint's filters.
        tta_flip: Average the logits of each image and its horizontal mirror when evaluating and predicting.
        channels_last: Keep the network's weights in channels-last memory format (faster convolutions on CPU).
        compile: Compile the network with ``torch.compile`` (in place, when the trainer sets the model up), for GPUs:
            on a 2-core CPU it made a small NiN slower. Checkpoint keys and contents are the same as without it.
        compile_mode: ``torch.compile``'s mode when ``compile`` is set: ``default``, ``reduce-overhead`` (CUDA
            graphs: one launch replays a whole forward or backward, for GPU steps too short to hide the host's
            per-kernel launch cost), ``max-autotune`` or ``max-autotune-no-cudagraphs``.
    """

    def __init__(
        self,
        model: str = "nin_fast",
        model_kwargs: ModelKwargs | None = None,
        num_classes: int | None = None,
        in_chans: int | None = None,
        class_names: list[str] | None = None,
        input_size: tuple[int, int, int] | None = None,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        optimizer: str = "sgd",
        lr: float = 0.1,
        momentum: float = 0.9,
        nesterov: bool = False,
        weight_decay: float = 5e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        schedule: str = "cosine",
        warmup_epochs: float = 0.0,
        step_epochs: list[int] | None = None,
        gamma: float = 0.1,
        min_lr_ratio: float = 0.0,
        label_smoothing: float = 0.0,
        init: str = "default",
        whiten_first_conv: bool = False,
        tta_flip: bool = False,
        channels_last: bool = False,
        compile: bool = False,
        compile_mode: str = "default",
    ) -> None:
        super().__init__()
        if problem := plain_data_problem(model_kwargs or {}, "model_kwargs"):  # a class could not be checkpointed
            raise ConfigError(f"{problem}; model_kwargs takes plain values, e.g. {{widths: [8, 16], norm_layer: none}}")
        self.save_hyperparameters()
        self._check_options()
        kwargs = dict(model_kwargs or {})
        for key, value in (("num_classes", num_classes), ("in_chans", in_chans)):
            if value is None:
                continue
            if kwargs.get(key, value) != value:
                raise ConfigError(f"model_kwargs.{key}={kwargs[key]} contradicts {key}={value} from the data; drop it")
            kwargs[key] = value
        self.net = create_model(model, **kwargs)
        if class_names is not None and len(class_names) != self.net.num_classes:
            raise ConfigError(f"{len(class_names)} class names for a model with {self.net.num_classes} classes")
        init_weights(self.net, init)
        if whiten_first_conv:
            conv = first_conv(self.net)
            check_whitenable(conv)
            # Fixed, so excluded from the optimiser (ninlab.training.optim.param_groups) and from the backward pass.
            conv.weight.requires_grad_(False)
        self.first_conv_whitened = False
        """Whether :meth:`whiten_first_conv_from` has set the first convolution's filters in this process."""
        self.net_compiled = False
        """Whether :meth:`configure_model` compiled ``net`` (trainers call it again for every fit, test...)."""
        if channels_last:
            # Module.to restrides every weight, the 1-input-channel ones too (``.contiguous(memory_format=...)``
            # would leave those in NCHW strides: a 7x slower weight gradient on AVX2, tests/test_models.py).
            self.net = self.net.to(memory_format=torch.channels_last)
        # Training counts top-1 only: top-5 adds a top-k of the logits to every step, for a number few read then.
        # Keys "train_", ... because ModuleDict reserves some names ("train" is nn.Module.train).
        top_k = 5 if self.net.num_classes > 5 else None
        self.tallies = nn.ModuleDict(
            {f"{split}_": EpochTally(top_k=None if split == "train" else top_k) for split in SPLITS}
        )

    def _check_options(self) -> None:
        hp = self.hparams
        check_choice(hp.optimizer, OPTIMIZERS, "optimizer")
        check_choice(hp.schedule, SCHEDULES, "schedule")
        check_choice(hp.get("compile_mode", "default"), COMPILE_MODES, "compile_mode")
        if not (math.isfinite(hp.lr) and hp.lr > 0):
            raise ConfigError(f"lr must be a positive number, got {hp.lr}; e.g. --model.lr 0.05")
        if hp.weight_decay < 0 or hp.momentum < 0 or hp.warmup_epochs < 0:
            raise ConfigError("weight_decay, momentum and warmup_epochs must be >= 0, got "
                              f"{hp.weight_decay}, {hp.momentum} and {hp.warmup_epochs}")  # fmt: skip
        if hp.nesterov and (hp.optimizer != "sgd" or hp.momentum == 0):
            raise ConfigError("nesterov needs optimizer sgd with momentum > 0")
        if not 0 <= hp.label_smoothing < 1:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {hp.label_smoothing}")
        if not (0 < hp.gamma <= 1 and 0 <= hp.min_lr_ratio <= 1):
            raise ConfigError(f"gamma must be in (0, 1] and min_lr_ratio in [0, 1], got {hp.gamma}, {hp.min_lr_ratio}")

    def setup(self, stage: str) -> None:
        """Whiten the first convolution for a fit when asked; have a multi-process run's process group destroyed
        before this process exits.

        The filters are set here, before the trainer restores a ``--ckpt_path`` checkpoint (so a resumed fit keeps
        the checkpoint's) and before DDP copies rank 0's weights to the other processes. Without the process group's
        destruction a DDP rank can abort at exit: see :func:`ninlab._runtime.distributed.destroy_process_group_at_exit`.
        """
        destroy_process_group_at_exit()
        if stage == "fit" and self.hparams.get("whiten_first_conv"):  # only then is a trainer's datamodule needed
            self.whiten_first_conv_from(self.trainer.datamodule)

    def whiten_first_conv_from(self, datamodule: Any) -> None:
        """Set the first convolution's filters to a whitening of the patches of ``datamodule``'s first training images,
        when ``whiten_first_conv`` is set and this process has not set them yet (otherwise nothing).

        What a fit does at its start; a loop without Lightning calls it to train the same way. ``datamodule`` is an
        :class:`~ninlab.data.ImageDataModule` set up for fitting.
        """
        if not self.hparams.get("whiten_first_conv") or self.first_conv_whitened:
            return
        sample = getattr(datamodule, "normalised_train_sample", None)
        if sample is None:
            found = "no data module" if datamodule is None else type(datamodule).__name__
            raise ConfigError(f"whiten_first_conv needs the training images of ninlab's ImageDataModule, found "
                              f"{found}; fit with --data options or set --model.whiten_first_conv false")  # fmt: skip
        images = sample(min(WHITENING_IMAGES, max(1, 2**25 // math.prod(self.input_size))))
        conv = first_conv(self.net)
        with torch.no_grad():
            conv.weight.copy_(patch_whitening_filters(images, conv))
        self.first_conv_whitened = True

    def configure_model(self) -> None:
        """Compile the network when ``compile`` is set (once, lazily: only runs that train or evaluate pay for it).

        ``nn.Module.compile`` compiles in place, so ``self.net`` keeps its class and its state-dict keys (no
        ``_orig_mod.`` prefix): checkpoints load with or without compilation, and with ``weights_only=True``.
        """
        if self.hparams.get("compile") and not self.net_compiled:
            self.net.compile(mode=self.hparams.get("compile_mode", "default"))
            self.net_compiled = True

    @property
    def num_classes(self) -> int:
        """Number of classes the network predicts."""
        return self.net.num_classes

    @property
    def input_size(self) -> tuple[int, int, int]:
        """(C, H, W) of the training batches, else the variant's design size (never below its minimum)."""
        if self.hparams.input_size:
            return tuple(int(d) for d in self.hparams.input_size)
        side = max(self.net.design_size, self.net.min_input_size)
        return self.net.in_chans, side, side

    @property
    def class_names(self) -> list[str]:
        """Class names from the training data, or ``"0"``, ``"1"``... when none were stored."""
        return list(self.hparams.class_names or map(str, range(self.num_classes)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes) of a normalised batch (B, C, H, W); mirror-averaged when ``tta_flip`` and eval."""
        logits = self.net(x)
        if self.hparams.tta_flip and not self.training:
            logits = (logits + self.net(x.flip(-1))) / 2
        return logits

    def _shared_step(self, batch: tuple[torch.Tensor, torch.Tensor], split: str) -> dict[str, torch.Tensor]:
        x, y = batch
        # Under bf16-mixed autocast the network returns bf16 logits; loss and metrics are computed in fp32.
        logits = self(x).float()
        # Label smoothing regularises training only; evaluation reports plain cross-entropy, the number to compare
        # with ln(num_classes) and across recipes.
        smoothing = self.hparams.label_smoothing if split == "train" else 0.0
        loss = F.cross_entropy(logits, y, label_smoothing=smoothing)
        # Summed here and logged once per epoch (_log_epoch): each Lightning `log` call costs ~1 ms on a CPU,
        # and logging loss and metrics every step cost a tenth of the default recipe's step. The progress bar reads
        # the running loss from the returned dict (ninlab.training.callbacks.RunProgressBar).
        self.tallies[f"{split}_"].update(logits, y, loss)
        return {"loss": loss, "logits": logits.detach()}

    def _log_epoch(self, split: str) -> None:
        tally = self.tallies[f"{split}_"]
        if tally.update_count:
            # compute() totals over DDP processes itself, so the logged values need no further sync.
            self.log_dict({f"{split}/{name}": value for name, value in tally.compute().items()})
        tally.reset()

    def on_train_epoch_end(self) -> None:
        """Log the epoch's training loss and accuracy."""
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        """Log the validation loss and accuracy."""
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        """Log the test loss and accuracy."""
        self._log_epoch("test")

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        """One optimisation step on a training batch; returns the loss and the logits."""
        return self._shared_step(batch, "train")

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        """Loss and accuracy of a validation batch."""
        return self._shared_step(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        """Loss and accuracy of a test batch."""
        return self._shared_step(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """Class probabilities (B, num_classes) of a batch of images (labels, if any, are ignored)."""
        x = batch[0] if isinstance(batch, list | tuple) else batch
        return self(x).float().softmax(dim=-1)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse, with one line, a ``--ckpt_path`` checkpoint whose network differs from the one this run built.

        Lightning would otherwise fail on the first mismatched tensor with a long ``load_state_dict`` report.
        """
        saved = checkpoint.get("hyper_parameters")
        if not isinstance(saved, dict):
            raise CheckpointError("the checkpoint has no model hyperparameters; it was not written by ninlab fit")
        check_hyperparameters(type(self), saved, "the checkpoint")
        mine = self.hparams
        wanted = {"model": mine.model, "model_kwargs": dict(mine.model_kwargs or {}),
                  "classes": self.num_classes, "channels": self.net.in_chans}  # fmt: skip
        found = {"model": saved.get("model"), "model_kwargs": dict(saved.get("model_kwargs") or {}),
                 "classes": saved.get("num_classes"), "channels": saved.get("in_chans")}  # fmt: skip
        differ = [f"{key} {found[key]} vs {wanted[key]}" for key in wanted if found[key] not in (None, wanted[key])]
        if differ:
            raise CheckpointError(f"the checkpoint does not fit this run's network ({'; '.join(differ)} here): "
                                  "pass the run's own config (-c runs/.../config.yaml) or a checkpoint of this "
                                  "model and data")  # fmt: skip

    def build_optimization(
        self, total_steps: int, steps_per_epoch: float
    ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler | None]:
        """The hyperparameters' optimiser and per-step lr schedule (None: constant lr) for a run of ``total_steps``.

        What :meth:`configure_optimizers` hands Lightning; a plain PyTorch loop calls it to train the same way.
        """
        hp = self.hparams
        optimizer = build_optimizer(self.net, hp.optimizer, lr=hp.lr, weight_decay=hp.weight_decay,
                                    momentum=hp.momentum, nesterov=hp.nesterov, betas=hp.betas)  # fmt: skip
        scheduler = build_scheduler(optimizer, hp.schedule, total_steps=total_steps, steps_per_epoch=steps_per_epoch,
                                    warmup_epochs=hp.warmup_epochs, step_epochs=hp.step_epochs or (), gamma=hp.gamma,
                                    min_lr_ratio=hp.min_lr_ratio)  # fmt: skip
        return optimizer, scheduler

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Clip gradients as Lightning does (``--trainer.gradient_clip_val``), returning at once when none is set.

        Lightning's version resolves the clipping algorithm and the precision plugin every step before finding
        nothing to clip: ~40 us between two steps' kernels on a 2-core CPU.
        """
        if not gradient_clip_val:
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def configure_optimizers(self) -> dict[str, Any]:
        """The optimiser and a per-step lr schedule sized from the trainer's total number of optimiser steps."""
        total_steps = int(self.trainer.estimated_stepping_batches)
        epochs = self.trainer.max_epochs if self.trainer.max_epochs and self.trainer.max_epochs > 0 else 1
        optimizer, scheduler = self.build_optimization(total_steps, total_steps / epochs)
        if scheduler is None:
            return {"optimizer": optimizer}
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
