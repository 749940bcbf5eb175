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
    pad_last_block: bool


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


def create_model(name: str, pretrained: str | None = None, **kwargs) -> nn.Module:
    """Build the registered model ``name`` with the builder's keyword arguments (``in_chans``, ``num_classes``...).

    ``pretrained`` names weights shipped with ninlab (``"fashion-mnist"``, ``"mnist"``; ``ninlab models`` lists
    them): the model is built as they were trained and loaded with them, in eval mode. Keywords given with it must
    agree with the trained model's.

    Raises:
        ConfigError: the name is unknown, a keyword is not one the builder takes, or the weights do not fit.
        CheckpointError: the shipped weights file fails its sha256 check.
    """
    _load_builtin_models()
    check_choice(name, sorted(_BUILDERS), "model")
    builder = _BUILDERS[name]
    accepted = list(inspect.signature(builder).parameters)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ConfigError(f"model {name!r} takes no option {', '.join(unknown)}; it takes: {', '.join(accepted)}")
    if pretrained is None:
        return builder(**kwargs)
    return _with_pretrained(name, builder, pretrained, kwargs)


def _with_pretrained(name: str, builder: Callable[..., nn.Module], weights: str, kwargs: dict) -> nn.Module:
    from ninlab.models.pretrained import pretrained_entry, read_pretrained

    entry = pretrained_entry(weights)
    if entry["model"] != name:
        raise ConfigError(f"the pretrained weights {weights!r} are for {entry['model']}, not {name}; "
                          f"use create_model({entry['model']!r}, pretrained={weights!r})")  # fmt: skip
    checkpoint = read_pretrained(weights)
    hparams = checkpoint["hyper_parameters"]
    trained = {**(hparams.get("model_kwargs") or {}), "num_classes": hparams["num_classes"],
               "in_chans": hparams["in_chans"]}  # fmt: skip
    differ = [f"{key}={kwargs[key]!r} (trained with {trained.get(key, 'its default')!r})" for key in kwargs
              if key not in trained or kwargs[key] != trained[key]]  # fmt: skip
    if differ:
        raise ConfigError(f"the pretrained weights {weights!r} do not fit {', '.join(differ)}; drop these options")
    model = builder(**trained)
    prefix = "net."  # the shipped files hold a NiNClassifier's state dict; its network is `net`
    state = {k[len(prefix) :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
    model.load_state_dict(state)
    return model.eval()
