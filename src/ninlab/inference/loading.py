"""Load a trained :class:`NiNClassifier` from a checkpoint file, or from the weights shipped with ninlab, safely.

Checkpoints are read with ``torch.load(weights_only=True)`` (:func:`ninlab.training.checkpoint_io.read_checkpoint`): a
checkpoint is data, never code, so a tampered file cannot run anything. The model is rebuilt from the saved
hyperparameters (model name, kwargs, class names, input size, normalisation), once they are checked to be plain
options of :class:`NiNClassifier` (:mod:`ninlab.training.untrusted`); then the weights are loaded strictly.
Shipped weights (:mod:`ninlab.models.pretrained`) are checked against their manifest's sha256 first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ninlab.errors import CheckpointError, NinlabError
from ninlab.models.pretrained import read_pretrained
from ninlab.training.checkpoint_io import read_checkpoint
from ninlab.training.module import NiNClassifier
from ninlab.training.untrusted import check_hyperparameters

__all__ = ["load_classifier", "load_pretrained_classifier"]


def load_classifier(path: str | Path) -> NiNClassifier:
    """Rebuild the classifier saved in checkpoint ``path``, in eval mode on the CPU.

    Raises:
        CheckpointError: The file is missing, unreadable, not a ninlab checkpoint, or its weights do not fit.
    """
    return _classifier(read_checkpoint(path), str(path))


def load_pretrained_classifier(name: str) -> NiNClassifier:
    """The classifier of the weights ``name`` shipped with ninlab (``ninlab models`` lists them), in eval mode.

    Raises:
        ConfigError: No shipped weights of that name.
        CheckpointError: The shipped file fails its sha256 check or does not fit its model.
    """
    return _classifier(read_pretrained(name), f"the pretrained weights {name!r}")


def _classifier(checkpoint: dict[str, Any], where: str) -> NiNClassifier:
    hparams = checkpoint.get("hyper_parameters")
    if not isinstance(hparams, dict) or "model" not in hparams or "state_dict" not in checkpoint:
        raise CheckpointError(f"{where} is not a ninlab training checkpoint (no model hyperparameters or weights)")
    check_hyperparameters(NiNClassifier, hparams, where)  # before any of them reaches the model
    try:
        model = NiNClassifier(**hparams)
        model.load_state_dict(checkpoint["state_dict"])
    except (NinlabError, TypeError, RuntimeError) as error:
        reason = " ".join(str(error).split())[:300]
        raise CheckpointError(f"{where} does not fit a {hparams['model']} classifier: {reason}") from error
    return model.eval()
