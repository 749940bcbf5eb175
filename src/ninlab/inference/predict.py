"""``ninlab predict-images CKPT PATH...``: top-k classes of image files or folders, from a checkpoint alone.

Images are decoded, converted to the model's channel count, resized to its training input size and normalised with
the statistics stored in the checkpoint, as the datamodule prepared training batches. Output is a table
(default), CSV (``file,rank,class,probability``) or JSON (a list of ``{"file", "top": [{"class", "probability"}]}``).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ninlab.data import load_images
from ninlab.data.transforms import normalize
from ninlab.training.module import NiNClassifier

__all__ = ["Prediction", "predict_files"]

Prediction = tuple[Path, list[tuple[str, float]]]
"""A file and its top-k (class name, probability) pairs, most likely first."""


def predict_files(
    model: NiNClassifier, paths: list[str | Path], top_k: int = 3, batch_size: int = 64
) -> list[Prediction]:
    """Top-``top_k`` classes with probabilities for every image in ``paths`` (files and folders, recursively)."""
    channels, height, width = model.input_size
    images, files = load_images(paths, (height, width), channels)
    mean = torch.tensor(model.hparams.mean or [0.0] * channels)
    std = torch.tensor(model.hparams.std or [1.0] * channels)
    top_k = min(top_k, model.num_classes)
    names = model.class_names
    predictions: list[Prediction] = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size].float().div_(255)  # load_images already resized
            probs = model.predict_step(normalize(batch, mean, std), start)
            values, indices = probs.topk(top_k, dim=1)
            for i, (vals, idxs) in enumerate(zip(values.tolist(), indices.tolist(), strict=True)):
                predictions.append((files[start + i], [(names[j], v) for v, j in zip(vals, idxs, strict=True)]))
    return predictions
