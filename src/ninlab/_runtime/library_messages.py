"""Third-party messages that tell a ninlab user nothing, hidden by the command line.

* Lightning's "💡 Tip: ..." lines advertise optional cloud services (LitLogger, LitModels) on every fit.
* torch.onnx warns, once per operator, that torchvision's detection ops cannot be registered without torchvision;
  ninlab never uses them and never needs torchvision.
* Lightning's pytree helper calls a torch function that torch has deprecated (``isinstance(treespec, LeafSpec)``),
  a FutureWarning about Lightning's code, not the user's.
* Lightning warns that an ``IterableDataset``'s ``__len__`` "could be inaccurate" with several workers; ninlab's
  shard streams split their shards among the workers themselves and report their exact batch count.

Only these are hidden: every other warning, error and log line still shows. Importing ninlab as a library changes
nothing; :func:`hide_irrelevant_library_messages` runs when the ``ninlab`` command starts.
"""

from __future__ import annotations

import logging
import warnings

__all__ = ["hide_irrelevant_library_messages"]

_LIGHTNING_RANK_ZERO = "lightning.pytorch.utilities.rank_zero"
_ONNX_REGISTRATION = "torch.onnx._internal.exporter._registration"
_PYTREE_DEPRECATION = r"`isinstance\(treespec, LeafSpec\)` is deprecated"
_ITERABLE_LEN = r"Your `IterableDataset` has `__len__` defined"


class _DropTips(logging.Filter):
    """Drops Lightning's advertising tips (their text starts with "💡 Tip:")."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip:")


def hide_irrelevant_library_messages() -> None:
    """Hide the messages listed in this module's docstring for the rest of the process. Safe to call repeatedly."""
    lightning = logging.getLogger(_LIGHTNING_RANK_ZERO)
    if not any(isinstance(f, _DropTips) for f in lightning.filters):
        lightning.addFilter(_DropTips())
    logging.getLogger(_ONNX_REGISTRATION).setLevel(logging.ERROR)
    # filterwarnings replaces an identical filter rather than adding another.
    warnings.filterwarnings("ignore", message=_PYTREE_DEPRECATION, category=FutureWarning)
    warnings.filterwarnings("ignore", message=_ITERABLE_LEN)
