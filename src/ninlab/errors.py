"""Error types ninlab raises for problems a user can fix.

Every error here carries a one-line message that says what was expected, what was found and what to do.
The command line prints that line (no traceback unless ``--verbose``) and exits non-zero.
"""

from collections.abc import Iterable

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "DataNotFoundError",
    "InputSizeError",
    "NinlabError",
    "RunInterrupted",
    "TrainingError",
    "check_choice",
    "unknown_choice",
]


class NinlabError(Exception):
    """Base class of every error ninlab reports to its user as a single line."""


class ConfigError(NinlabError, ValueError):
    """An option, name or configuration value that ninlab cannot use (unknown model, negative lr, ...)."""


class InputSizeError(NinlabError, ValueError):
    """An input image too small (or with the wrong channel count) for the chosen network."""


class DataError(NinlabError):
    """A dataset file that is malformed, truncated, tampered with or otherwise unreadable."""


class DataNotFoundError(DataError, FileNotFoundError):
    """A dataset that could not be found in any of the places ninlab looks."""


class CheckpointError(NinlabError):
    """A checkpoint that does not fit the model, was tampered with, or cannot be read safely."""


class TrainingError(NinlabError):
    """A training run that cannot go on: dead class maps (loss stuck at ln(num_classes)) or a non-finite loss."""


class RunInterrupted(NinlabError):
    """A command stopped by a signal (SIGTERM, SIGINT, SIGHUP, SIGUSR1); it exits with ``128 + signal number``.

    Args:
        message: The line to print: what stopped the run and how to resume it.
        signal_number: The signal that stopped it.
        quiet: Print nothing (DDP's extra processes: global rank 0 reports for the whole run).
    """

    def __init__(self, message: str, signal_number: int, quiet: bool = False) -> None:
        super().__init__(message)
        self.signal_number = signal_number
        self.quiet = quiet

    @property
    def exit_code(self) -> int:
        """``128 + signal number``, what a shell reports for a process that the signal ended; 0 when quiet."""
        return 0 if self.quiet else 128 + self.signal_number


def unknown_choice(option: str, value: object, choices: Iterable[str], alternative: str = "") -> ConfigError:
    """The one-line error for a ``value`` of ``option`` that is none of ``choices`` (plus ``alternative``, if any)."""
    return ConfigError(f"unknown {option} {value!r}; use one of {', '.join(choices)}{alternative}")


def check_choice(value: object, choices: Iterable[str], option: str) -> None:
    """Raise :func:`unknown_choice`'s :class:`ConfigError` unless ``value`` is one of ``choices``."""
    choices = list(choices)
    if value not in choices:
        raise unknown_choice(option, value, choices)
