"""Training a population: K networks of one architecture, each with its own seeds, in one loop.

The K members are stacked (`core.params`) and run through `core.population.forward` with one
minibatch per member, so every step is one batched computation. The loss is the sum of the
members' mean losses, so the gradient of each member's slice is that member's own gradient; the
torch optimizers (SGD, Adam, AdamW) act elementwise on the stacked tensors, so training K members
together gives the same result as training each alone (tests/test_train.py checks this).

Randomness is separated into three streams per member (`MemberSeeds`): initialisation, data
order and augmentation. Data order and augmentation are derived from (seed, epoch/step) alone, so
training can resume at any step from a checkpoint and two forks can share everything except the
stream they vary (Frankle et al. 2020).
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from .config import TrainConfig
from .core.optimizers import make_optimizer
from .core.params import DivergenceError, TensorDict, module_state, size, stack
from .core.population import forward
from .progress import ProgressLog
from .schedules import iterations, lr_factor, steps_per_epoch


@dataclass(frozen=True)
class MemberSeeds:
    """The three independent sources of randomness of one training run."""

    init: int
    data: int
    augment: int

    @classmethod
    def same(cls, seed: int) -> "MemberSeeds":
        # One integer for all three is fine: the streams are salted by name (see `generator`).
        return cls(init=seed, data=seed, augment=seed)


def generator(*keys) -> torch.Generator:
    """A CPU generator seeded from a hash of `keys` (e.g. ("data", seed, epoch))."""
    digest = hashlib.sha256(repr(keys).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def init_population(build: Callable[[], nn.Module], init_seeds: list[int]) -> tuple[nn.Module, TensorDict, TensorDict]:
    """Build one network per init seed (global RNG forked, so the caller's is untouched).

    Returns a skeleton module (for `functional_call`) and the stacked params and buffers.
    """
    states, model = [], None
    for seed in init_seeds:
        # Fork every CUDA device too: torch.manual_seed also reseeds them.
        with torch.random.fork_rng(devices=range(torch.cuda.device_count())):
            torch.manual_seed(seed)
            model = build()
        states.append(module_state(model))
    return model, stack([p for p, _ in states]), stack([b for _, b in states])


def epoch_order(n: int, data_seed: int, epoch: int) -> Tensor:
    """The permutation of the n training examples that seed `data_seed` uses in `epoch`."""
    return torch.randperm(n, generator=generator("data", data_seed, epoch))


def crop_flip(x: Tensor, aug_seed: int, step: int, pad: int = 4) -> Tensor:
    """Random crop after zero padding by `pad`, and random horizontal flip, of x [B, C, H, W]."""
    b, c, h, w = x.shape
    g = generator("augment", aug_seed, step)
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=g).to(x.device)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=g).to(x.device)
    flip = (torch.rand(b, generator=g) < 0.5).to(x.device)
    xp = F.pad(x, (pad, pad, pad, pad))
    rows = (oy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    out = xp[torch.arange(b, device=x.device)[:, None, None, None], torch.arange(c, device=x.device)[None, :, None, None], rows, cols]
    return torch.where(flip[:, None, None, None], out.flip(-1), out)


AUGMENTATIONS: dict[str, Callable[[Tensor, int, int], Tensor] | None] = {"none": None, "crop_flip": crop_flip}


@dataclass
class TrainState:
    """Where a population is: stacked params (optimised leaves), buffers, optimizer, step.

    `optimizer` is None for a population merged from separately trained cohorts (`merge_states`):
    no one optimizer holds all their states.
    """

    params: TensorDict
    buffers: TensorDict
    optimizer: torch.optim.Optimizer | None
    step: int
    steps_per_epoch: int
    total_steps: int

    def progress(self) -> dict[str, int]:
        """Where in training this is, for checkpoint metadata."""
        return {"step": self.step, "total_steps": self.total_steps, "steps_per_epoch": self.steps_per_epoch}


def member_optimizer_state(state: TrainState, i: int) -> TensorDict:
    """Member i's slice of the optimizer state, as flat {"<param>/<key>": tensor} (for checkpoints).

    The optimizer's parameters are the stacked tensors in `state.params` order (see
    `train_population`), so index j of its state_dict is the j-th name.
    """
    if state.optimizer is None:
        raise ValueError("a population merged from separately trained cohorts has no optimizer state to save")
    k = size(state.params)
    per_param = state.optimizer.state_dict()["state"]
    out = {}
    for idx, name in enumerate(state.params):
        for key, value in per_param.get(idx, {}).items():
            if torch.is_tensor(value):
                out[f"{name}/{key}"] = value[i].clone() if value.ndim and value.shape[0] == k else value.clone()
    return out


def optimizer_signature(state: TensorDict) -> tuple:
    """What members stepped by one optimizer must share: the keys of their (flat, per-member)
    optimizer state and its scalar entries, e.g. Adam's step count t (its bias correction
    1 − β^t is one number per stacked tensor, not one per member)."""
    return tuple(sorted((key, value.item() if value.ndim == 0 else None) for key, value in state.items()))


def optimizer_cohorts(states: list[TensorDict]) -> list[list[int]]:
    """Indices of the members that can train as one population, grouped by `optimizer_signature`
    in order of first appearance (one cohort when every member has the same history, e.g. all
    rewound to one step, or all fresh)."""
    groups: dict[tuple, list[int]] = {}
    for i, state in enumerate(states):
        groups.setdefault(optimizer_signature(state), []).append(i)
    return list(groups.values())


def merge_states(states: list[TrainState], cohorts: list[list[int]]) -> TrainState:
    """One population from cohorts trained apart: member cohorts[c][j] is member j of states[c].

    The cohorts must stand at the same point of one schedule. One cohort in member order is
    returned as it is; otherwise the params (detached) and buffers are gathered into member order
    and the result has no optimizer.
    """
    if len(states) != len(cohorts) or any(size(s.params) != len(c) for s, c in zip(states, cohorts)):
        raise ValueError("one trained state per cohort, of the cohort's size")
    order = [i for c in cohorts for i in c]
    if sorted(order) != list(range(len(order))):
        raise ValueError(f"cohorts {cohorts} are not a partition of the members 0..{len(order) - 1}")
    if len({tuple(s.progress().items()) for s in states}) != 1:
        raise ValueError(f"cohorts at different points of training: {[s.progress() for s in states]}")
    if len(states) == 1 and order == list(range(len(order))):
        return states[0]
    where = torch.argsort(torch.tensor(order))  # member i sits at concatenated position where[i]

    def gather(parts: list[TensorDict]) -> TensorDict:
        return {n: torch.cat([p[n].detach() for p in parts])[where.to(parts[0][n].device)] for n in parts[0]}

    first = states[0]
    return TrainState(gather([s.params for s in states]), gather([s.buffers for s in states]), None, first.step, first.steps_per_epoch, first.total_steps)


def stacked_optimizer_state(optimizer: torch.optim.Optimizer, names: list[str], members: list[TensorDict]) -> dict:
    """A state_dict for `optimizer` (over stacked tensors named `names`) from per-member states.

    ValueError unless every member has the same `optimizer_signature`: a scalar entry (Adam's
    step count) is shared by the whole population, so members with different histories must
    train as separate populations (`optimizer_cohorts`).
    """
    if len({optimizer_signature(m) for m in members}) > 1:
        raise ValueError("the members' optimizer states differ in their entries or step counts; train each cohort "
                         "(train.optimizer_cohorts) as its own population")
    sd = optimizer.state_dict()
    state = {}
    for idx, name in enumerate(names):
        keys = {k.split("/", 1)[1] for k in members[0] if k.split("/", 1)[0] == name}
        entry = {}
        for key in keys:
            values = [m[f"{name}/{key}"] for m in members]
            entry[key] = values[0].clone() if values[0].ndim == 0 else torch.stack(values)
        if entry:
            state[idx] = entry
    sd["state"] = state
    return sd


def train_population(
    model: nn.Module,
    params: TensorDict,
    buffers: TensorDict,
    x_train: Tensor,
    y_train: Tensor,
    cfg: TrainConfig,
    seeds: list[MemberSeeds],
    start_step: int = 0,
    member_optimizer_states: list[TensorDict] | None = None,
    on_checkpoint: Callable[[TrainState], None] | None = None,
    on_epoch: Callable[[int, dict[str, Tensor], TrainState], None] | None = None,
    stop_step: int | None = None,
    masks: TensorDict | None = None,
    lr_key: str = "train.lr",
) -> TrainState:
    """Train the stacked population from `start_step` to the end of `cfg.duration`.

    x_train, y_train live on the training device; each step gathers one batch per member
    ([K, B, ...]) from them. `on_checkpoint` is called at every step listed in
    `cfg.checkpoint_steps` (before that step's update; step 0 is the initialisation) and
    `on_epoch` after every full epoch with the members' mean training loss and error [K].
    `stop_step` ends training early (e.g. a trunk trained only to step k).

    `masks` ({name: [K, ...]} of 0/1 over some parameters, e.g. a lottery ticket's pruning mask)
    are held fixed: masked weights are zeroed at the start, their gradients are zeroed before
    every update (so momentum and Adam moments of a pruned weight stay zero; the incoming
    optimizer state is masked too) and the weights are zeroed again after every update, so they
    stay exactly zero whatever the optimizer does.

    Divergence: at the end of every epoch, and before every checkpoint, the members' losses and
    weights are checked; a non-finite one raises DivergenceError naming the step, the members and
    `lr_key`, the learning-rate key to lower (so no non-finite checkpoint is ever written). When
    stderr is not a terminal (a workflow job's log), a progress line per epoch is written at most
    every progress.PROGRESS_EVERY_S seconds: epoch, step, mean loss and error, throughput and ETA.
    """
    k, n = size(params), x_train.shape[0]
    if len(seeds) != k:
        raise ValueError(f"{len(seeds)} seed triples for a population of {k}")
    spe = steps_per_epoch(n, cfg.batch_size, "train.batch_size")
    total = iterations(cfg.duration, spe)
    end = total if stop_step is None else min(stop_step, total)
    checkpoints = {iterations(s, spe) for s in cfg.checkpoint_steps}
    schedule = lr_factor(cfg.schedule, total, iterations(cfg.warmup, spe), tuple(iterations(m, spe) for m in cfg.milestones), cfg.gamma)
    augment = AUGMENTATIONS[cfg.augment]

    masks = _check_masks(masks, params)
    leaves = {name: p.detach().clone().requires_grad_(True) for name, p in params.items()}
    _zero_masked(leaves, masks)
    optimizer = make_optimizer(cfg.optimizer, list(leaves.values()), cfg.lr, cfg.momentum, cfg.nesterov, cfg.weight_decay)
    if member_optimizer_states is not None:
        optimizer.load_state_dict(stacked_optimizer_state(optimizer, list(leaves), member_optimizer_states))
        _mask_optimizer_state(optimizer, list(leaves), masks)
    buffers = {name: b.clone() for name, b in buffers.items()}  # BN updates them in place
    state = TrainState(leaves, buffers, optimizer, start_step, spe, total)

    sums = torch.zeros(2, k, dtype=torch.float64, device=x_train.device)
    orders: dict[int, Tensor] = {}
    model.train()
    steps = tqdm(range(start_step, end), desc="train", unit="it", disable=not sys.stderr.isatty(), leave=False)
    log = ProgressLog(start_step, end, spe)
    for step in steps:
        state.step = step
        if step in checkpoints and on_checkpoint is not None:
            check_finite(leaves, None, seeds, step, lr_key)
            on_checkpoint(state)
        epoch, j = divmod(step, spe)
        if epoch not in orders:
            orders = {epoch: torch.stack([epoch_order(n, s.data, epoch) for s in seeds]).to(x_train.device)}
        idx = orders[epoch][:, j * cfg.batch_size : (j + 1) * cfg.batch_size]  # [K, B]
        xb, yb = x_train[idx], y_train[idx]
        if augment is not None:
            xb = torch.stack([augment(xb[m], seeds[m].augment, step) for m in range(k)])
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr * schedule(step)
        logits = forward(model, leaves, buffers, xb, shared_input=False)  # [K, B, C]
        ce = F.cross_entropy(logits.flatten(0, 1), yb.flatten(), reduction="none").view(k, -1)
        optimizer.zero_grad(set_to_none=True)
        ce.mean(1).sum().backward()
        for name, m in masks.items():
            leaves[name].grad.mul_(m)
        optimizer.step()
        _zero_masked(leaves, masks)
        with torch.no_grad():
            sums[0] += ce.mean(1).double()
            sums[1] += (logits.argmax(-1) != yb).double().mean(1)
        if (step + 1) % spe == 0:
            state.step = step + 1
            check_finite(leaves, sums[0] / spe, seeds, step + 1, lr_key)
            log.update(step + 1, {"train loss": sums[0].mean() / spe, "error": sums[1].mean() / spe})
            if on_epoch is not None:
                on_epoch(epoch + 1, {"train_loss": sums[0] / spe, "train_error": sums[1] / spe}, state)
            sums.zero_()
    state.step = end
    check_finite(leaves, None, seeds, end, lr_key)
    if end in checkpoints and on_checkpoint is not None:
        on_checkpoint(state)
    model.eval()
    return state


@torch.no_grad()
def finite_members(params: TensorDict, losses: Tensor | None = None) -> Tensor:
    """[K] bool: members whose every weight (and loss, if given) is finite."""
    ok = torch.ones(size(params), dtype=torch.bool, device=next(iter(params.values())).device)
    for p in params.values():
        ok &= torch.isfinite(p).flatten(1).all(1)
    if losses is not None:
        ok &= torch.isfinite(losses).to(ok.device)
    return ok


def check_finite(params: TensorDict, losses: Tensor | None, seeds: list[MemberSeeds], step: int, lr_key: str) -> None:
    """Raise DivergenceError if any member has a non-finite weight or loss at `step`."""
    ok = finite_members(params, losses)
    if bool(ok.all()):
        return
    bad = [i for i, good in enumerate(ok.tolist()) if not good]
    raise DivergenceError(
        f"training diverged at step {step}: non-finite loss or weights in population member(s) {bad} "
        f"(init seeds {[seeds[i].init for i in bad]}); lower {lr_key} (or add warm-up: train.warmup) and rerun")


def _check_masks(masks: TensorDict | None, params: TensorDict) -> TensorDict:
    """Masks in the parameters' dtype and device; ValueError on an unknown name or a wrong shape."""
    out = {}
    for name, m in (masks or {}).items():
        if name not in params:
            raise ValueError(f"mask for unknown parameter {name!r}")
        if m.shape != params[name].shape:
            raise ValueError(f"mask {name!r} has shape {tuple(m.shape)}, parameter {tuple(params[name].shape)}")
        out[name] = m.to(dtype=params[name].dtype, device=params[name].device)
    return out


@torch.no_grad()
def _zero_masked(leaves: TensorDict, masks: TensorDict) -> None:
    for name, m in masks.items():
        leaves[name].mul_(m)


@torch.no_grad()
def _mask_optimizer_state(optimizer: torch.optim.Optimizer, names: list[str], masks: TensorDict) -> None:
    """Zero the loaded optimizer state (momentum, Adam moments) of masked weights."""
    for name, tensor in zip(names, optimizer.param_groups[0]["params"]):
        if name not in masks:
            continue
        for value in optimizer.state.get(tensor, {}).values():
            if torch.is_tensor(value) and value.shape == tensor.shape:
                value.mul_(masks[name])
