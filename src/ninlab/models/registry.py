"""A strict model registry: ``create_model(name, **kwargs)`` and ``list_models(pattern)``.

Builders register themselves by function name with :func:`register_model`. Registering a name twice is an error,
and so is asking for a name that does not exist (the message lists the known ones), as in torchvision's
``models/_api.py``.
"""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable
from typing import TypedDict, TypeVar

from torch import nn

from ninlab.errors import ConfigError, check_choice

__all__ = ["ModelKwargs", "create_model", "list_models", "register_model"]


class ModelKwargs(TypedDict, total=False):
    """The builders' options as plain values (each builder takes some), the type of ``NiNClassifier.model_kwargs``.

    Layers are chosen by name, so a checkpoint stays data and a config never names a class to build; jsonargparse
    validates ``model_kwargs`` against this type instead of ``Any``, so a ``class_path`` dict there is refused when
    parsing, before anything is imported. A builder option added later must be added here too (a test checks).
    """

    in_chans: int
    num_classes: int
    widths: list[int]
    act_layer: str  # relu, gelu, silu, elu
    norm_layer: str | None  # batchnorm, none
    drop_rate: float
    final_act: bool


_Builder = TypeVar("_Builder", bound=Callable[..., nn.Module])
_BUILDERS: dict[str, Callable[..., nn.Module]] = {}


def _load_builtin_models() -> None:
    # The model family registers itself on import; importing here avoids an import cycle with ninlab.models.
    import ninlab.models  # noqa: F401


def register_model(builder: _Builder) -> _Builder:
    """Register ``builder`` under its function name; a name registered twice raises :class:`ConfigError`."""
    name = builder.__name__
    if name in _BUILDERS:
        raise ConfigError(f"model {name!r} is already registered; pick another builder name")
    _BUILDERS[name] = builder
    return builder


def list_models(pattern: str = "*") -> list[str]:
    """Return the sorted names of the registered models that match the shell-style ``pattern``."""
    _load_builtin_models()
    return sorted(fnmatch.filter(_BUILDERS, pattern))


def create_model(name: str, **kwargs) -> nn.Module:
    """Build the registered model ``name`` with the builder's keyword arguments (``in_chans``, ``num_classes``...).

    Raises:
        ConfigError: the name is unknown, or a keyword is not one the builder takes.
    """
    _load_builtin_models()
    check_choice(name, sorted(_BUILDERS), "model")
    builder = _BUILDERS[name]
    accepted = list(inspect.signature(builder).parameters)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ConfigError(f"model {name!r} takes no option {', '.join(unknown)}; it takes: {', '.join(accepted)}")
    return builder(**kwargs)
