"""The image-folder reader: how each kind of file decodes, what a folder may hold, and the layouts users have."""

from __future__ import annotations

import io
import os
import re
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ninlab.data import decode as decode_module
from ninlab.data import load_dataset, load_images
from ninlab.data.decode import decode_image, decode_images, probe_image
from ninlab.data.folder import find_splits, list_images
from ninlab.errors import DataError, DataNotFoundError


def save(path: Path, image: Image.Image, **params) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **params)
    return path


def png16(array: np.ndarray, color_type: int) -> bytes:
    """A 16-bit PNG written by hand (Pillow writes 16-bit greyscale only): colour type 4 = grey+alpha, 2 = RGB."""
    height, width = array.shape[:2]
    rows = b"".join(b"\0" + array[i].astype(">u2").tobytes() for i in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


# --- how each kind of file decodes ---


def test_16_bit_grey_png_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257, 32896, 65535]], dtype=np.uint16).repeat(4, 0)
    path = save(tmp_path / "g.png", Image.fromarray(values))
    assert Image.open(path).mode == "I;16"
    pixels = decode_image(path, 1, (4, 4))
    assert pixels.shape == (1, 4, 4) and pixels[0, 0].tolist() == [0, 1, 128, 255]
    ramp = save(tmp_path / "ramp.png", Image.fromarray((np.arange(4096).reshape(64, 64) * 16).astype(np.uint16)))
    assert (decode_image(ramp, 1, (64, 64)) == 255).mean() < 0.01  # Pillow's convert("L") makes 99.6% of it 255


def test_images_for_prediction_become_tensors_without_a_warning(tmp_path):
    """``ninlab predict-images`` and ``explain`` turn each decoded image into a tensor as it is: a read-only array
    (NumPy's view of Pillow's bytes) made PyTorch warn on every run that writing to the tensor was undefined."""
    from ninlab.data.images import load_images_unresized

    path = save(tmp_path / "shirt.jpg", Image.new("RGB", (5, 7), (10, 20, 30)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (image,), files = load_images_unresized([path], 3)
    assert image.shape == (1, 3, 7, 5) and files == [path] and decode_image(path, 1, (7, 5)).flags.writeable


@pytest.mark.parametrize("mode", ["I;16B", "I"])
def test_16_bit_tiff_modes_are_scaled(tmp_path, mode):
    path = tmp_path / f"{mode}.tif"
    Image.new(mode, (3, 2), 65535 if mode == "I;16B" else 70000).save(path)  # I: clipped to 16 bits, then scaled
    assert Image.open(path).mode == mode
    assert decode_image(path, 3, (2, 3)).tolist() == np.full((3, 2, 3), 255).tolist()
    Image.new(mode, (3, 2), 32896).save(path)
    assert set(decode_image(path, 1, (2, 3)).ravel().tolist()) == {128}


def test_float_images_are_refused(tmp_path):
    path = save(tmp_path / "f.tif", Image.new("F", (4, 4), 0.5))
    with pytest.raises(DataError, match=r"f\.tif: expected 8- or 16-bit pixels, found 32-bit floats"):
        decode_image(path, 1, (4, 4))


def test_16_bit_grey_alpha_and_rgb_pngs(tmp_path):
    grey_alpha = np.zeros((2, 2, 2), np.uint16)
    grey_alpha[..., 0], grey_alpha[0, 0, 1], grey_alpha[1, 1, 1] = 40000, 65535, 65535  # two opaque, two clear
    (tmp_path / "la.png").write_bytes(png16(grey_alpha, 4))
    assert decode_image(tmp_path / "la.png", 1, (2, 2))[0].tolist() == [[156, 255], [255, 156]]  # 40000/257, white
    (tmp_path / "rgb.png").write_bytes(png16(np.full((2, 2, 3), 40000, np.uint16), 2))
    assert set(decode_image(tmp_path / "rgb.png", 3, (2, 2)).ravel().tolist()) == {156}


def test_transparency_is_composited_over_white(tmp_path):
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (10, 20, 30, 255)  # opaque; the others are clear black (hidden colour 0)
    rgba[0, 1] = (0, 0, 0, 128)  # half transparent black over white
    path = save(tmp_path / "a.png", Image.fromarray(rgba, "RGBA"))
    pixels = decode_image(path, 3, (2, 2))
    assert pixels[:, 0, 0].tolist() == [10, 20, 30] and pixels[:, 1, 1].tolist() == [255, 255, 255]
    assert pixels[:, 0, 1].tolist() == [127, 127, 127]
    palette = Image.new("P", (2, 1), 0)
    palette.putpalette([0, 0, 0, 200, 0, 0] + [0] * 762)
    palette.putpixel((1, 0), 1)
    path = save(tmp_path / "p.png", palette, transparency=0)  # index 0 (black) is transparent
    assert decode_image(path, 3, (1, 2))[:, 0].T.tolist() == [[255, 255, 255], [200, 0, 0]]


def test_cmyk_jpeg_decodes_to_rgb(tmp_path):
    path = save(tmp_path / "c.jpg", Image.new("CMYK", (8, 8), (0, 255, 255, 0)), quality=95)  # pure red in CMYK
    red, green, blue = decode_image(path, 3, (8, 8)).reshape(3, -1).mean(1)
    assert red > 240 and green < 15 and blue < 15


def test_exif_orientation_is_applied_in_training_and_prediction(tmp_path):
    stored = np.zeros((10, 20, 3), np.uint8)  # stored 20 wide, 10 high; the phone says "rotate 90 degrees"
    stored[0, 0] = 255  # top-left as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation 6: the viewer turns it 90 degrees clockwise
    for cls in ("a", "b"):
        save(tmp_path / cls / "photo.png", Image.fromarray(stored), exif=exif)
        save(tmp_path / cls / "plain.png", Image.new("RGB", (10, 20)))
    assert probe_image(tmp_path / "a" / "photo.png") == (20, 10, 3)
    upright = decode_image(tmp_path / "a" / "photo.png", 3, (20, 10))
    assert upright.shape == (3, 20, 10) and upright[0, 0, -1] == 255  # top-left went to top-right
    trained = load_dataset("folder", root=tmp_path)
    assert trained.images.shape == (4, 3, 20, 10)
    predicted, files = load_images([tmp_path / "a"], (20, 10), 3)
    assert files[0].name == "photo.png"
    assert torch.equal(predicted[0], trained.images[0]) and torch.equal(predicted[0], torch.from_numpy(upright.copy()))


def test_animated_gif_gives_its_first_frame(tmp_path):
    frames = [Image.new("L", (4, 4), value) for value in (10, 200, 90)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert Image.open(path).n_frames == 3
    assert set(decode_image(path, 1, (4, 4)).ravel().tolist()) == {10}


def test_mixed_channel_counts_follow_the_majority(tmp_path):
    save(tmp_path / "a" / "grey.png", Image.new("L", (6, 6), 77))
    save(tmp_path / "a" / "rgb.png", Image.new("RGB", (6, 6), (1, 2, 3)))
    save(tmp_path / "b" / "rgb.jpg", Image.new("RGB", (6, 6), (200, 0, 0)))
    save(tmp_path / "b" / "rgba.png", Image.new("RGBA", (6, 6), (0, 0, 250, 255)))
    loaded = load_dataset("folder", root=tmp_path)
    assert loaded.images.shape == (4, 3, 6, 6)
    assert loaded.images[0].reshape(3, -1).unique(dim=1).tolist() == [[77], [77], [77]]  # grey copied to RGB


def test_parallel_decode_is_identical_to_serial(tmp_path):
    rng = np.random.default_rng(0)
    files = []
    for i in range(60):
        mode = ("L", "RGB", "RGBA", "P")[i % 4]
        array = rng.integers(0, 256, (9 + i % 5, 11, 4 if mode == "RGBA" else 3), dtype=np.uint8)
        image = Image.fromarray(array[..., :4] if mode == "RGBA" else array[..., :3]).convert(mode)
        files.append(save(tmp_path / f"{i:03d}.{'jpg' if mode in ('L', 'RGB') else 'png'}", image))
    serial = decode_images(files, 3, (10, 10), workers=1)
    parallel = decode_images(files, 3, (10, 10), workers=2)
    assert parallel.shape == (60, 3, 10, 10) and torch.equal(serial, parallel)


def test_a_bad_file_in_a_worker_is_one_data_error(tmp_path):
    files = [save(tmp_path / f"{i}.png", Image.new("L", (4, 4))) for i in range(20)]
    files[13].write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match=r"13\.png: expected an image Pillow can read"):
        decode_images(files, 1, (4, 4), workers=2)


def test_many_tiny_files_take_the_parallel_path(tmp_path, monkeypatch):
    for i in range(decode_module.PARALLEL_MIN + 88):
        save(tmp_path / ("a" if i % 2 else "b") / f"{i:05d}.png", Image.new("L", (2, 2), i % 256))
    pools = []
    monkeypatch.setattr(decode_module, "usable_cores", lambda: 2)  # two workers even on a one-core runner
    real_pool = decode_module.ProcessPoolExecutor
    monkeypatch.setattr(decode_module, "ProcessPoolExecutor", lambda *a, **k: pools.append(a) or real_pool(*a, **k))
    loaded = load_dataset("folder", root=tmp_path)
    assert pools == [(2,), (2,)]  # the size pass and the decode
    files, _, _ = list_images(tmp_path)
    assert loaded.images.shape == (600, 1, 2, 2) and torch.equal(loaded.images, decode_images(files, 1, (2, 2), 1))
    assert loaded.images[:3, 0, 0, 0].tolist() == [1, 3, 5]  # class a first, files in sorted order


@pytest.mark.parametrize(("terminal", "delay", "shown"), [(True, 0.0, True), (True, 60.0, False), (False, 0.0, False)])
def test_progress_bar_only_on_a_terminal_and_only_when_long(tmp_path, monkeypatch, terminal, delay, shown):
    files = [save(tmp_path / f"{i}.png", Image.new("L", (2, 2))) for i in range(8)]

    class Stderr(io.StringIO):
        def isatty(self) -> bool:
            return terminal

    monkeypatch.setattr("sys.stderr", stderr := Stderr())
    monkeypatch.setattr(decode_module, "PROGRESS_DELAY", delay)
    decode_images(files, 1, (2, 2))
    assert ("decoding images: 100%" in stderr.getvalue()) == shown


def test_decode_that_cannot_fit_in_memory_is_refused(tmp_path, monkeypatch, isolated_cache):
    for cls in ("a", "b"):
        save(tmp_path / cls / "x.png", Image.new("L", (4, 4)))
    monkeypatch.setattr("ninlab._runtime.memory.available_memory", lambda: 10_000)
    with pytest.raises(DataError) as error:
        load_dataset("folder", root=tmp_path, image_size=100)  # 2 x 1 x 100 x 100 = 20 kB
    assert "needs 20 kB of memory, 10 kB of cpu memory is available" in str(error.value)
    assert "ninlab pack" in str(error.value) and "--data.dataset shards" in str(error.value)
    assert not list(isolated_cache.rglob("*.pt"))


# --- what a folder may hold ---


def test_hidden_and_system_files_are_skipped(tmp_path):
    for cls in ("a", "b"):
        save(tmp_path / cls / "1.png", Image.new("L", (4, 4)))
        (tmp_path / cls / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
        (tmp_path / cls / "._1.png").write_bytes(b"\0\5\26\7 resource fork")
        (tmp_path / cls / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (tmp_path / "__MACOSX" / "a").mkdir(parents=True)
    (tmp_path / ".git").mkdir()
    files, labels, classes = list_images(tmp_path)
    assert classes == ["a", "b"] and labels == [0, 1] and [f.name for f in files] == ["1.png", "1.png"]


@pytest.mark.parametrize(
    ("contents", "says"),
    [((), "found nothing"), ((".DS_Store", "._x.png"), "found only skipped files (.DS_Store, ._x.png)")],
)
def test_a_class_folder_without_images_is_refused(tmp_path, contents, says):
    save(tmp_path / "a" / "1.png", Image.new("L", (4, 4)))
    (tmp_path / "b").mkdir()
    for name in contents:
        (tmp_path / "b" / name).write_bytes(b"x")
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'b'}: expected images in every class folder, {says}")):
        list_images(tmp_path)


def test_a_single_class_is_refused(tmp_path):
    save(tmp_path / "dataset" / "cat" / "1.png", Image.new("L", (4, 4)))
    with pytest.raises(DataError, match=r"expected at least 2 class folders, found 1 \(dataset\)"):
        load_dataset("folder", root=tmp_path)


def test_non_utf8_class_folder_is_kept_with_an_escaped_name(tmp_path):
    root = os.fsencode(tmp_path)
    for name in (b"caf\xe9", b"tea"):
        os.makedirs(os.path.join(root, name))
        Image.new("L", (4, 4)).save(os.fsdecode(os.path.join(root, name, b"1.png")))
    assert list_images(tmp_path)[2] == ["caf\\xe9", "tea"]


def test_symlink_loop_is_one_short_error(tmp_path):
    save(tmp_path / "a" / "1.png", Image.new("L", (4, 4)))
    save(tmp_path / "b" / "1.png", Image.new("L", (4, 4)))
    (tmp_path / "a" / "up").symlink_to("..")
    with pytest.raises(DataError) as error:
        list_images(tmp_path)
    assert str(error.value) == f"{tmp_path / 'a' / 'up'}: expected a folder of images, found a link back to " \
        f"{tmp_path} (a loop); remove the link"  # fmt: skip


def test_root_that_is_a_file_is_refused_instead_of_searching_elsewhere(tmp_path):
    (tmp_path / "file").write_bytes(b"x")
    for name in ("fashion-mnist", "cifar10", "folder"):
        with pytest.raises(DataNotFoundError, match=r"file: expected a .*, found a file"):
            load_dataset(name, root=tmp_path / "file")
    with pytest.raises(DataNotFoundError, match=r"missing: expected a .*, found nothing"):
        load_dataset("fashion-mnist", root=tmp_path / "missing")


# --- layouts ---


def make_split(folder: Path, classes=("cat", "dog"), n=2, value=0) -> Path:
    for c, name in enumerate(classes):
        for i in range(n):
            save(folder / name / f"{i}.png", Image.new("L", (5, 5), value + 10 * c + i))
    return folder


@pytest.mark.parametrize(
    "layout",
    [(), ("train",), ("train", "test"), ("train", "val"), ("train", "valid", "test"), ("train", "validation")],
)
def test_layouts(tmp_path, layout):
    if not layout:
        make_split(tmp_path)
    for split in layout:
        make_split(tmp_path / split)
    splits = find_splits(tmp_path)
    expected = {"train": tmp_path / "train" if layout else tmp_path}
    expected.update(("val", tmp_path / s) for s in layout if s.startswith("val"))
    expected.update({"test": tmp_path / "test"} if "test" in layout else {})
    assert splits == expected
    for split in splits:
        assert load_dataset("folder", split, root=tmp_path).classes == ["cat", "dog"]


def test_a_class_named_train_is_a_class(tmp_path):
    make_split(tmp_path, classes=("bus", "train"))
    assert find_splits(tmp_path) == {"train": tmp_path}


@pytest.mark.parametrize(
    ("extra", "says"),
    [(("notes",), "found also notes/"), (("val", "valid"), "found also val/ and valid/")],
)
def test_ambiguous_layouts_are_refused(tmp_path, extra, says):
    make_split(tmp_path / "train")
    for name in extra:
        make_split(tmp_path / name)
    with pytest.raises(DataError, match=says):
        find_splits(tmp_path)


def test_test_labels_follow_the_training_class_names(tmp_path):
    make_split(tmp_path / "train", classes=("ant", "bee", "cat"))
    make_split(tmp_path / "test", classes=("bee", "cat"), value=100)  # no ant: bee must stay label 1
    test = load_dataset("folder", "test", root=tmp_path)
    assert test.classes == ["ant", "bee", "cat"] and test.labels.tolist() == [1, 1, 2, 2]


@pytest.mark.parametrize(
    ("test_classes", "says"), [(("a", "b", "c", "d"), "found also d;"), (("a", "b", "z"), "found also z and lacks c;")]
)
def test_test_classes_that_train_lacks_are_refused(tmp_path, test_classes, says):
    make_split(tmp_path / "train", classes=("a", "b", "c"))
    make_split(tmp_path / "test", classes=test_classes)
    with pytest.raises(DataError, match=re.escape(f"expected the classes of {tmp_path / 'train'}, {says}")):
        load_dataset("folder", "train", root=tmp_path)  # refused when training starts, not after


def test_every_split_gets_the_training_size_and_channels(tmp_path):
    make_split(tmp_path / "train")
    for name in ("cat", "dog"):  # test images are larger and in colour
        save(tmp_path / "test" / name / "x.png", Image.new("RGB", (9, 7), (5, 5, 5)))
    assert load_dataset("folder", "test", root=tmp_path).images.shape == (2, 1, 5, 5)
