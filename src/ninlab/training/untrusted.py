"""Values read from checkpoints and configs stay data: never a class, an import or unbounded memory.

Guards where the bytes enter:

* :func:`hyperparameter_problem` checks a checkpoint's ``hyper_parameters`` before LightningCLI merges them into the
  config (or :func:`ninlab.inference.load_classifier` passes them to the model): plain values only (str, int, float,
  bool, None, lists and dicts of those, bounded in depth and size), only the model's own options, each of the type
  its signature declares. A ``class_path`` dict there would otherwise be built by jsonargparse, i.e. run.
* :func:`harden_config_parsing` switches jsonargparse to the behaviour its next major version makes the default:
  a ``class_path`` dict given for an ``Any``-typed value stays a dict (never instantiated), and import paths on its
  denylist (``os``, ``subprocess``, ``builtins.eval``, ``logging.FileHandler``...) are refused rather than warned
  about. Class-typed options (``--trainer.callbacks``, ``logger``, ``profiler``, ``plugins``, ``strategy``) keep
  working: jsonargparse resolves them only to subclasses of the declared base type, before calling anything.
* It also makes jsonargparse's YAML loader refuse a document whose aliases would repeat more than
  :data:`MAX_ALIAS_NODES` nodes ("billion laughs"): PyYAML builds an alias as a shared reference, but jsonargparse
  copies and walks every path, and formats the value into its error messages.

Trust: a config (``-c``) is trusted like the command line for class-typed trainer options, which may name any
importable subclass of their base type (resolving the name imports its module); model and data values, and anything
in a checkpoint, never name a class.
"""

from __future__ import annotations

import inspect
import types
import typing
from typing import Any

import yaml
from jsonargparse import set_parsing_settings

from ninlab._runtime.library_internals import replace_yaml_loader, yaml_loader
from ninlab.errors import CheckpointError

__all__ = [
    "MAX_ALIAS_NODES",
    "PlainLimits",
    "check_hyperparameters",
    "harden_config_parsing",
    "hyperparameter_problem",
    "plain_data_problem",
]

MAX_ALIAS_NODES = 10_000
"""At most this many YAML nodes may be repeats made by aliases, over a whole document."""

# Keys that make jsonargparse (or Lightning's checkpoint merge) treat a dict as a class to import and build.
_CODE_KEYS = ("class_path", "init_args", "dict_kwargs", "_class_path", "_instantiator", "__path__")


class PlainLimits(typing.NamedTuple):
    """Bounds of a plain value: nesting depth, total number of items and length of one string."""

    depth: int = 8
    items: int = 100_000
    string: int = 10_000


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def plain_data_problem(value: Any, where: str, limits: PlainLimits = PlainLimits()) -> str | None:  # noqa: B008
    """What makes ``value`` more than plain data (None if nothing does); ``where`` names it in the answer.

    Plain: None, bool, int, float, str, and lists, tuples and str-keyed dicts of those, within ``limits``; no dict
    carries a key that names code for jsonargparse or Lightning (``class_path``, ``init_args``, ``__path__``...).
    """
    stack, items = [(value, where, 0)], 0
    while stack:
        item, place, depth = stack.pop()
        items += 1
        if items > limits.items:
            return f"{where} holds more than {limits.items:,} values"
        if depth > limits.depth:
            return f"{place} is nested deeper than {limits.depth} levels"
        if item is None or isinstance(item, bool | int | float):
            continue
        if isinstance(item, str):
            if len(item) > limits.string:
                return f"{place} is a string of {len(item):,} characters (at most {limits.string:,})"
        elif isinstance(item, list | tuple):
            stack.extend((sub, f"{place}[{i}]", depth + 1) for i, sub in enumerate(item))
        elif isinstance(item, dict):
            for key, sub in item.items():
                if not isinstance(key, str):
                    return f"{place} has a non-string key {_short(key)}"
                if key in _CODE_KEYS or key.startswith("__"):
                    return f"{place} has a {key!r} key, which names code to import"
                stack.append((sub, f"{place}.{key}", depth + 1))
        else:
            kind = f"the class {item.__qualname__}" if isinstance(item, type) else f"a {type(item).__qualname__}"
            return f"{place} is {kind}, not a plain value"
    return None


def _fits(value: Any, hint: Any) -> bool:
    """Whether the plain ``value`` has the type ``hint`` (lists and tuples stand for each other, as in YAML)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if hint is None or hint is type(None):
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, arg) for arg in args)
    if origin is typing.Literal:
        return value in args
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple) or (origin is not None and origin.__name__ == "Sequence"):
        if not isinstance(value, list | tuple):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(_fits(v, a) for v, a in zip(value, args, strict=True))
        return all(_fits(v, args[0]) for v in value) if args else True
    if typing.is_typeddict(hint):
        fields = typing.get_type_hints(hint)
        return (isinstance(value, dict) and set(value) <= set(fields) and hint.__required_keys__ <= set(value)
                and all(_fits(v, fields[k]) for k, v in value.items()))  # fmt: skip
    if origin is dict:
        key_hint, value_hint = args or (Any, Any)
        return isinstance(value, dict) and all(_fits(k, key_hint) and _fits(v, value_hint) for k, v in value.items())
    return False  # a class-typed option: no checkpoint value may name one


def _describe(hint: Any) -> str:
    """``hint`` as a reader would write it: ``list[float] or None``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is type(None):
        return "None"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in args)
    if origin is typing.Literal:
        return " or ".join(map(repr, args))
    if origin is not None:
        inner = ", ".join("..." if arg is Ellipsis else _describe(arg) for arg in args)
        return f"{origin.__name__}[{inner}]" if inner else origin.__name__
    return getattr(hint, "__name__", str(hint))


def _typed_dict_fields(hint: Any) -> dict[str, Any]:
    """The fields of the TypedDict in ``hint`` (``SomeDict | None`` too); empty if there is none."""
    for option in (hint, *typing.get_args(hint)):
        if typing.is_typeddict(option):
            return typing.get_type_hints(option)
    return {}


def _mismatch(name: str, value: Any, hint: Any) -> str | None:
    if _fits(value, hint):
        return None
    fields = _typed_dict_fields(hint)
    for key, sub in value.items() if fields and isinstance(value, dict) else ():
        if key not in fields:
            return f"{name} has {key!r}, which is none of the options {', '.join(fields)}"
        if not _fits(sub, fields[key]):
            return f"{name}.{key} should be {_describe(fields[key])}, found {type(sub).__name__} {_short(sub)}"
    return f"{name} should be {_describe(hint)}, found {type(value).__name__} {_short(value)}"


def hyperparameter_problem(cls: type, hparams: Any, key: str = "hyper_parameters") -> str | None:
    """What makes ``hparams`` (a checkpoint's entry ``key``) unfit to build ``cls`` with; None if nothing.

    They must be plain data (:func:`plain_data_problem`), name only parameters of ``cls.__init__`` and have the
    types its annotations declare. Missing parameters are fine (older checkpoints; the defaults apply).
    """
    if not isinstance(hparams, dict):
        return f"{key} is a {type(hparams).__name__}, not a dict of {cls.__name__} options"
    problem = plain_data_problem(hparams, key)
    if problem:
        return problem
    parameters = dict(inspect.signature(cls.__init__).parameters)
    parameters.pop("self", None)
    unknown = sorted(set(hparams) - set(parameters))
    if unknown:
        return f"{key} has {', '.join(map(repr, unknown[:5]))}, which {cls.__name__} does not take"
    hints = typing.get_type_hints(cls.__init__)
    problems = (_mismatch(f"{key}.{name}", value, hints.get(name, Any)) for name, value in hparams.items())
    return next((problem for problem in problems if problem), None)


def check_hyperparameters(cls: type, hparams: Any, source: str, key: str = "hyper_parameters") -> None:
    """Raise :class:`CheckpointError` naming ``source`` when :func:`hyperparameter_problem` finds a problem."""
    problem = hyperparameter_problem(cls, hparams, key)
    if problem:
        raise CheckpointError(
            f"{source} cannot be used: {problem}; a checkpoint holds plain {cls.__name__} options "
            "only, so it was tampered with or not written by ninlab fit (nothing of it was run)"
        )


class AliasBombError(yaml.YAMLError):
    """A YAML document whose aliases would expand beyond :data:`MAX_ALIAS_NODES` nodes."""


def _alias_repeats(root: yaml.Node) -> int:
    """How many nodes the aliases in the document under ``root`` add when expanded (memoised: linear time)."""
    expanded: dict[int, int] = {}  # id(node) -> size of its expansion
    seen, distinct = set(), 0
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if key in expanded:
            continue
        children = ([n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode)
                    else node.value if isinstance(node, yaml.SequenceNode) else [])  # fmt: skip
        if children_done:
            expanded[key] = 1 + sum(expanded.get(id(child), 0) for child in children)
            continue
        if key in seen:  # reached again before its expansion was known: an alias inside its own anchor
            raise AliasBombError("a YAML alias refers to the node that contains it (a recursive document)")
        seen.add(key)
        distinct += 1
        stack.append((node, True))
        stack.extend((child, False) for child in children if id(child) not in expanded)
    return expanded[id(root)] - distinct


def _bounded_loader(base: type) -> type:
    """A subclass of the YAML loader class ``base`` that checks alias expansion before building a document."""

    class BoundedLoader(base):
        def construct_document(self, node: yaml.Node) -> Any:
            if _alias_repeats(node) > MAX_ALIAS_NODES:
                raise AliasBombError(f"YAML aliases (*name) would repeat more than {MAX_ALIAS_NODES:,} values (an "
                                     "alias bomb); write the values out instead")  # fmt: skip
            return super().construct_document(node)

    BoundedLoader.__qualname__ = BoundedLoader.__name__ = f"Bounded{base.__name__}"
    return BoundedLoader


def harden_config_parsing() -> None:
    """Make jsonargparse keep ``class_path`` values of ``Any`` types as data, enforce its import denylist and bound
    YAML aliases (process-wide settings; calling again changes nothing)."""
    set_parsing_settings(instantiate_subclass_spec_in_any=False, import_path_denylist=[])
    base = yaml_loader()
    if not base.__name__.startswith("Bounded"):
        replace_yaml_loader(_bounded_loader(base))
