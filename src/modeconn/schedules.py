"""Training lengths ("60ep", "2000it") and learning-rate schedules as multiplicative factors.

The factor f(i) multiplies the configured peak learning rate at iteration i (0-based) and is
applied through `torch.optim.lr_scheduler.LambdaLR`. A linear warmup over the first W iterations
(f rises from 1/W to 1) precedes every schedule; the schedule then runs over the remaining
T − W iterations with u = (i − W) / (T − W) ∈ [0, 1):

    constant     f = 1
    step         f = γ^(number of milestones ≤ i)
    cosine       f = ½ (1 + cos(π u))                  (Loshchilov & Hutter 2017)
    triangular   f = 1 − |2u − 1| · (1 − ε), ε = 1e-3  (rises to the peak at mid-run, falls back)
    curve        f = 1 for u ≤ ½, linear from 1 to 0.01 over ½ < u ≤ 0.9, 0.01 after
                 (the curve-training schedule of Garipov et al. 2018)
    cyclic       per-iteration cycles from lr1 (f = 1) down to lr2 (f = γ) and back (Garipov et al.
                 2018, FGE, eq. 4). milestones = (m0, m1): cycles start at iteration m0 and last
                 c = m1 − m0 iterations; with phase s = ((i − m0) mod c) / c,
                 f = 1 − 2s(1 − γ) for s ≤ ½, f = γ + (2s − 1)(1 − γ) after; f = 1 before m0.
                 f = γ exactly at i = m0 + jc + c/2 (c even): the low point where FGE snapshots.
"""

from __future__ import annotations

import math
import re
from typing import Callable

_DURATION = re.compile(r"^([0-9]+)(ep|it)$")


def steps_per_epoch(examples: int, batch_size: int, key: str = "batch_size") -> int:
    """Minibatches in one epoch: ⌊examples / batch_size⌋ (the incomplete last batch is dropped).

    The one definition for every loop that counts epochs (training, curves, NEB, simplexes).
    ValueError, naming the config `key` (e.g. "train.batch_size"), when not one full batch fits.
    """
    if batch_size < 1 or examples < batch_size:
        raise ValueError(f"{key} {batch_size} exceeds the {examples} training examples (not one full batch per epoch)")
    return examples // batch_size


def iterations(duration: str, steps_per_epoch: int) -> int:
    """'60ep' → 60 · steps_per_epoch; '2000it' → 2000."""
    match = _DURATION.match(duration)
    if not match:
        raise ValueError(f"duration {duration!r} is not of the form <N>ep or <N>it")
    n, unit = int(match.group(1)), match.group(2)
    return n * steps_per_epoch if unit == "ep" else n


def lr_factor(
    schedule: str,
    total: int,
    warmup: int = 0,
    milestones: tuple[int, ...] = (),
    gamma: float = 0.1,
) -> Callable[[int], float]:
    """f(i): the factor on the peak learning rate at iteration i of `total`."""
    if warmup >= total and total > 0:
        raise ValueError(f"warmup ({warmup} it) must be shorter than training ({total} it)")
    span = max(total - warmup, 1)

    def after_warmup(i: int) -> float:
        u = min(max((i - warmup) / span, 0.0), 1.0)
        if schedule == "constant":
            return 1.0
        if schedule == "step":
            return gamma ** sum(1 for m in milestones if i >= m)
        if schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * u))
        if schedule == "triangular":
            return 1.0 - abs(2.0 * u - 1.0) * (1.0 - 1e-3)
        if schedule == "curve":
            return curve_factor(u)
        if schedule == "cyclic":
            return cyclic_factor(i, milestones, gamma)
        raise ValueError(f"unknown schedule {schedule!r}")

    def factor(i: int) -> float:
        if i < warmup:
            return (i + 1) / warmup
        return after_warmup(i)

    factor(warmup)  # fail now, not mid-training, on an unknown schedule
    return factor


def curve_factor(u: float) -> float:
    """Garipov et al. 2018's curve schedule at fraction u ∈ [0, 1] of training."""
    if u <= 0.5:
        return 1.0
    if u <= 0.9:
        return 1.0 - (u - 0.5) / 0.4 * 0.99
    return 0.01


def cyclic_factor(i: int, milestones: tuple[int, ...], gamma: float) -> float:
    """FGE's triangular cycle 1 → γ → 1 (see the module docstring); milestones = (m0, m0 + c)."""
    if len(milestones) != 2 or milestones[1] <= milestones[0]:
        raise ValueError(f"the cyclic schedule needs milestones (start, start + cycle), got {milestones}")
    m0, c = milestones[0], milestones[1] - milestones[0]
    if i < m0:
        return 1.0
    s = ((i - m0) % c) / c
    return 1.0 - 2.0 * s * (1.0 - gamma) if s <= 0.5 else gamma + (2.0 * s - 1.0) * (1.0 - gamma)
