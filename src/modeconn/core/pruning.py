"""Pruning masks for lottery tickets (Frankle & Carbin 2019; Frankle et al. 2020).

A *mask* is a dict {name: Tensor} over the prunable weights (models.model_info(...).prunable) with
1.0 where a weight survives and 0.0 where it is pruned, of the weights' shapes (or stacked [K, ...]
for a population). Masks only ever shrink: level l keeps a subset of level l−1.

Iterative magnitude pruning (IMP), one level:

    n_prune(pool) = round(f · Σ_{w ∈ pool} m_w)        (f = fraction of the *remaining* weights)
    keep the Σ m − n_prune surviving weights of largest |w| in the pool

The *rule* says which weights share a pool (one ranking, one count):

    global     every prunable layer except the output layer is one pool (one ranking over all of
               them, as open_lth's sparse_global does over its prunable weights); the output layer
               is its own pool with its own fraction (0 keeps it dense, as open_lth's
               pruning_layers_to_ignore does).
    layerwise  every prunable layer is its own pool: each hidden layer loses round(f · its
               survivors), the output layer round(f_out · its survivors): Frankle & Carbin 2019
               prune LeNet-300-100 this way, each hidden fully-connected layer at p = 20% per
               round by magnitude within the layer, the output layer at half that rate (10%).

Both keep the output layer apart. Neither is open_lth's rule to the weight (it takes the ceiling of
the count and leaves an ignored output layer dense); `global` with output fraction 0 is the nearest.
Selecting with topk gives exactly the requested count per pool even with ties.

Baselines: `random_like` draws, per layer, a uniformly random mask with the same number of
survivors (random pruning at the same layer-wise sparsity); random reinitialisation keeps the IMP
mask and replaces the weights (done by the caller with a fresh initialisation).
"""

from __future__ import annotations

import torch

from .params import TensorDict


def ones_mask(params: TensorDict, names: tuple[str, ...] | list[str]) -> TensorDict:
    """The dense mask (all ones) over the named weights of one network."""
    missing = [n for n in names if n not in params]
    if missing:
        raise ValueError(f"prunable weights not among the parameters: {missing}")
    return {n: torch.ones_like(params[n]) for n in names}


def prune_count(remaining: int, fraction: float) -> int:
    """How many of `remaining` weights one level removes: round(fraction · remaining)."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"pruning fraction must be in [0, 1), got {fraction}")
    return int(round(fraction * remaining))


def remaining(mask: TensorDict) -> int:
    """Number of surviving weights (over all masked layers; one network)."""
    return int(sum(int(m.sum().item()) for m in mask.values()))


def total(mask: TensorDict) -> int:
    return int(sum(m.numel() for m in mask.values()))


def density(mask: TensorDict) -> float:
    """Fraction of the masked weights that survive."""
    return remaining(mask) / total(mask)


def _prune_pool(weights: TensorDict, mask: TensorDict, names: list[str], fraction: float) -> TensorDict:
    """Keep the largest-|w| survivors of the pool `names`, removing round(fraction · survivors)."""
    if not names:
        return {}
    alive = torch.cat([mask[n].reshape(-1) for n in names])
    n_alive = int(alive.sum().item())
    keep = n_alive - prune_count(n_alive, fraction)
    # Pruned weights score −1, below any magnitude, so the kept set is a subset of the survivors.
    scores = torch.cat([weights[n].detach().abs().reshape(-1) for n in names])
    scores = torch.where(alive > 0, scores, torch.full_like(scores, -1.0))
    flat = torch.zeros_like(alive)
    flat[torch.topk(scores, keep, sorted=False).indices] = 1.0
    out, start = {}, 0
    for n in names:
        size = mask[n].numel()
        out[n] = flat[start : start + size].view_as(mask[n]).to(mask[n].dtype)
        start += size
    return out


# The pruning rules (see the module docstring); "global" is the workflow's default.
RULES = ("global", "layerwise")


def pools(names: list[str], output: str | None, rule: str) -> list[list[str]]:
    """The pools of the non-output layers `names` under `rule` (the output layer is always its own)."""
    hidden = [n for n in names if n != output]
    if rule == "global":
        return [hidden] if hidden else []
    if rule == "layerwise":
        return [[n] for n in hidden]
    raise ValueError(f"unknown pruning rule {rule!r}; known: {', '.join(RULES)}")


def magnitude_prune(weights: TensorDict, mask: TensorDict, fraction: float, output: str | None = None, output_fraction: float = 0.0,
                    rule: str = "global") -> TensorDict:
    """One IMP level: the next mask from the trained `weights` and the current `mask` (one network).

    `output` names the output layer's weight (a key of `mask`): it is pruned on its own at
    `output_fraction`; every other masked layer is pruned at `fraction`, in one global pool
    (rule "global") or each layer within itself (rule "layerwise", Frankle & Carbin 2019).
    """
    new = {}
    for pool in pools(list(mask), output, rule):
        new |= _prune_pool(weights, mask, pool, fraction)
    if output is not None and output in mask:
        new |= _prune_pool(weights, mask, [output], output_fraction)
    return {n: new[n] for n in mask}


def random_like(mask: TensorDict, generator: torch.Generator) -> TensorDict:
    """Per layer, a uniformly random mask with as many survivors as `mask` has in that layer."""
    out = {}
    for name, m in mask.items():
        keep = int(m.sum().item())
        order = torch.randperm(m.numel(), generator=generator)
        flat = torch.zeros(m.numel(), dtype=m.dtype)
        flat[order[:keep]] = 1.0
        out[name] = flat.view(m.shape).to(m.device)
    return out


def apply(params: TensorDict, mask: TensorDict) -> TensorDict:
    """Params with the masked weights set to exactly zero (unmasked tensors are copied unchanged).

    Works for one network or a stacked population with a stacked mask alike.
    """
    return {n: (p * mask[n].to(p.dtype) if n in mask else p.clone()) for n, p in params.items()}


def layer_density(mask: TensorDict) -> dict[str, float]:
    """Surviving fraction per layer (for the report and the ticket's metadata)."""
    return {n: float(m.float().mean().item()) for n, m in mask.items()}


def is_subset(small: TensorDict, large: TensorDict) -> bool:
    """Whether every survivor of `small` also survives in `large` (masks shrink monotonically)."""
    return all(bool(((small[n] > 0) <= (large[n] > 0)).all()) for n in small)


def check_mask(mask: TensorDict, params: TensorDict) -> None:
    """Raise ValueError unless `mask` is a 0/1 mask over some of `params`, of matching shapes."""
    for name, m in mask.items():
        if name not in params:
            raise ValueError(f"mask for unknown parameter {name!r}")
        if m.shape != params[name].shape:
            raise ValueError(f"mask {name!r} has shape {tuple(m.shape)}, parameter {tuple(params[name].shape)}")
        if not bool(((m == 0) | (m == 1)).all()):
            raise ValueError(f"mask {name!r} has values other than 0 and 1")


def stacked_masks(masks: list[TensorDict]) -> TensorDict:
    """[mask] * K → {name: [K, ...]} for population training."""
    return {n: torch.stack([m[n] for m in masks]) for n in masks[0]}
