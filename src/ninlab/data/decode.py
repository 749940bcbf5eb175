"""Image files to uint8 pixels: one function for training, prediction and packing, and a parallel decode of many.

Every image goes through :func:`decode_image`, so a file gives the same pixels whether it is trained on, predicted
on or packed into shards. In order:

1. **Orientation**: the EXIF orientation tag (phone photos) is applied, so pixels are upright as viewers show them.
2. **Animation**: animated GIF/WebP/PNG files give their first frame.
3. **Bit depth**: 16-bit greyscale (modes ``I;16``, ``I;16B``, ``I;16L``) and 32-bit integer (``I``, how some
   readers hand out 16-bit data) are scaled from 0..65535 to 0..255 (``round(v * 255 / 65535)``; ``I`` values
   outside 0..65535 are clipped). 16-bit colour and greyscale+alpha PNGs are scaled by Pillow itself. 32-bit float
   images (``F``, from TIFF) have no standard range and are refused.
4. **Transparency** (``RGBA``, ``LA``, ``PA``, palette or greyscale with a transparent colour): composited over
   white, as the image shows on a white page; the colour hidden under transparent pixels is never used.
5. **Channels**: converted to ``L`` (1 channel) or ``RGB`` (3) with Pillow's ``convert`` (``CMYK`` included).
6. **Size**: resized bilinearly to the requested height x width (no aspect-ratio preservation).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from ninlab._runtime.memory import require_memory
from ninlab.errors import ConfigError, DataError

__all__ = [
    "GREY_MODES",
    "IMAGE_SUFFIXES",
    "PARALLEL_MIN",
    "PROGRESS_DELAY",
    "decode_image",
    "decode_images",
    "map_chunks",
    "open_image",
    "probe_image",
    "usable_cores",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
"""Pillow modes counted as one channel when the channel count is chosen from the files."""
_SIXTEEN_BIT = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_SWAPS_SIDES = frozenset({5, 6, 7, 8})  # EXIF orientations that turn the image by 90 degrees
PARALLEL_MIN = 512
"""Fewer images than this are decoded in this process: starting worker processes would cost more than it saves."""

PROGRESS_DELAY = 1.0
"""Seconds a decode runs before its progress bar appears (on a terminal's stderr only): short decodes show none."""

Size = tuple[int, int]


def open_image(path: Path) -> Image.Image:
    """Open ``path`` with Pillow (reading only its header); an empty or unreadable file raises :class:`DataError`."""
    try:
        with warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that, then decodes gigabytes anyway: refuse both.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(path)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        if path.is_file() and path.stat().st_size == 0:  # checked only on failure: no extra stat() per image
            raise DataError(f"{path}: expected an image, found an empty file; delete it or replace it") from error
        raise DataError(f"{path}: expected an image Pillow can read, found {error}; delete or re-export it") from error


def probe_image(path: Path) -> tuple[int, int, int]:
    """``(height, width, channels)`` of ``path`` as :func:`decode_image` would give it at its own size.

    Reads only the header. EXIF orientation is taken into account (a PNG whose EXIF block follows its pixel data
    is probed as stored; it is still decoded upright).
    """
    with open_image(path) as image:
        width, height = image.size
        # Pillow's PNG reader loads all pixels to find a late EXIF block; the header's copy is enough here.
        exif = image.getexif() if image.format != "PNG" else _exif_of(image.info.get("exif"))
        if exif.get(ExifTags.Base.Orientation, 1) in _SWAPS_SIDES:
            width, height = height, width
        return height, width, 1 if image.mode in GREY_MODES else 3


def _exif_of(raw: bytes | None) -> Image.Exif:
    exif = Image.Exif()
    if raw:
        exif.load(raw)
    return exif


def decode_image(path: str | os.PathLike, channels: int, size: Size) -> np.ndarray:
    """Decode one image file into a ``channels x height x width`` uint8 array (see the module docstring).

    Args:
        path: An image file (any format Pillow reads).
        channels: 1 (greyscale) or 3 (RGB).
        size: ``(height, width)`` to resize to.

    Raises:
        DataError: the file is empty, not an image, damaged, or a float image (named in the message).
    """
    path = Path(path)
    height, width = size
    with open_image(path) as image:
        try:
            ImageOps.exif_transpose(image, in_place=True)
            image = _to_mode(image, "L" if channels == 1 else "RGB", path)
            if image.size != (width, height):
                image = image.resize((width, height), Image.Resampling.BILINEAR)
            pixels = np.array(image)  # writable (np.asarray's view of Pillow's bytes is not): torch takes it as is
        except (OSError, ValueError, SyntaxError, KeyError) as error:
            raise DataError(
                f"{path}: expected a decodable image, found {error}; the file is damaged, re-export it"
            ) from error
    return pixels.reshape(height, width, channels).transpose(2, 0, 1)


def _to_mode(image: Image.Image, mode: str, path: Path) -> Image.Image:
    if image.mode == "F":
        raise DataError(f"{path}: expected 8- or 16-bit pixels, found 32-bit floats (mode F), which have no standard "
                        "0-255 range; export the image as an 8- or 16-bit PNG")  # fmt: skip
    if image.mode in _SIXTEEN_BIT:
        values = np.clip(np.asarray(image).astype(np.int64), 0, 65535)
        return Image.fromarray(((values * 255 + 32767) // 65535).astype(np.uint8), "L").convert(mode)
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return image if image.mode == mode else image.convert(mode)


def decode_images(
    files: Sequence[Path], channels: int, size: Size, workers: int | None = None, what: str = "the images"
) -> torch.Tensor:
    """Decode ``files`` with :func:`decode_image` into one uint8 ``N x C x H x W`` tensor, in order.

    Large sets are decoded by worker processes (one per usable core), a chunk of files at a time; the result is
    identical, byte for byte, to decoding them one by one here. A progress bar shows on a terminal's stderr when
    the decode takes more than a second.

    Args:
        files: Image files.
        channels: 1 or 3.
        size: ``(height, width)``.
        workers: Worker processes; ``None`` = one per usable core for sets of at least :data:`PARALLEL_MIN`
            images, 1 = decode in this process.
        what: How the error about memory names the set (its folder).

    Raises:
        ConfigError: ``channels`` is not 1 or 3.
        DataError: a file cannot be decoded, or the decoded set would not fit in the available memory.
    """
    if channels not in (1, 3):
        raise ConfigError(f"channels must be 1 or 3, found {channels}; pass channels=1 (grey) or 3 (RGB)")
    height, width = size
    require_memory(len(files) * channels * height * width, torch.device("cpu"), DataError,
                   f"{what}: decoding {len(files):,} images at {channels}x{height}x{width}",
                   "pass a smaller --data.folder_image_size, or pack the folder into shards (`ninlab pack`) and train "
                   "with --data.dataset shards")  # fmt: skip
    out = np.empty((len(files), channels, height, width), dtype=np.uint8)
    start = 0
    decode_chunk = partial(_decode_chunk, channels=channels, size=size)
    for chunk in map_chunks(decode_chunk, files, workers, "decoding images"):
        out[start : start + len(chunk)] = chunk
        start += len(chunk)
    return torch.from_numpy(out)


def _decode_chunk(paths: Sequence[Path], channels: int, size: Size) -> np.ndarray:
    return np.stack([decode_image(path, channels, size) for path in paths])


def map_chunks(function: Callable[[list[Path]], Sequence], files: Sequence[Path], workers: int | None,
               description: str) -> Iterator[Sequence]:  # fmt: skip
    """Yield ``function(chunk)`` for consecutive chunks of ``files``, in order, in worker processes when worth it.

    ``function`` must be picklable (a module-level function or a ``partial`` of one) and return one item per file.
    """
    workers = usable_cores() if workers is None and len(files) >= PARALLEL_MIN else workers or 1
    workers = max(1, min(workers, len(files)))
    size = max(1, min(256, len(files) // (workers * 8) or 1))
    chunks = [list(files[i : i + size]) for i in range(0, len(files), size)]
    with tqdm(total=len(files), desc=description, unit="img", disable=None, delay=PROGRESS_DELAY) as bar:
        if workers == 1:
            for chunk in chunks:
                yield (result := function(chunk))
                bar.update(len(result))
            return
        # fork starts workers in milliseconds with ninlab already imported; elsewhere (macOS, Windows) spawn.
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method), initializer=_ignore_sigint)
        try:
            for result in pool.map(function, chunks):
                yield result
                bar.update(len(result))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)  # an error or Ctrl-C stops the chunks not yet started


def _ignore_sigint() -> None:
    # Ctrl-C reaches every process of the terminal's group: the main process alone reports it, once.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, which containers and ``taskset`` narrow)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
