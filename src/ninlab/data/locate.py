"""Where ninlab looks for dataset files: an explicit root, the cache directory, then system-wide installs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from ninlab.errors import DataNotFoundError

__all__ = ["CACHE_ENV", "SYSTEM_DIRS", "Place", "cache_dir", "candidate_dirs", "not_found"]

CACHE_ENV = "NINLAB_DATA"
# Debian's dataset-* packages (e.g. dataset-fashion-mnist) install under /usr/share/datasets/<name>/.
SYSTEM_DIRS = (Path("/usr/share/datasets"),)


@dataclass(frozen=True)
class Place:
    """A directory to look in, and where it came from: ``"root"``, ``"cache"`` or ``"system"``."""

    path: Path
    origin: str


def cache_dir() -> Path:
    """The directory for downloads and decoded tensors: ``$NINLAB_DATA``, else the user cache dir for ninlab."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path(platformdirs.user_cache_dir("ninlab"))


def candidate_dirs(subdir: str, root: str | os.PathLike | None) -> list[Place]:
    """Directories to search, in order: ``root``, the cache dir, system dirs; each as is and with ``subdir`` added.

    Raises:
        DataNotFoundError: ``root`` is given but is no directory (a file, a typo): searching on would silently use
            another copy of the dataset than the one the user pointed at.
    """
    bases = []
    if root is not None:
        path = Path(root).expanduser()
        if not path.is_dir():
            found = "a file" if path.exists() else "nothing"
            raise DataNotFoundError(f"{path}: expected a directory holding the dataset files (--data.root, root=), "
                                    f"found {found}; pass the directory that holds them")  # fmt: skip
        bases.append(Place(path, "root"))
    bases.append(Place(cache_dir(), "cache"))
    bases.extend(Place(path, "system") for path in SYSTEM_DIRS)
    return [Place(path, base.origin) for base in bases for path in (base.path, base.path / subdir)]


def not_found(name: str, wanted: str, subdir: str, root: str | os.PathLike | None) -> DataNotFoundError:
    """The one error for a dataset found nowhere, naming the three ways to provide it."""
    looked = ", ".join(str(place.path) for place in candidate_dirs(subdir, root))
    debian = " or install Debian's dataset-fashion-mnist" if name == "fashion-mnist" else ""
    return DataNotFoundError(
        f"{name}: expected {wanted}, found none in {looked}; pass --data.root DIR (root=DIR) holding them, "
        f"put them in {cache_dir() / subdir}{debian}, or use download=True (--data.download true)"
    )
