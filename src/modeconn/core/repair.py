"""REPAIR: renormalising the pre-activations of interpolated networks (Jordan et al. 2022).

Interpolating two (matched) networks shrinks the variance of hidden pre-activations layer after
layer ("variance collapse"). REPAIR rescales each channel c of each layer ℓ of the merged network
θ(α) so that its mean and standard deviation over training data equal the interpolation of the
endpoints' statistics:

    goal_μ = (1 − α) μ_A + α μ_B,   goal_σ = (1 − α) σ_A + α σ_B          (Jordan et al. Sec. 4)
    z ↦ s (z − μ) + goal_μ,   s = goal_σ / σ

with μ, σ the merged network's own statistics, measured layer after layer *with the earlier
layers already corrected* (one forward pass whose hooks correct as they go, like BatchNorm in
train mode). The affine correction is then fused into the layer that produces z (`spec.repair`:
its weight's axis 0 and its bias): W ↦ s W, b ↦ s (b − μ) + goal_μ. Networks with BatchNorm get
their running statistics recomputed instead (population.recompute_bn), the BN-network analogue.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor, nn
from torch.func import functional_call

from .params import TensorDict
from .permutation import PermutationSpec
from .matching import channels_last
from .population import mode, module_outputs

Stats = dict[str, tuple[Tensor, Tensor]]  # module name → (mean [C], std [C])
EPS = 1e-5


def _per_channel(out: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and (population) std over examples and positions of each channel (axis 1)."""
    flat = channels_last(out).double()
    return flat.mean(0), flat.std(0, unbiased=False)


def _shape(v: Tensor, like: Tensor) -> Tensor:
    return v.to(like.dtype).view(1, -1, *([1] * (like.ndim - 2)))


@torch.no_grad()
def channel_stats(model: nn.Module, params: TensorDict, buffers: TensorDict, spec: PermutationSpec, x: Tensor) -> Stats:
    """Per-channel mean and std of every REPAIR point's output on x (eval mode, no correction)."""
    outputs = module_outputs(model, params, buffers, x, (m for m, _, _ in spec.repair))
    return {m: _per_channel(out) for m, out in outputs.items()}


def interpolate_stats(stats_a: Stats, stats_b: Stats, alpha: float) -> Stats:
    """The REPAIR goal at α: (1 − α)·(μ_A, σ_A) + α·(μ_B, σ_B), per point."""
    return {m: ((1 - alpha) * stats_a[m][0] + alpha * stats_b[m][0], (1 - alpha) * stats_a[m][1] + alpha * stats_b[m][1]) for m in stats_a}


@torch.no_grad()
def repair(model: nn.Module, spec: PermutationSpec, params: TensorDict, buffers: TensorDict, goal: Mapping[str, tuple[Tensor, Tensor]], x: Tensor) -> TensorDict:
    """Params of θ with every REPAIR point's statistics on x moved to `goal` (fused; see docstring)."""
    if not spec.repair:
        return dict(params)
    measured: Stats = {}

    def correct(name):
        def hook(_module, _inputs, out):
            mu, sd = _per_channel(out)
            measured[name] = (mu, sd)
            g_mu, g_sd = goal[name]
            scale = (g_sd + EPS) / (sd + EPS)  # = 1 for equal statistics; bounded for dead channels
            return (out - _shape(mu, out)) * _shape(scale, out) + _shape(g_mu, out)

        return hook

    hooks = [model.get_submodule(m).register_forward_hook(correct(m)) for m, _, _ in spec.repair]
    try:
        with mode(model, training=False):
            functional_call(model, (params, buffers), (x,))
    finally:
        for h in hooks:
            h.remove()
    out = dict(params)
    for m, w, b in spec.repair:
        if b is None:
            raise ValueError(f"REPAIR point {m} has no bias to fuse the shift into")
        mu, sd = measured[m]
        g_mu, g_sd = goal[m]
        scale = (g_sd + EPS) / (sd + EPS)  # = 1 for equal statistics; bounded for dead channels
        weight = params[w]
        out[w] = (weight.double() * scale.view(-1, *([1] * (weight.ndim - 1)))).to(weight.dtype)
        out[b] = ((params[b].double() - mu) * scale + g_mu).to(params[b].dtype)
    return out


def collapse_ratio(merged: Stats, goal: Stats) -> dict[str, float]:
    """Per point: mean over channels of σ_merged / goal_σ (1 = no variance collapse)."""
    return {m: float((merged[m][1] / (goal[m][1] + EPS)).mean()) for m in goal}
