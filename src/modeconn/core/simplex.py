"""Low-loss simplexes in weight space (Benton et al. 2021, SPRO / ESPRO).

A simplex is V vertices θ_0 … θ_{V−1} of one architecture, stacked [V, ...]; its points are the
convex combinations θ(w) = Σ_v w_v θ_v with w in the probability simplex. Points are sampled
uniformly, w ~ Dirichlet(1, …, 1), and evaluated as one population through `params.combine`.

SPRO grows a simplex from a trained network one vertex at a time: the new vertex starts at the
centroid of the existing ones and is trained with them frozen on

    loss = mean_s CE(θ(w_s); minibatch) − λ · log Vol(θ_0 … θ_{V−1}),   w_s ~ Dir(1), s = 1 … S

i.e. the *mean* over the S sampled points (Benton et al.'s reference code sums them, which scales
the effective learning rate and the volume weight with S), and the volume from the
Cayley–Menger determinant (`log_volume`). ESPRO ensembles points sampled in K such simplexes grown
from K independent seeds (the K simplexes are trained together as one population).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .params import TensorDict


def dirichlet(samples: int, vertices: int, generator: torch.Generator, lead: tuple[int, ...] = ()) -> Tensor:
    """Uniform points of the probability simplex: [*lead, samples, vertices] ~ Dirichlet(1).

    Normalised independent Exp(1) variables (−log U) are Dirichlet(1) distributed; drawn from the
    given generator so results are reproducible without the global RNG.
    """
    u = torch.rand(*lead, samples, vertices, generator=generator, dtype=torch.float64)
    e = -torch.log1p(-u)  # Exp(1); log1p(−u) avoids log(0) since u < 1
    return e / e.sum(-1, keepdim=True)


def pairwise_sq(flat: Tensor) -> Tensor:
    """Squared distances [..., V, V] between the rows of flat [..., V, D], in float64.

    From the Gram matrix of the rows centred on their mean, |x_i − x_j|² = G_ii + G_jj − 2 G_ij:
    O(V² D) work without a [V, V, D] tensor; centring first avoids the cancellation of large norms.
    """
    centred = (flat - flat.mean(-2, keepdim=True)).double()
    gram = centred @ centred.transpose(-1, -2)
    diag = gram.diagonal(dim1=-2, dim2=-1)
    return (diag.unsqueeze(-1) + diag.unsqueeze(-2) - 2.0 * gram).clamp_min(0.0)


def cayley_menger_squared_volume(sq: Tensor) -> Tensor:
    """Squared k-volume (k = V − 1) of the simplex with squared edge lengths sq [..., V, V].

    Cayley–Menger: Vol² = (−1)^(k+1) det(CM) / (2^k (k!)²), where CM is the (V+1)×(V+1) matrix
    [[0, 1ᵀ], [1, sq]]. Only distances enter, so it is the same in any ambient dimension (a simplex
    in a network's weight space needs no Gram matrix of D-dimensional vectors). A plain determinant
    (not slogdet) keeps the gradient finite at a degenerate simplex. For V = 1 the volume is 1.
    """
    v = sq.shape[-1]
    if v == 1:
        return sq.new_ones(sq.shape[:-2])
    cm = sq.new_ones(*sq.shape[:-2], v + 1, v + 1)
    cm[..., 0, 0] = 0.0
    cm[..., 1:, 1:] = sq
    k = v - 1
    return (-1) ** (k + 1) * torch.linalg.det(cm) / (2.0**k * math.factorial(k) ** 2)


def volume(flat: Tensor) -> Tensor:
    """Volume of the simplex(es) with vertices the rows of flat [..., V, D]."""
    return cayley_menger_squared_volume(pairwise_sq(flat)).clamp_min(0).sqrt()


def log_volume(flat: Tensor, eps: float = 1e-12) -> Tensor:
    """½ log(Vol² + ε) [...]: the log volume of Benton et al.'s regulariser, finite at a degenerate start.

    The new vertex starts at the centroid, where the volume is 0; ε keeps the first steps finite
    (the cross-entropy noise then moves the vertex off the degenerate configuration).
    """
    vol2 = cayley_menger_squared_volume(pairwise_sq(flat)).clamp_min(0)
    return 0.5 * torch.log(vol2 + eps)


def flat_vertices(vertices: TensorDict, lead: int) -> Tensor:
    """{name: T[*L, V, ...]} (L = `lead` dims) → [*L, V, D] of the floating tensors."""
    parts = [t.flatten(lead + 1) for t in vertices.values() if t.is_floating_point()]
    return torch.cat(parts, dim=-1)


def centroid(vertices: TensorDict, lead: int = 0) -> TensorDict:
    """Mean over the vertex dim (after `lead` dims) of every floating tensor; others from vertex 0."""
    return {k: (v.mean(lead) if v.is_floating_point() else v.select(lead, 0)) for k, v in vertices.items()}


def points(weights: Tensor, vertices: TensorDict) -> TensorDict:
    """Points of K simplexes: weights [K, S, V], vertices {name: T[K, V, ...]} → {name: T[K·S, ...]}.

    θ_{k,s} = Σ_v w[k, s, v] θ_{k, v}; integer tensors are taken from vertex 0.
    """
    k, s, _ = weights.shape
    out = {}
    for name, t in vertices.items():
        if t.is_floating_point():
            w = weights.to(t)
            out[name] = torch.einsum("ksv,kv...->ks...", w, t).reshape(k * s, *t.shape[2:])
        else:
            out[name] = t[:, :1].expand(k, s, *t.shape[2:]).reshape(k * s, *t.shape[2:]).clone()
    return out


def spro_loss(ce: Tensor, log_vol: Tensor, weight: float) -> Tensor:
    """Σ_k [mean_s ce[k, s] − λ log Vol_k] for K simplexes: ce [K, S] at S sampled points, log_vol [K].

    The mean over samples (not the reference code's sum) keeps the step size and the balance with
    the volume term independent of S; summing over k keeps each simplex's gradient its own.
    """
    return ce.mean(1).sum() - weight * log_vol.sum()
