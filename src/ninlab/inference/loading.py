"""Load a trained :class:`NiNClassifier` from a checkpoint file alone, safely.

Checkpoints are read with ``torch.load(weights_only=True)`` (:func:`ninlab.training.checkpoint_io.read_checkpoint`): a
checkpoint is data, never code, so a tampered file cannot run anything. The model is rebuilt from the saved
hyperparameters (model name, kwargs, class names, input size, normalisation), once they are checked to be plain
options of :class:`NiNClassifier` (:mod:`ninlab.training.untrusted`); then the weights are loaded strictly.
"""

from __future__ import annotations

from pathlib import Path

from ninlab.errors import CheckpointError, NinlabError
from ninlab.training.checkpoint_io import read_checkpoint
from ninlab.training.module import NiNClassifier
from ninlab.training.untrusted import check_hyperparameters

__all__ = ["load_classifier"]


def load_classifier(path: str | Path) -> NiNClassifier:
    """Rebuild the classifier saved in checkpoint ``path``, in eval mode on the CPU.

    Raises:
        CheckpointError: The file is missing, unreadable, not a ninlab checkpoint, or its weights do not fit.
    """
    checkpoint = read_checkpoint(path)
    hparams = checkpoint.get("hyper_parameters")
    if not isinstance(hparams, dict) or "model" not in hparams or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} is not a ninlab training checkpoint (no model hyperparameters or weights)")
    check_hyperparameters(NiNClassifier, hparams, str(path))  # before any of them reaches the model
    try:
        model = NiNClassifier(**hparams)
        model.load_state_dict(checkpoint["state_dict"])
    except (NinlabError, TypeError, RuntimeError) as error:
        reason = " ".join(str(error).split())[:300]
        raise CheckpointError(f"{path} does not fit a {hparams['model']} classifier: {reason}") from error
    return model.eval()
