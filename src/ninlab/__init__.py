"""ninlab: Network-in-Network image classifiers on PyTorch Lightning."""

from ninlab.errors import ConfigError, DataError, InputSizeError, NinlabError
from ninlab.models.registry import create_model, list_models, register_model

__all__ = [
    "ConfigError",
    "DataError",
    "InputSizeError",
    "NinlabError",
    "__version__",
    "create_model",
    "list_models",
    "register_model",
]
__version__ = "0.1.0"
