"""Tests of modeconn.data: building, saving and loading datasets, all offline."""

from __future__ import annotations

import gzip
import os
import random
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch

from modeconn.config import DataConfig
from modeconn.data import (
    DATASETS,
    Dataset,
    DatasetFileError,
    RawData,
    build_dataset,
    load_dataset,
    save_dataset,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MNIST1D = DataConfig(name="mnist1d", num_samples=500, seed=3)


def _needs(folder: str):
    return pytest.mark.skipif(
        not (SHARED / folder / "raw").is_dir(),
        reason=f"shared raw data {SHARED / folder / 'raw'} absent (expected ../shared/data beside the repo)",
    )


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.lstat().st_size, p.lstat().st_mtime_ns)
            for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="module")
def m1d() -> RawData:
    return build_dataset(MNIST1D)


# ----------------------------------------------------------------------------- mnist1d


def test_mnist1d_shapes_and_split(m1d):
    assert m1d.x_train.shape == (400, 1, 40) and m1d.x_test.shape == (100, 1, 40)
    assert m1d.x_train.dtype == torch.float32 and m1d.scale == 1.0
    assert m1d.y_train.dtype == torch.int64 and m1d.y_train.shape == (400,)
    assert m1d.num_classes == 10
    assert set(torch.cat([m1d.y_train, m1d.y_test]).tolist()) == set(range(10))
    assert {"name": "mnist1d", "num_samples": 500, "seed": 3}.items() <= m1d.source.items()


def test_mnist1d_deterministic_per_seed_and_no_global_rng_effect(m1d):
    np.random.seed(123)
    random.seed(123)
    np_before, py_before = np.random.get_state(), random.getstate()
    again = build_dataset(MNIST1D)
    np_after = np.random.get_state()
    assert np_after[0] == np_before[0] and np.array_equal(np_after[1], np_before[1])
    assert np_after[2:] == np_before[2:]
    assert random.getstate() == py_before
    for k in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(again, k), getattr(m1d, k))
    other = build_dataset(replace(MNIST1D, seed=4))
    assert not torch.equal(other.x_train, m1d.x_train)


def test_mnist1d_round_trip(m1d, tmp_path):
    path = tmp_path / "d" / "mnist1d.safetensors"
    save_dataset(m1d, path)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left
    data = load_dataset(path)
    expected = m1d.normalise()
    assert isinstance(data, Dataset) and data.name == "mnist1d" and data.num_classes == 10
    assert data.input_shape == (1, 40)
    for k in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(data, k), getattr(expected, k))
    assert data.x_train.dtype == data.x_test.dtype == torch.float32
    assert data.y_train.dtype == torch.int64
    assert abs(data.x_train.mean().item()) < 1e-5
    assert abs(data.x_train.std(unbiased=False).item() - 1) < 1e-4
    moved = data.to("cpu")
    assert moved.input_shape == data.input_shape and moved.x_train.device.type == "cpu"


def test_same_data_gives_byte_identical_file(m1d, tmp_path):
    save_dataset(m1d, tmp_path / "a.safetensors")
    save_dataset(build_dataset(MNIST1D), tmp_path / "b.safetensors")
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()


# ----------------------------------------------------------------------------- file errors


def test_load_missing_file(tmp_path):
    path = tmp_path / "absent.safetensors"
    with pytest.raises(FileNotFoundError, match="absent.safetensors"):
        load_dataset(path)


def test_load_truncated_file(m1d, tmp_path):
    path = tmp_path / "cut.safetensors"
    save_dataset(m1d, path)
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DatasetFileError, match=r"cut\.safetensors.*truncated"):
        load_dataset(path)


def test_flipped_data_byte_is_refused_naming_the_file(m1d, tmp_path):
    """One flipped byte in the tensor data (past the header) fails the content digest."""
    path = tmp_path / "flip.safetensors"
    save_dataset(m1d, path)
    load_dataset(path)  # intact: loads
    blob = bytearray(path.read_bytes())
    blob[-100] ^= 0x01
    path.write_bytes(bytes(blob))
    with pytest.raises(DatasetFileError, match=r"flip\.safetensors: content digest mismatch"):
        load_dataset(path)


def test_edited_metadata_is_refused(m1d, tmp_path):
    """Editing the JSON header (here the class count, same length) fails the digest too."""
    path = tmp_path / "edit.safetensors"
    save_dataset(m1d, path)
    blob = path.read_bytes()
    assert blob.count(b'\\"num_classes\\": 10') == 1
    path.write_bytes(blob.replace(b'\\"num_classes\\": 10', b'\\"num_classes\\": 11'))
    with pytest.raises(DatasetFileError, match=r"edit\.safetensors: content digest mismatch"):
        load_dataset(path)


def test_written_files_get_the_usual_mode(m1d, tmp_path):
    """Not the 0600 of a temporary file: 0666 minus the umask (0644 under umask 022)."""
    import os

    old = os.umask(0o022)
    try:
        save_dataset(m1d, tmp_path / "mode.safetensors")
    finally:
        os.umask(old)
    assert (tmp_path / "mode.safetensors").stat().st_mode & 0o777 == 0o644


def test_load_unrelated_safetensors_file(tmp_path):
    path = tmp_path / "weights.safetensors"
    safetensors.torch.save_file({"w": torch.zeros(3)}, str(path), metadata={"x": "y"})
    with pytest.raises(DatasetFileError, match=r"weights\.safetensors.*not a modeconn dataset"):
        load_dataset(path)


# ----------------------------------------------------------------------------- registry / missing data


def test_unknown_dataset_name():
    with pytest.raises(ValueError, match="svhn") as err:
        build_dataset(DataConfig(name="svhn"))
    for key in DATASETS:
        assert key in str(err.value)


@pytest.mark.parametrize("name, expected", [
    ("mnist", "MNIST/raw/train-images-idx3-ubyte[.gz]"),
    ("fashion_mnist", "FashionMNIST/raw/t10k-labels-idx1-ubyte[.gz]"),
    ("cifar10", "cifar-10-python.tar.gz"),
    ("cifar100", "cifar-100-python"),
])
def test_offline_empty_root_names_expected_files(tmp_path, name, expected):
    root = tmp_path / "empty"
    root.mkdir()
    with pytest.raises(FileNotFoundError) as err:
        build_dataset(DataConfig(name=name, root=str(root), download=False))
    msg = str(err.value)
    assert str(root / expected) in msg and "data.download: true" in msg and "data.root" in msg
    assert list(root.iterdir()) == []


def test_corrupt_archive_is_reported(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    with gzip.open(raw / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write(b"not mnist")
    with pytest.raises(FileNotFoundError, match=r"corrupt: .*train-images-idx3-ubyte\.gz"):
        build_dataset(DataConfig(name="mnist", root=str(tmp_path)))


# ----------------------------------------------------------------------------- shared MNIST / Fashion-MNIST

MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


@pytest.fixture(scope="module")
def shared_images(tmp_path_factory):
    """Build MNIST and Fashion-MNIST from the read-only shared root; record what changed there."""
    if not SHARED.is_dir():
        pytest.skip(f"shared raw data {SHARED} absent (expected ../shared/data beside the repo)")
    scratch = tmp_path_factory.mktemp("scratch")
    before = _snapshot(SHARED)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tempfile, "tempdir", str(scratch))  # where staging folders go
        built = {name: build_dataset(DataConfig(name=name, root=str(SHARED)))
                 for name, folder in (("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST"))
                 if (SHARED / folder / "raw").is_dir()}
    return built, before, _snapshot(SHARED), scratch


@_needs("MNIST")
def test_mnist_from_shared_root(shared_images):
    data = shared_images[0]["mnist"]
    assert data.x_train.shape == (60000, 1, 28, 28) and data.x_test.shape == (10000, 1, 28, 28)
    assert data.x_train.dtype == torch.uint8 and data.y_train.dtype == torch.int64
    assert data.y_test.bincount(minlength=10).tolist() == MNIST_TEST_COUNTS
    assert data.y_train.bincount(minlength=10).tolist() == MNIST_TRAIN_COUNTS
    assert data.mean[0] == pytest.approx(0.1307, abs=1e-4)


@_needs("FashionMNIST")
def test_fashion_mnist_from_shared_root(shared_images):
    data = shared_images[0]["fashion_mnist"]
    assert data.x_train.shape == (60000, 1, 28, 28) and data.x_test.shape == (10000, 1, 28, 28)
    assert data.y_train.bincount(minlength=10).tolist() == [6000] * 10
    assert data.y_test.bincount(minlength=10).tolist() == [1000] * 10
    assert data.mean[0] == pytest.approx(0.2860, abs=1e-4)


def test_shared_root_unchanged_and_staging_cleaned(shared_images):
    _, before, after, scratch = shared_images
    assert after == before
    assert list(scratch.iterdir()) == []


@_needs("MNIST")
def test_mnist_round_trip(shared_images, tmp_path):
    raw = shared_images[0]["mnist"]
    path = tmp_path / "mnist.safetensors"
    save_dataset(raw, path)
    assert path.stat().st_size < 60_000_000  # uint8 on disk
    data = load_dataset(path)
    assert data.input_shape == (1, 28, 28) and data.num_classes == 10
    assert data.x_train.dtype == torch.float32
    assert torch.equal(data.y_test, raw.y_test)
    assert abs(data.x_train.mean().item()) < 1e-4
    assert abs(data.x_train.std().item() - 1) < 1e-3
    assert torch.equal(data.x_test, raw.normalise().x_test)


@_needs("MNIST")
def test_mixed_root_extracts_into_staging_only(tmp_path):
    """Labels already uncompressed, images only as .gz: the root itself is not written to."""
    src = SHARED / "MNIST" / "raw"
    raw = tmp_path / "root" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte"):
        with gzip.open(src / f"{name}.gz") as f:
            (raw / name).write_bytes(f.read())
    for name in ("train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz"):
        os.symlink(src / name, raw / name)
    before = _snapshot(tmp_path / "root")
    data = build_dataset(DataConfig(name="mnist", root=str(tmp_path / "root")))
    assert data.y_test.bincount(minlength=10).tolist() == MNIST_TEST_COUNTS
    assert data.x_test.shape == (10000, 1, 28, 28)
    assert _snapshot(tmp_path / "root") == before
    shutil.rmtree(tmp_path / "root")
