"""Ensembles of networks of one population: predictions, ensemble error and NLL, disagreement.

An ensemble of K networks predicts p(y|x) = (1/K) Σ_k softmax(f_k(x)) (the average of the
members' probabilities, as in Garipov et al. 2018 and Izmailov et al. 2018). From members'
log-probabilities L [K, N, C] on N examples:

    ensemble log-probs  = logsumexp_k L − log K                      [N, C]
    error               = mean_n [argmax_c ensemble ≠ y_n]
    NLL                 = −mean_n ensemble log-prob of y_n
    disagreement(a, b)  = mean_n [argmax_c L_a ≠ argmax_c L_b]        (fraction of examples)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .params import TensorDict, select, size
from .population import chunks, forward, members_at_once, mode


@torch.no_grad()
def log_probs(model: nn.Module, params: TensorDict, buffers: TensorDict, x: Tensor, batch_size: int = 2000, chunk: int = 0) -> Tensor:
    """Log-softmax outputs [K, N, C] of K stacked members on x [N, ...], in eval mode."""
    out = []
    with mode(model, training=False):
        for part in chunks(size(params), members_at_once(model, params, buffers, x, batch_size, chunk)):
            p, b = select(params, part), select(buffers, part)
            out.append(torch.cat([forward(model, p, b, x[s : s + batch_size]).log_softmax(-1) for s in range(0, x.shape[0], batch_size)], 1))
    return torch.cat(out)


def ensemble_log_probs(logp: Tensor) -> Tensor:
    """[K, N, C] members → [N, C] log of the mean probability."""
    return torch.logsumexp(logp.double(), 0) - math.log(logp.shape[0])


def scores(logp: Tensor, y: Tensor) -> dict[str, float]:
    """Error and NLL of the probability-averaged ensemble of the K members in logp [K, N, C]."""
    ens = ensemble_log_probs(logp)
    return {
        "error": (ens.argmax(-1) != y).double().mean().item(),
        "nll": -ens.gather(1, y[:, None]).mean().item(),
    }


def member_scores(logp: Tensor, y: Tensor) -> dict[str, Tensor]:
    """Each member's error and NLL [K]."""
    return {
        "error": (logp.argmax(-1) != y).double().mean(1),
        "nll": -logp.double().gather(2, y.expand(logp.shape[0], -1)[..., None]).squeeze(-1).mean(1),
    }


def disagreement(logp: Tensor, reference: Tensor) -> Tensor:
    """Fraction of examples where each member [K, N, C] and the reference [N, C] predict differently → [K]."""
    return (logp.argmax(-1) != reference.argmax(-1)).double().mean(-1)


def evenly_spaced(points: int, n: int) -> list[int]:
    """Indices of n evenly spaced points among `points` (endpoints included; n = 2: the two ends)."""
    if n > points:
        raise ValueError(f"cannot pick {n} of {points} points")
    return sorted({round(i * (points - 1) / (n - 1)) for i in range(n)})
