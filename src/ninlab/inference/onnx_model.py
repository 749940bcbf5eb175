"""A model exported by ``ninlab export``, used where a checkpoint is: ``ninlab predict-images model.onnx IMAGE...``.

The file describes itself: ``ninlab export`` writes the class names, the input size and the normalisation into its
ONNX metadata, so an image is prepared exactly as for the checkpoint it came from and onnxruntime gives the logits
(the export checked they match PyTorch's). The file may come from anyone: it is read as bytes (so it can name no
other file to load), and its metadata is JSON whose every value is checked before use.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.fabric.utilities.data import AttributeDict

from ninlab.errors import CheckpointError

__all__ = ["OnnxClassifier"]

MAX_SIDE = 4096
"""The largest input side accepted from a file's metadata (a NiN for larger images is not something ninlab exports)."""


class OnnxClassifier:
    """The class names, input size, normalisation and probabilities of an ONNX file written by ``ninlab export``.

    Has what :func:`ninlab.inference.predict.predict_files` uses of a classifier: ``class_names``, ``num_classes``,
    ``input_size``, ``hparams`` (mean, std, model) and ``predict_step``.

    Raises:
        CheckpointError: No such file, a file onnxruntime cannot load, or one without valid ninlab metadata.
    """

    def __init__(self, path: str | Path) -> None:
        import onnxruntime  # slow to import; only when an ONNX file is used

        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"no ONNX file at {path}; pass a model written by ninlab export")
        try:  # from bytes: a model that points to external data files cannot make onnxruntime open them
            self._session = onnxruntime.InferenceSession(path.read_bytes(), providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own types for damaged or foreign files
            found = " ".join(str(error).split())[:200]
            raise CheckpointError(f"{path}: expected an ONNX model written by ninlab export, found one onnxruntime "
                                  f"cannot load ({found}); export the checkpoint again") from error  # fmt: skip
        meta = self._session.get_modelmeta().custom_metadata_map
        if meta.get("producer") != "ninlab":
            raise CheckpointError(f"{path}: expected the metadata ninlab export writes (class names, input size, "
                                  "normalisation), found none; export the checkpoint with ninlab export")  # fmt: skip
        self.class_names, self.input_size, mean, std = _metadata(meta, path)
        self.num_classes = len(self.class_names)
        # The type a checkpoint's classifier keeps its hyperparameters in, so network_inputs reads both alike.
        self.hparams = AttributeDict(mean=mean, std=std, model=str(meta.get("model", "onnx")), channels_last=False)
        self._input = self._session.get_inputs()[0].name

    def predict_step(self, x: torch.Tensor, batch_idx: int = 0) -> torch.Tensor:
        """Class probabilities (B, num_classes) of a prepared batch, from onnxruntime's logits."""
        (logits,) = self._session.run(None, {self._input: x.contiguous().numpy()})
        if logits.shape != (x.shape[0], self.num_classes):
            raise CheckpointError(f"the ONNX model returned logits of shape {logits.shape}, expected "
                                  f"{(x.shape[0], self.num_classes)} (one per class in its metadata)")  # fmt: skip
        return torch.from_numpy(np.asarray(logits, dtype=np.float32)).softmax(dim=1)


def _metadata(meta: dict[str, str], path: Path) -> tuple[list[str], tuple[int, int, int], Any, Any]:
    """Class names, (C, H, W), mean and std from the file's metadata, each checked (one line when one is wrong)."""

    def read(key: str) -> Any:
        try:
            return json.loads(meta.get(key, "null"))
        except ValueError as error:
            raise CheckpointError(f"{path}: its metadata {key!r} is not JSON; export the checkpoint again") from error

    names, size, mean, std = read("class_names"), read("input_size"), read("mean"), read("std")
    if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
        raise CheckpointError(f"{path}: expected a list of class names in its metadata, found {str(names)[:80]!r}")
    if not (isinstance(size, list) and len(size) == 3 and all(type(v) is int for v in size)
            and size[0] in (1, 3) and all(1 <= v <= MAX_SIDE for v in size[1:])):  # fmt: skip
        raise CheckpointError(f"{path}: expected an input size [C, H, W] (C 1 or 3, sides 1-{MAX_SIDE}) in its "
                              f"metadata, found {str(size)[:80]!r}")  # fmt: skip
    for key, value in (("mean", mean), ("std", std)):
        if value is not None and not (
            isinstance(value, list) and len(value) == size[0]
            and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value)
            and (key == "mean" or all(v > 0 for v in value))
        ):  # fmt: skip
            raise CheckpointError(f"{path}: expected {size[0]} finite {key} values in its metadata, found "
                                  f"{str(value)[:80]!r}")  # fmt: skip
    return names, (size[0], size[1], size[2]), mean, std
