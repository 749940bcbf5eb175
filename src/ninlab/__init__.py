"""ninlab: Network-in-Network image classifiers on PyTorch Lightning."""

from ninlab.errors import ConfigError, DataError, InputSizeError, NinlabError
from ninlab.models.class_maps import class_maps
from ninlab.models.registry import create_model, list_models, register_model

__all__ = [
    "ConfigError",
    "DataError",
    "InputSizeError",
    "NinlabError",
    "__version__",
    "class_maps",
    "create_model",
    "list_models",
    "register_model",
]
__version__ = "0.1.0"
