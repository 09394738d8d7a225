"""Checkpoints: round trip, metadata, damage detection naming the path, atomic writes."""

from __future__ import annotations

import dataclasses
import struct

import pytest
import torch
from safetensors.torch import save_file

from conftest import MLP_SHAPE, synthetic
from modeconn import checkpoint
from modeconn.checkpoint import Checkpoint, CheckpointError, load, read_meta, same_architecture, save
from modeconn.config import ModelConfig, TrainConfig
from modeconn.core.params import member, module_state
from modeconn.models import build_model
from modeconn.train import MemberSeeds, init_population, member_optimizer_state, train_population

MLP = ModelConfig(name="mlp", depth=2, width=16)
MLP_BN = ModelConfig(name="mlp", depth=2, width=16, norm="bn")
META = {"kind": "seed", "seed": 3, "step": 12, "config": {"train": {"lr": 0.1, "milestones": ["1ep"]}}, "note": "ü"}


def _state(cfg=MLP, seed=0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return module_state(build_model(cfg, MLP_SHAPE, 4))


def _ckpt(cfg=MLP, seed=0, optimizer=None) -> Checkpoint:
    params, buffers = _state(cfg, seed)
    if optimizer is None:  # a momentum buffer per parameter, as SGD keeps it
        optimizer = {f"{k}/momentum_buffer": torch.randn_like(v) for k, v in params.items()}
    return Checkpoint(params, buffers, dict(META), optimizer)


def _assert_tensors_equal(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert torch.equal(a[k], b[k]), k


def test_round_trip(tmp_path):
    ckpt = _ckpt()
    path = tmp_path / "sub" / "a.safetensors"  # parent folders are created
    save(path, ckpt)
    back = load(path)
    _assert_tensors_equal(back.params, ckpt.params)
    _assert_tensors_equal(back.buffers, ckpt.buffers)
    _assert_tensors_equal(back.optimizer, ckpt.optimizer)
    assert back.meta == META
    assert read_meta(path) == META
    assert read_meta(str(path)) == META


def test_round_trip_without_optimizer_and_non_contiguous_tensors(tmp_path):
    params = {"w": torch.arange(12.0).view(3, 4).t(), "v": torch.arange(6, dtype=torch.float64)[::2]}
    buffers = {"n": torch.tensor([7], dtype=torch.long), "flag": torch.tensor([True, False])}
    save(tmp_path / "b.safetensors", Checkpoint(params, buffers, {}))
    back = load(tmp_path / "b.safetensors")
    _assert_tensors_equal(back.params, params)
    _assert_tensors_equal(back.buffers, buffers)
    assert back.optimizer == {} and back.meta == {}


def test_round_trip_batchnorm_buffers(tmp_path):
    # regression: digest used to fail on 0-dim tensors (BatchNorm's num_batches_tracked)
    ckpt = _ckpt(MLP_BN)
    assert any(v.ndim == 0 for v in ckpt.buffers.values())
    save(tmp_path / "bn.safetensors", ckpt)
    _assert_tensors_equal(load(tmp_path / "bn.safetensors").buffers, ckpt.buffers)


def test_round_trip_adam_member_optimizer_state(tmp_path):
    # regression: Adam's per-member state holds a 0-dim float 'step' tensor
    x, y = synthetic(32, MLP_SHAPE, seed=0)
    model, params, buffers = init_population(lambda: build_model(MLP, MLP_SHAPE, 4), [0, 1])
    cfg = TrainConfig(optimizer="adam", batch_size=8, duration="3it")
    state = train_population(model, params, buffers, x, y, cfg, [MemberSeeds.same(0), MemberSeeds.same(1)])
    opt = member_optimizer_state(state, 1)
    ckpt = Checkpoint({k: v.detach() for k, v in member(state.params, 1).items()}, member(state.buffers, 1), {"step": 3}, opt)
    save(tmp_path / "adam.safetensors", ckpt)
    _assert_tensors_equal(load(tmp_path / "adam.safetensors").optimizer, opt)


def test_missing_file_raises_naming_path(tmp_path):
    path = tmp_path / "nope.safetensors"
    for fn in (load, read_meta):
        with pytest.raises(CheckpointError, match="nope.safetensors"):
            fn(path)


@pytest.mark.parametrize("keep", ["half", "header-only", "tiny", "empty", "all-but-one"])
def test_truncated_file_raises_naming_path(tmp_path, keep):
    path = tmp_path / "a.safetensors"
    save(path, _ckpt())
    data = path.read_bytes()
    header_len = struct.unpack("<Q", data[:8])[0]
    cut = {"half": len(data) // 2, "header-only": 8 + header_len, "tiny": 5, "empty": 0, "all-but-one": len(data) - 1}[keep]
    path.write_bytes(data[:cut])
    with pytest.raises(CheckpointError, match="a.safetensors"):
        load(path)


def test_foreign_safetensors_file_raises_naming_path(tmp_path):
    path = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(3)}, str(path))
    for fn in (load, read_meta):
        with pytest.raises(CheckpointError, match="foreign.safetensors"):
            fn(path)
    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(3)}, str(other), metadata={"modeconn": '{"format": "something/9", "meta": {}}'})
    with pytest.raises(CheckpointError, match="other.safetensors"):
        load(other)


def test_not_a_safetensors_file_raises_naming_path(tmp_path):
    path = tmp_path / "text.safetensors"
    path.write_text("hello, this is not a checkpoint at all\n" * 10)
    with pytest.raises(CheckpointError, match="text.safetensors"):
        load(path)


@pytest.mark.parametrize("where", [0.0, 0.5, 1.0])
def test_tampered_tensor_bytes_raise_naming_path(tmp_path, where):
    path = tmp_path / "t.safetensors"
    save(path, _ckpt())
    data = bytearray(path.read_bytes())
    start = 8 + struct.unpack("<Q", data[:8])[0]  # tensor data begins after the header
    pos = min(start + int(where * (len(data) - start)), len(data) - 1)
    data[pos] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="t.safetensors"):
        load(path)


@pytest.mark.parametrize("old, new", [(b'\\"step\\": 12', b'\\"step\\": 99'), (b'\\"kind\\": \\"seed\\"', b'\\"kind\\": \\"swa\\"\x20')])
def test_edited_metadata_is_refused_naming_path(tmp_path, old, new):
    """Other families rely on kind, step and config in the header: the digest covers them."""
    path = tmp_path / "meta.safetensors"
    save(path, _ckpt())
    blob = path.read_bytes()
    assert blob.count(old) == 1
    edited = blob.replace(old, new[: len(old)].ljust(len(old)))  # same length: the header stays parseable
    path.write_bytes(edited)
    with pytest.raises(CheckpointError, match=r"meta\.safetensors: tensors or metadata do not match"):
        load(path)


def test_non_finite_metadata_is_not_written(tmp_path):
    ckpt = _ckpt()
    ckpt.meta["loss"] = float("nan")
    with pytest.raises(CheckpointError, match=r"nan\.safetensors: refusing to write non-finite metadata .* at loss"):
        save(tmp_path / "nan.safetensors", ckpt)
    assert not (tmp_path / "nan.safetensors").exists()


def _fail_after_partial_write(tensors, filename, metadata=None):
    with open(filename, "wb") as f:
        f.write(b"partial")
    raise OSError("disk full")


def test_save_is_atomic_when_serialisation_fails(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint, "save_file", _fail_after_partial_write)
    path = tmp_path / "a.safetensors"
    with pytest.raises(OSError):
        save(path, _ckpt())
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


def test_failed_save_leaves_an_existing_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "a.safetensors"
    save(path, _ckpt(seed=0))
    before = path.read_bytes()
    monkeypatch.setattr(checkpoint, "save_file", _fail_after_partial_write)
    with pytest.raises(OSError):
        save(path, _ckpt(seed=1))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.safetensors"]
    _assert_tensors_equal(load(path).params, _ckpt(seed=0).params)


def test_overwrite_replaces_and_leaves_no_temporaries(tmp_path):
    path = tmp_path / "a.safetensors"
    save(path, _ckpt(seed=0))
    save(path, _ckpt(seed=1))
    _assert_tensors_equal(load(path).params, _ckpt(seed=1).params)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.safetensors"]


def test_same_architecture(tmp_path):
    a, b = _ckpt(seed=0), _ckpt(seed=1)
    same_architecture(a, b)  # different values, same shapes: fine
    wide = Checkpoint(*_state(dataclasses.replace(MLP, width=17)), {})
    with pytest.raises(CheckpointError):
        same_architecture(a, wide)
    deeper = Checkpoint(*_state(dataclasses.replace(MLP, depth=3)), {})
    with pytest.raises(CheckpointError):
        same_architecture(a, deeper)
    extra_buffer = Checkpoint(a.params, {**a.buffers, "x": torch.zeros(2)}, {})
    with pytest.raises(CheckpointError):
        same_architecture(a, extra_buffer)


def test_digest_depends_on_names_dtypes_shapes_and_values():
    t = {"a": torch.arange(6.0)}
    d = checkpoint.digest(t)
    assert d == checkpoint.digest({"a": torch.arange(6.0)})
    assert d != checkpoint.digest({"b": torch.arange(6.0)})
    assert d != checkpoint.digest({"a": torch.arange(6.0).double()})
    assert d != checkpoint.digest({"a": torch.arange(6.0).view(2, 3)})
    assert d != checkpoint.digest({"a": torch.arange(6.0) + 1})
    for scalar in (torch.tensor(5), torch.tensor(1.5), torch.tensor(True)):  # 0-dim tensors
        assert checkpoint.digest({"s": scalar}) == checkpoint.digest({"s": scalar.clone()})
        assert checkpoint.digest({"s": scalar}) != checkpoint.digest({"s": scalar.reshape(1)})


# ------------------------------------------------------------------------------------ metadata


def test_origin_meta_is_the_hand_built_dict_of_before():
    """Origin.meta builds what the stages wrote by hand: kind, their own fields, the config record and code version."""
    from modeconn.config import Config
    from modeconn.jobs import TRAIN_SECTIONS
    from modeconn.provenance import code_version

    cfg = Config.from_dict({"train": {"lr": 0.05}})
    seeds = MemberSeeds(init=1, data=2, augment=3)
    origin = checkpoint.Origin.of(cfg, TRAIN_SECTIONS)
    meta = origin.meta("fork", trunk=1, pair=0, child=1, spawn_step=7, seeds=seeds, step=10, total_steps=20, steps_per_epoch=5)
    record = {s: cfg.to_dict()[s] for s in TRAIN_SECTIONS}
    assert meta == {"kind": "fork", "trunk": 1, "pair": 0, "child": 1, "spawn_step": 7, "seeds": dataclasses.asdict(seeds),
                    "step": 10, "total_steps": 20, "steps_per_epoch": 5, "config": record, "code": code_version()}
    assert record["train"]["lr"] == 0.05
    assert origin.meta("mask", record_config=False, seed=3) == {"kind": "mask", "seed": 3, "code": code_version()}


def test_origin_meta_round_trips_through_a_checkpoint(tmp_path):
    from modeconn.config import Config

    origin = checkpoint.Origin.of(Config.from_dict({}), ("model", "train"))
    meta = origin.meta("seed", seed=4, seeds=MemberSeeds.same(4), step=0)
    params, buffers = _state()
    save(tmp_path / "a.safetensors", Checkpoint(params, buffers, meta))
    back = read_meta(tmp_path / "a.safetensors")
    assert back == meta and back["seeds"] == {"init": 4, "data": 4, "augment": 4} and set(back["config"]) == {"model", "train"}
