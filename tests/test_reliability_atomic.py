"""``ninlab._runtime.atomic``: a write replaces the file whole or not at all, and failures name the file."""

from __future__ import annotations

import errno
import os

import pytest

from ninlab._runtime.atomic import atomic_open, naming_failures


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "last.ckpt"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_open(target) as file:
        file.write(b"new, half written")
        raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_completed_write_replaces_the_file_with_the_umask_applied(tmp_path):
    target = tmp_path / "summary.json"
    target.write_bytes(b"old")
    with atomic_open(target) as file:
        file.write(b"new")
    assert target.read_bytes() == b"new"
    umask = os.umask(0o022)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0600


def test_failures_name_the_target_not_the_temporary_file(tmp_path):
    target = tmp_path / "model.onnx"
    with pytest.raises(OSError) as raised, naming_failures(target):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as a write on a full disk: no file name
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(target)
