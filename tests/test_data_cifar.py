"""CIFAR-10/100 readers on archives and folders written in the official format, and hostile inputs."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from conftest import cifar_members, write_archive
from ninlab.data import load_dataset
from ninlab.data.cifar import CIFAR10, CIFAR100, read_cifar
from ninlab.errors import DataError


def write_folder(root, spec, members=None):
    folder = root / spec.folder
    folder.mkdir(parents=True)
    for name, data in (members or cifar_members(spec)).items():
        (folder / name).write_bytes(data)
    return folder


@pytest.mark.parametrize("spec", [CIFAR10, CIFAR100])
@pytest.mark.parametrize("layout", ["archive", "folder"])
def test_reads_archive_and_extracted_folder(tmp_path, spec, layout):
    members = cifar_members(spec)
    if layout == "archive":
        write_archive(tmp_path / spec.archive, spec.folder, members)
    else:
        write_folder(tmp_path, spec, members)
    train = load_dataset(spec.name, "train", root=tmp_path)
    test = load_dataset(spec.name, "test", root=tmp_path)
    assert train.images.dtype == torch.uint8 and train.images.shape[1:] == (3, 32, 32)
    assert len(train) == (20 if spec is CIFAR10 else 6) and len(test) == (3 if spec is CIFAR10 else 2)
    assert train.num_classes == (10 if spec is CIFAR10 else 100) and train.classes[1] in ("c1", "f1")
    assert train.checksum == "mismatch"  # test archives are not the official bytes
    first = pickle.loads(members[spec.members["train"][0]])
    assert torch.equal(train.images[0].flatten(), torch.from_numpy(first[b"data"][0]))
    assert train.labels[0].item() == first[spec.label_key.encode()][0]


class Exploit:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return os.system, (f"touch {self.target}",)


def test_code_execution_payload_is_refused_and_never_runs(tmp_path):
    target = tmp_path / "pwned"
    members = cifar_members(CIFAR10)
    members["data_batch_1"] = pickle.dumps({b"data": Exploit(target), b"labels": []}, protocol=3)
    write_archive(tmp_path / CIFAR10.archive, CIFAR10.folder, members)
    with pytest.raises(DataError, match=r"system.*tampered"):
        load_dataset("cifar10", "train", root=tmp_path)
    assert not target.exists()


def test_strict_checksum_refuses_before_unpickling(tmp_path):
    target = tmp_path / "pwned"
    members = cifar_members(CIFAR10)
    members["data_batch_1"] = pickle.dumps(Exploit(target), protocol=3)
    folder = write_folder(tmp_path, CIFAR10, members)
    with pytest.raises(DataError, match="official cifar10 member"):
        read_cifar(CIFAR10, "train", folder, strict=True)
    assert not target.exists()


@pytest.mark.parametrize("member", ["../evil", "/tmp/evil", "cifar-10-batches-py/../../evil"])
def test_archive_with_unsafe_member_paths_is_refused(tmp_path, member):
    write_archive(tmp_path / CIFAR10.archive, CIFAR10.folder, cifar_members(CIFAR10), extra=[(member, b"x")])
    with pytest.raises(DataError, match="unsafe member"):
        load_dataset("cifar10", "train", root=tmp_path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.pop("data_batch_3"), "data_batch_3"),
        (lambda m: m.update(data_batch_2=b"not a pickle"), "data_batch_2"),
        (lambda m: m.update(test_batch=pickle.dumps([1, 2], protocol=3)), "expected a dict"),
        (
            lambda m: m.update(data_batch_1=pickle.dumps({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]})),
            "N x 3072",
        ),
        (
            lambda m: m.update(data_batch_1=pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]})),
            "expected 2 labels",
        ),
    ],
)
def test_malformed_batches_raise(tmp_path, isolated_cache, change, message):
    members = cifar_members(CIFAR10)
    change(members)
    write_archive(tmp_path / CIFAR10.archive, CIFAR10.folder, members)
    split = "test" if "expected a dict" in message else "train"
    with pytest.raises(DataError, match=message):
        load_dataset("cifar10", split, root=tmp_path)
    assert not list(isolated_cache.rglob("*.pt"))


def test_damaged_archive_raises(tmp_path):
    (tmp_path / CIFAR100.archive).write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(DataError, match=CIFAR100.archive):
        load_dataset("cifar100", "train", root=tmp_path)
