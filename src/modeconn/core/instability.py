"""Spawn/fork instability (Frankle et al. 2020, "Linear Mode Connectivity and the Lottery Ticket
Hypothesis"): the maths, no files.

A trunk trained to step k is *forked* into two children θ_1, θ_2 that share the step-k weights and
optimizer state and differ only in the SGD noise (data order and augmentation seeds). Both train
to the end of the same schedule. The *instability* at k is the error barrier along the linear path
between them,

    B(k) = max_{α ∈ A} E((1−α) θ_1 + α θ_2) − ½ (E(θ_1) + E(θ_2)),   A = N evenly spaced α in [0, 1],

(core.barrier.barrier). The network is *stable* at k when B(k) is below a threshold (2% in the
paper); the *stability threshold* is the first spawn step at which it is.
"""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor

from .params import TensorDict, combine, select
from .paths import linear_coefficients


def fork_seed(trunk: int, pair: int, child: int) -> int:
    """The data-order/augmentation seed of child `child` ∈ {0, 1} of fork pair `pair` of a trunk.

    Derived by hashing (not by adding offsets), so it never coincides with another trunk's own
    seed; the same across spawn steps k, so the children at different k see the same SGD noise
    and only k varies between them.
    """
    digest = hashlib.sha256(repr(("fork", trunk, pair, child)).encode()).digest()
    return int.from_bytes(digest[:4], "little")


def pair_paths(stacked: TensorDict, pairs: list[tuple[int, int]], alpha: Tensor) -> TensorDict:
    """The linear paths between members a and b of a stacked population, for every (a, b) in `pairs`.

    stacked {name: [M, ...]}, alpha [N] → {name: [P·N, ...]}: path p occupies rows p·N … p·N + N − 1,
    row p·N + i being (1 − α_i) θ_a + α_i θ_b (integer buffers take θ_a's value).
    """
    coeffs = linear_coefficients(alpha)
    paths = [combine(coeffs, select(stacked, [a, b])) for a, b in pairs]
    return {name: torch.cat([p[name] for p in paths]) for name in stacked}


def first_stable(steps: list[int], barriers: list[float], threshold: float) -> int | None:
    """The smallest spawn step whose (mean) barrier is below `threshold`; None if none is."""
    for step, value in sorted(zip(steps, barriers)):
        if value < threshold:
            return step
    return None
