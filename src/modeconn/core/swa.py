"""Stochastic weight averaging (Izmailov et al. 2018): a running mean of weights along SGD.

θ_SWA ← θ_SWA + (θ − θ_SWA) / (n + 1) after the n-th added model (their Algorithm 1). Works on
stacked populations (one average per member). Only floating tensors are averaged; BatchNorm's
running statistics of the average are stale and must be recomputed (`core.population.recompute_bn`)
before it is evaluated.
"""

from __future__ import annotations

import torch

from .params import TensorDict


class RunningAverage:
    """The mean of every state added so far (params or buffers dicts of equal names and shapes)."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: TensorDict = {}

    @classmethod
    def resumed(cls, mean: TensorDict, count: int) -> "RunningAverage":
        """The average of `count` states whose mean is `mean` (as a resume point saved it): adding
        to it gives exactly what adding to the original would have."""
        avg = cls()
        avg.mean, avg.count = dict(mean), count
        return avg

    @torch.no_grad()
    def add(self, state: TensorDict) -> None:
        self.count += 1
        if self.count == 1:
            self.mean = {k: v.detach().clone() for k, v in state.items()}
            return
        for k, v in state.items():
            if v.is_floating_point():
                self.mean[k] += (v.detach() - self.mean[k]) / self.count
            else:
                self.mean[k] = v.detach().clone()  # integer buffers: keep the latest


def average(states: list[TensorDict]) -> TensorDict:
    """The running average of `states` in order (the SWA solution of those weights)."""
    if not states:
        raise ValueError("nothing to average")
    avg = RunningAverage()
    for s in states:
        avg.add(s)
    return avg.mean
