"""Trained weights shipped inside the package (``ninlab/pretrained/``), checked against a manifest before use.

``manifest.json`` names each set of weights (``fashion-mnist``, ``mnist``) and records its file, its sha256, the
variant it fits, the test accuracy it was measured at and the exact command and seed that trained it. A file whose
sha256 differs from the manifest's is refused before a byte of it is unpickled; the rest is read with
``torch.load(weights_only=True)`` (tensors and plain containers only).
"""

from __future__ import annotations

import hashlib
import io
import json
from importlib import resources
from typing import Any

import torch

from ninlab.errors import CheckpointError, ConfigError

__all__ = ["list_pretrained", "pretrained_entry", "read_pretrained"]

_MAX_BYTES = 64 * 2**20  # the shipped files are a few hundred KB; nothing larger is read into memory


def _folder():
    return resources.files("ninlab") / "pretrained"


def list_pretrained() -> dict[str, dict[str, Any]]:
    """The manifest: ``{name: entry}``, each entry with ``file``, ``sha256``, ``model``, ``test_accuracy``..."""
    manifest = _folder() / "manifest.json"
    if not manifest.is_file():
        return {}
    return json.loads(manifest.read_text())["weights"]


def pretrained_entry(name: str) -> dict[str, Any]:
    """The manifest entry of the weights ``name``; :class:`ConfigError` naming the shipped ones if unknown."""
    weights = list_pretrained()
    if name not in weights:
        known = ", ".join(sorted(weights)) or "none"
        raise ConfigError(f"no pretrained weights {name!r}; ninlab ships: {known} (see `ninlab models`)")
    return weights[name]


def read_pretrained(name: str) -> dict[str, Any]:
    """The shipped checkpoint ``name`` (``hyper_parameters`` and ``state_dict``), after its sha256 was checked.

    Raises:
        ConfigError: No weights of that name.
        CheckpointError: The file is missing, or its bytes are not the ones the manifest records.
    """
    entry = pretrained_entry(name)
    path = _folder() / entry["file"]
    if not path.is_file():
        raise CheckpointError(f"the pretrained weights {name!r} are missing ({path}); reinstall ninlab")
    with path.open("rb") as file:
        data = file.read(_MAX_BYTES + 1)
    digest = hashlib.sha256(data).hexdigest()
    if len(data) > _MAX_BYTES or digest != entry["sha256"]:
        raise CheckpointError(f"the pretrained weights {name!r} ({path}) have sha256 {digest[:16]}..., expected "
                              f"{entry['sha256'][:16]}... from the manifest: the file was changed or damaged; "
                              "reinstall ninlab")  # fmt: skip
    try:
        checkpoint = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as error:  # the sha256 matched, so only a wrong manifest gets here
        raise CheckpointError(f"the pretrained weights {name!r} cannot be read: {error}; reinstall ninlab") from error
    return checkpoint
