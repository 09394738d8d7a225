"""The one optimizer factory: every family's optimizer (training, curve bends, NEB pivots, simplex
vertices) is built here, from its name and hyperparameters.

    sgd    θ ← θ − η·b,  b ← μ·b + (g + λθ)     (Nesterov: step along g + λθ + μ·b instead)
    adam   Kingma & Ba 2015, λθ added to the gradient (L2, coupled with the moments)
    adamw  Loshchilov & Hutter 2019, θ ← θ − ηλθ decoupled from the moments

Every hyperparameter is passed to torch explicitly: AdamW's own default weight decay is 0.01, not
the 0 a caller who leaves `weight_decay` out means.
"""

from __future__ import annotations

import torch
from torch import Tensor

OPTIMIZERS = ("sgd", "adam", "adamw")


def make_optimizer(name: str, tensors: list[Tensor], lr: float, momentum: float = 0.0, nesterov: bool = False,
                   weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """A torch optimizer `name` over `tensors` (momentum and nesterov apply to sgd only)."""
    if name == "sgd":
        return torch.optim.SGD(tensors, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(tensors, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(tensors, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}")
