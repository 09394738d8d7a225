"""Datasets: build from the source once, store as one .safetensors file, load normalised tensors.

`build_dataset(cfg)` produces a `RawData` (images as uint8, MNIST-1D as float32) from its source;
`save_dataset` writes it atomically with its metadata; `load_dataset` reads it back as a
`Dataset` of normalised float32 tensors, (x / scale - mean) / std with per-channel mean and std
of the training split. Shapes of x: mnist1d [N, 1, 40]; mnist, fashion_mnist [N, 1, 28, 28];
cifar10, cifar100 [N, 3, 32, 32]. Labels are int64 [N].

Sources:
- mnist1d: generated offline by the `mnist1d` package (S. Greydanus, "Scaling down deep learning",
  arXiv:2011.14439, 2020); 80% train, 20% test.
- mnist (LeCun et al. 1998), fashion_mnist (Xiao et al. 2017), cifar10 / cifar100 (Krizhevsky
  2009): read through torchvision from `cfg.root`. Present archives (.gz, .tar.gz) are checked
  against torchvision's md5 and extracted into a temporary folder, so `cfg.root` is never written
  to unless files are missing and `cfg.download` is set.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import safetensors
import safetensors.torch
import torch

from modeconn.config import DataConfig
from modeconn.io import atomic_path

FORMAT = "modeconn.dataset"
# 2: the metadata carries "sha256", a digest of the tensors and the rest of the metadata
FORMAT_VERSION = 2
METADATA_KEY = "modeconn"  # the one safetensors metadata entry: a JSON object (see save_dataset)
_SPLITS = ("x_train", "y_train", "x_test", "y_test")


class DatasetFileError(ValueError):
    """A dataset file that is truncated, corrupt or not written by `save_dataset`."""


# ----------------------------------------------------------------------------- containers


@dataclass(frozen=True, eq=False)
class Dataset:
    """Normalised tensors ready for training: x float32 [N, *input_shape], y int64 [N]."""

    name: str
    x_train: torch.Tensor = field(repr=False)
    y_train: torch.Tensor = field(repr=False)
    x_test: torch.Tensor = field(repr=False)
    y_test: torch.Tensor = field(repr=False)
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example, e.g. (1, 40) for mnist1d or (3, 32, 32) for CIFAR."""
        return tuple(self.x_train.shape[1:])

    def to(self, device: torch.device | str) -> "Dataset":
        """A copy with all four tensors on `device`."""
        return dataclasses.replace(self, **{k: getattr(self, k).to(device) for k in _SPLITS})


@dataclass(frozen=True, eq=False)
class RawData:
    """Data as stored on disk: x uint8 (scale 255) or float32 (scale 1), y int64.

    `mean` / `std` are per channel (dim 1) of x_train / scale; `source` holds the settings that
    determine the content (no paths), recorded in the file's metadata.
    """

    name: str
    x_train: torch.Tensor = field(repr=False)
    y_train: torch.Tensor = field(repr=False)
    x_test: torch.Tensor = field(repr=False)
    y_test: torch.Tensor = field(repr=False)
    num_classes: int
    scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        x, y, xt, yt = (getattr(self, k) for k in _SPLITS)
        if x.dtype not in (torch.uint8, torch.float32) or xt.dtype != x.dtype:
            raise ValueError(f"x must be uint8 or float32 in both splits, got {x.dtype}, {xt.dtype}")
        if y.dtype != torch.int64 or yt.dtype != torch.int64:
            raise ValueError(f"labels must be int64, got {y.dtype}, {yt.dtype}")
        if x.ndim < 2 or x.shape[1:] != xt.shape[1:]:
            raise ValueError(f"x_train {tuple(x.shape)} and x_test {tuple(xt.shape)} disagree")
        if y.shape != (len(x),) or yt.shape != (len(xt),):
            raise ValueError("each split needs exactly one label per example")
        for labels in (y, yt):
            if len(labels) and (labels.min() < 0 or labels.max() >= self.num_classes):
                raise ValueError(f"labels outside 0..{self.num_classes - 1}")
        if not (len(self.mean) == len(self.std) == x.shape[1]) or min(self.std) <= 0:
            raise ValueError(f"need one mean and one positive std per channel ({x.shape[1]})")

    def normalise(self) -> Dataset:
        """Float32 tensors (x / scale - mean) / std."""
        shape = (1, -1) + (1,) * (self.x_train.ndim - 2)
        mean = torch.tensor(self.mean, dtype=torch.float32).view(shape)
        std = torch.tensor(self.std, dtype=torch.float32).view(shape)

        def norm(x: torch.Tensor) -> torch.Tensor:
            x = x.to(torch.float32)
            if self.scale != 1:
                x = x / self.scale
            return ((x - mean) / std).contiguous()

        return Dataset(self.name, norm(self.x_train), self.y_train, norm(self.x_test),
                       self.y_test, self.num_classes)


def channel_stats(x: torch.Tensor, scale: float) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of x / scale over all dims but dim 1, in float64."""
    means, stds = [], []
    for c in range(x.shape[1]):
        xc = x[:, c].reshape(-1)
        if x.dtype == torch.uint8:  # exact, from a 256-bin histogram (no float copy of the images)
            counts = torch.bincount(xc, minlength=256).to(torch.float64)
            values = torch.arange(256, dtype=torch.float64) / scale
            mean = (counts * values).sum() / counts.sum()
            var = (counts * (values - mean) ** 2).sum() / counts.sum()
        else:
            xc = xc.to(torch.float64) / scale
            mean, var = xc.mean(), xc.var(unbiased=False)
        means.append(float(mean))
        stds.append(float(var.sqrt()))
    return tuple(means), tuple(stds)


def _raw(name, x_train, y_train, x_test, y_test, num_classes, scale, source) -> RawData:
    mean, std = channel_stats(x_train, scale)
    return RawData(name, x_train, y_train, x_test, y_test, num_classes, scale, mean, std, source)


# ----------------------------------------------------------------------------- MNIST-1D


def _build_mnist1d(cfg: DataConfig) -> RawData:
    """MNIST-1D (Greydanus 2020): cfg.num_samples signals of length 40, x float32 [N, 1, 40].

    Generated offline with cfg.seed; the global `random` and NumPy RNG states, which the
    generator reseeds, are restored afterwards.
    """
    import mnist1d.data  # heavy import (matplotlib, scipy): only when generating

    args = mnist1d.data.get_dataset_args()
    args.num_samples = cfg.num_samples
    args.seed = cfg.seed
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        d = mnist1d.data.make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)

    def x(a):
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).unsqueeze(1)

    def y(a):
        return torch.from_numpy(np.asarray(a, dtype=np.int64))

    num_classes = len(d["templates"]["y"])
    source = {"name": "mnist1d", "num_samples": cfg.num_samples, "seed": cfg.seed,
              "generator": "mnist1d.data.make_dataset", "train_split": args.train_split}
    return _raw("mnist1d", x(d["x"]), y(d["y"]), x(d["x_test"]), y(d["y_test"]),
                num_classes, 1.0, source)


# ----------------------------------------------------------------------------- torchvision


@dataclass(frozen=True)
class TorchvisionSource:
    """A torchvision dataset class and its number of classes.

    The file layout follows the class: MNIST-style classes (MNIST, FashionMNIST) read
    `<root>/<ClassName>/raw/<file>` (or `<file>.gz`); CIFAR-style classes read
    `<root>/<base_folder>/` (or the tarball `<root>/<filename>`).
    """

    class_name: str  # in torchvision.datasets; resolved lazily, since importing torchvision takes seconds
    num_classes: int

    @property
    def cls(self) -> type:
        from torchvision import datasets

        return getattr(datasets, self.class_name)

    @property
    def idx_style(self) -> bool:
        from torchvision import datasets

        return issubclass(self.cls, datasets.MNIST)

    def expected(self, root: Path) -> list[str]:
        """The files (or alternatives) torchvision reads from `root`."""
        if self.idx_style:
            raw = root / self.cls.__name__ / "raw"
            return [f"{raw / Path(gz).stem}[.gz]" for gz, _ in self.cls.resources]
        names = ", ".join(f for f, _ in self._cifar_files())
        return [f"{root / self.cls.base_folder}/ ({names})", f"or the archive {root / self.cls.filename}"]

    def _cifar_files(self) -> list[tuple[str, str]]:
        c = self.cls
        return [tuple(f) for f in c.train_list + c.test_list] + [(c.meta["filename"], c.meta["md5"])]

    def prepare(self, root: Path, scratch: Path) -> tuple[Path | None, list[str]]:
        """Return (a root torchvision can read without writing, problems).

        That root is `root` itself when the files are there uncompressed, else `scratch` after
        extracting md5-verified archives into it; (None, problems) when files are missing.
        """
        from torchvision.datasets.utils import check_integrity, extract_archive

        if self.idx_style:
            raw = root / self.cls.__name__ / "raw"
            plain = [raw / Path(gz).stem for gz, _ in self.cls.resources]
            if all(p.is_file() for p in plain):
                return root, []
            problems = []
            for p, (gz, md5) in zip(plain, self.cls.resources):
                if p.is_file():
                    continue
                if not (raw / gz).is_file():
                    problems.append(f"missing: {p}[.gz]")
                elif not check_integrity(raw / gz, md5):
                    problems.append(f"corrupt: {raw / gz} (md5 differs from torchvision's {md5})")
            if problems:
                return None, problems
            staged = scratch / self.cls.__name__ / "raw"
            staged.mkdir(parents=True, exist_ok=True)
            for p, (gz, _) in zip(plain, self.cls.resources):
                if p.is_file():
                    _link_or_copy(p, staged / p.name)
                else:
                    extract_archive(str(raw / gz), str(staged))
            return scratch, []
        folder = root / self.cls.base_folder
        bad = [folder / f for f, md5 in self._cifar_files() if not check_integrity(folder / f, md5)]
        if not bad:
            return root, []
        tarball = root / self.cls.filename
        if check_integrity(tarball, self.cls.tgz_md5):
            extract_archive(str(tarball), str(scratch))
            return scratch, []
        problems = [f"{'corrupt (md5)' if p.is_file() else 'missing'}: {p}" for p in bad]
        if tarball.is_file():
            problems.append(f"corrupt: {tarball} (md5 differs from torchvision's {self.cls.tgz_md5})")
        else:
            problems.append(f"missing: {tarball}")
        return None, problems


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.symlink(src.resolve(), dst)
    except OSError:
        shutil.copyfile(src, dst)


TORCHVISION: dict[str, TorchvisionSource] = {
    "mnist": TorchvisionSource("MNIST", 10),
    "fashion_mnist": TorchvisionSource("FashionMNIST", 10),
    "cifar10": TorchvisionSource("CIFAR10", 10),
    "cifar100": TorchvisionSource("CIFAR100", 100),
}


def _build_torchvision(name: str, cfg: DataConfig) -> RawData:
    """Read both splits' `.data` / `.targets` through torchvision; x uint8 [N, C, H, W]."""
    spec = TORCHVISION[name]
    root = Path(cfg.root).expanduser()
    with tempfile.TemporaryDirectory(prefix=f"modeconn-{name}-") as scratch:
        read_root, problems = spec.prepare(root, Path(scratch))
        if read_root is None:
            if not cfg.download:
                expected = "\n  ".join(spec.expected(root))
                found = "\n  ".join(problems)
                raise FileNotFoundError(
                    f"dataset {name!r} (torchvision {spec.cls.__name__}) not found under root "
                    f"'{root}'.\nExpected:\n  {expected}\nProblems:\n  {found}\n"
                    f"Set data.download: true to let torchvision download it into the root, or "
                    f"set data.root to a folder that holds these files.")
            read_root = root
            try:
                spec.cls(str(root), train=True, download=True)
            except Exception as err:
                raise RuntimeError(f"downloading {name!r} into '{root}' failed: {err}") from err
        splits = [spec.cls(str(read_root), train=train, download=False) for train in (True, False)]
        tensors = []
        for ds in splits:
            x = torch.as_tensor(np.asarray(ds.data))
            x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)  # CIFAR data is NHWC
            tensors += [x.contiguous(), torch.as_tensor(ds.targets, dtype=torch.int64).clone()]
    source = {"name": name, "torchvision": spec.class_name}
    return _raw(name, *tensors, spec.num_classes, 255.0, source)


# ----------------------------------------------------------------------------- registry


def _torchvision_builder(name: str) -> Callable[[DataConfig], RawData]:
    def build(cfg: DataConfig) -> RawData:
        return _build_torchvision(name, cfg)

    build.__name__ = f"build_{name}"
    build.__doc__ = f"{TORCHVISION[name].class_name} via torchvision; x uint8 [N, C, H, W]."
    return build


DATASETS: dict[str, Callable[[DataConfig], RawData]] = {
    "mnist1d": _build_mnist1d,
    **{name: _torchvision_builder(name) for name in TORCHVISION},
}


def build_dataset(cfg: DataConfig) -> RawData:
    """Produce `cfg.name` from its source (generated, or read through torchvision) as RawData."""
    if cfg.name not in DATASETS:
        raise ValueError(f"unknown dataset {cfg.name!r}; known: {', '.join(sorted(DATASETS))}")
    return DATASETS[cfg.name](cfg)


# ----------------------------------------------------------------------------- file format


def save_dataset(data: RawData, path: str | Path) -> None:
    """Write `data` atomically as one .safetensors file.

    Tensors: x_train, y_train, x_test, y_test in their stored dtype. Metadata: one entry
    "modeconn" holding a JSON object {format, version, name, num_classes, scale, mean, std,
    source, sha256}, serialised with sorted keys so that equal data gives a byte-identical file;
    sha256 (`content_digest`) covers the tensors and the rest of the metadata and is verified on load.
    """
    meta = {"format": FORMAT, "version": FORMAT_VERSION, "name": data.name,
            "num_classes": data.num_classes, "scale": data.scale, "mean": list(data.mean),
            "std": list(data.std), "source": data.source}
    tensors = {k: getattr(data, k).contiguous() for k in _SPLITS}
    meta["sha256"] = content_digest(tensors, meta)
    with atomic_path(path) as tmp:
        safetensors.torch.save_file(tensors, str(tmp),
                                    metadata={METADATA_KEY: json.dumps(meta, sort_keys=True)})


def content_digest(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> str:
    """SHA-256 over every tensor (name, dtype, shape, bytes; in name order) and the metadata
    without its own "sha256" entry (as sorted-key JSON): any flipped byte changes it."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous().cpu()
        h.update(f"{name}|{t.dtype}|{list(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    h.update(json.dumps({k: v for k, v in meta.items() if k != "sha256"}, sort_keys=True).encode())
    return h.hexdigest()


def _read(path: Path) -> RawData:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such dataset file (build it first)")
    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            meta = _metadata(path, f.metadata())
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except DatasetFileError:
        raise
    except Exception as err:  # safetensors raises its own error type for every malformed file
        raise DatasetFileError(
            f"{path}: not a readable safetensors file, probably truncated or corrupt "
            f"(rebuild it): {err}") from err
    missing = [k for k in _SPLITS if k not in tensors]
    if missing:
        raise DatasetFileError(f"{path}: modeconn dataset file lacks tensors {missing}")
    if content_digest(tensors, meta) != meta.get("sha256"):
        raise DatasetFileError(f"{path}: content digest mismatch: the data or its metadata changed after it "
                               f"was written (corrupt or edited file); delete it and rebuild it")
    try:
        return RawData(meta["name"], *(tensors[k] for k in _SPLITS), int(meta["num_classes"]),
                       float(meta["scale"]), tuple(map(float, meta["mean"])),
                       tuple(map(float, meta["std"])), dict(meta.get("source") or {}))
    except (KeyError, TypeError, ValueError) as err:
        raise DatasetFileError(f"{path}: inconsistent modeconn dataset file: {err!r}") from err


def _metadata(path: Path, header: dict[str, str] | None) -> dict[str, Any]:
    try:
        meta = json.loads((header or {})[METADATA_KEY])
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise KeyError("format")
    except (KeyError, TypeError, json.JSONDecodeError):
        raise DatasetFileError(
            f"{path}: not a modeconn dataset file (no '{METADATA_KEY}' metadata with "
            f"format '{FORMAT}')") from None
    if meta.get("version") != FORMAT_VERSION:
        raise DatasetFileError(f"{path}: dataset format version {meta.get('version')!r}, "
                               f"this code reads version {FORMAT_VERSION}; rebuild it")
    return meta


def load_dataset(path: str | Path) -> Dataset:
    """Read a file written by `save_dataset`; return float32 tensors normalised with its stats.

    Raises FileNotFoundError for a missing file and DatasetFileError (a ValueError) naming the
    file when it is truncated, corrupt or not a modeconn dataset.
    """
    return _read(Path(path)).normalise()
