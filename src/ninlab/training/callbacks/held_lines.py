"""Print the library lines held while the trainer was built and set up, once its first loop starts."""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Callback

from ninlab._runtime.library_messages import HeldLines

__all__ = ["ReleaseHeldLines"]


class ReleaseHeldLines(Callback):
    """Release ``held`` (see :class:`~ninlab._runtime.library_messages.HeldLines`) when fit (after the checkpoint
    was restored), a loop or the sanity check starts: from then on, what Lightning prints belongs to a run under way.

    Args:
        held: The lines held since the trainer was built.
    """

    def __init__(self, held: HeldLines) -> None:
        self.held = held

    def _release(self, *_: Any) -> None:
        self.held.release()

    on_fit_start = on_sanity_check_start = on_train_start = on_validation_start = on_test_start = on_predict_start = (
        _release
    )
