"""Error types ninlab raises for problems a user can fix.

Every error here carries a one-line message that says what was expected, what was found and what to do.
The command line prints that line (no traceback unless ``--verbose``) and exits non-zero.
"""

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "DataNotFoundError",
    "InputSizeError",
    "NinlabError",
    "TrainingError",
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
