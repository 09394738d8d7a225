"""Hessian trace and extreme eigenvalues: modeconn's estimators against PyHessian, timed side by side.

The network and data of PyHessian-style experiments on MNIST: a 784-512-512-512-10 ReLU MLP
(`ModelConfig(name="mlp", depth=3, width=512)`), the Hessian of the mean cross-entropy over 1000
training examples, one batch, eval mode. With the MNIST files (--mnist, default
../shared/data/MNIST/raw) the MLP is first trained briefly (SGD, a few epochs on 10,000 images) so
the spectrum is that of a trained network (the eigensolvers' cost depends on it); without them,
random tensors of MNIST's shape and an untrained network are used (timing of the trace does not
depend on the values).

Timed, interleaved (every repeat runs every task once, in turn), each from scratch (graph building
included, as a flatness job does it):

    trace     PyHessian `hessian(...).trace(maxIter=P, tol=0)`: P Hutchinson probes, one
              reverse-over-reverse Hessian-vector product each, on the graph kept for the batch
              modeconn `quadratic_forms` + `hutchinson`: P probes, zᵀHz by forward tangents and
              adjoints, `--chunk` probes per batched pass
    λ_max     PyHessian `eigenvalues(maxIter=20, tol=0)`: 20 power iterations (the project's old
              setting) and its defaults (maxIter=100, tol=1e-3)
              modeconn Lanczos (scipy eigsh, which="LA") on kept-graph products, ncv = --vectors
    λ_max and λ_min  modeconn `extreme_eigenvalues` (LA, then SA on H + |λ_max| I); PyHessian has no
              smallest-eigenvalue routine, so this row has no PyHessian counterpart

PyHessian is an optional benchmark dependency (`pip install pyhessian`, version 0.1), never imported by
the package. Without it (or with --no-pyhessian) an equivalent reverse-over-reverse implementation
written here (same algorithm: one create_graph backward, then autograd.grad per product with the
graph retained; Rademacher probes; power iteration with its stopping rule) stands in for it.

Every λ_max is compared with a reference from a tight Lanczos solve (untimed): the relative error is
in the table. The script prints numbers and never asserts a speed.

    python benchmarks/bench_curvature.py                 # ~3 min on one core
    python benchmarks/bench_curvature.py --repeats 1     # quicker
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import gzip
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from modeconn.config import ModelConfig
from modeconn.core import curvature
from modeconn.core.params import module_state
from modeconn.models import build_model

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- data and network


def mnist(root: Path, count: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The first `count` MNIST training images (normalised) and labels from the idx .gz files, or None."""
    images, labels = root / "train-images-idx3-ubyte.gz", root / "train-labels-idx1-ubyte.gz"
    if not (images.is_file() and labels.is_file()):
        return None
    with gzip.open(images) as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)[:count]
    with gzip.open(labels) as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)[:count]
    x = (torch.tensor(x, dtype=torch.float32) / 255.0 - 0.1307) / 0.3081
    return x, torch.tensor(y.astype(np.int64))


def network(args) -> tuple[nn.Module, torch.Tensor, torch.Tensor, str]:
    """The MLP (trained briefly on MNIST when the files are there) and the 1000 Hessian examples."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="mlp", depth=3, width=512), (1, 28, 28), 10)
    data = None if args.random else mnist(Path(args.mnist), args.train_examples)
    if data is None:
        x = torch.randn(args.examples, 1, 28, 28)
        y = torch.randint(0, 10, (args.examples,))
        return model.eval(), x, y, "random tensors, untrained network"
    x, y = data
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    for _ in range(args.epochs):
        order = torch.randperm(x.shape[0], generator=g)
        for i in range(0, x.shape[0], 128):
            batch = order[i: i + 128]
            loss = F.cross_entropy(model(x[batch]), y[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.zero_grad(set_to_none=True)
    return model.eval(), x[: args.examples], y[: args.examples], f"MNIST, trained {args.epochs} epochs on {x.shape[0]} images (SGD)"


# ----------------------------------------------------------------------------- the PyHessian side


class ReverseOverReverse:
    """PyHessian's algorithm for one batch, written out: the gradient built once with create_graph,
    each product autograd.grad(g, θ, v, retain_graph=True); Hutchinson with Rademacher probes; power
    iteration v ← Hv/‖Hv‖ stopping when |λ − λ_prev|/(|λ_prev| + 1e-6) < tol."""

    def __init__(self, model, criterion, data, cuda=False):
        x, y = data
        self.params = [p for p in model.parameters() if p.requires_grad]
        loss = criterion(model(x), y)
        self.grads = torch.autograd.grad(loss, self.params, create_graph=True)

    def _hv(self, v):
        return torch.autograd.grad(self.grads, self.params, v, retain_graph=True)

    def trace(self, maxIter=100, tol=1e-3):
        samples, mean = [], 0.0
        for _ in range(maxIter):
            v = [torch.randint_like(p, high=2) * 2.0 - 1.0 for p in self.params]
            samples.append(sum((a * b).sum() for a, b in zip(self._hv(v), v)).item())
            if abs(np.mean(samples) - mean) / (mean + 1e-6) < tol:
                return samples
            mean = np.mean(samples)
        return samples

    def eigenvalues(self, maxIter=100, tol=1e-3, top_n=1):
        v = [torch.randn_like(p) for p in self.params]
        v = [t / torch.sqrt(sum((s * s).sum() for s in v)) for t in v]
        eigenvalue = None
        for _ in range(maxIter):
            hv = self._hv(v)
            new = sum((a * b).sum() for a, b in zip(hv, v)).item()
            size = torch.sqrt(sum((h * h).sum() for h in hv))
            v = [h / size for h in hv]
            if eigenvalue is not None and abs(eigenvalue - new) / (abs(eigenvalue) + 1e-6) < tol:
                break
            eigenvalue = new
        return [new], [v]


def pyhessian_class(disabled: bool):
    """(the class, its label in the table, what it is)."""
    if disabled:
        return ReverseOverReverse, "stand-in", "reverse-over-reverse re-implementation of PyHessian (--no-pyhessian)"
    try:
        from pyhessian import hessian
        from importlib.metadata import version
    except ImportError:
        return ReverseOverReverse, "stand-in", "reverse-over-reverse re-implementation of PyHessian (pyhessian not installed)"
    return hessian, "pyhessian", f"PyHessian {version('pyhessian')}"


# ----------------------------------------------------------------------------- tasks


def tasks(args, model, x, y, reference_cls, label):
    """name -> (callable returning (λ_max or None, products), what it computes)."""
    params, buffers = module_state(model)
    criterion = nn.CrossEntropyLoss()

    def reference():  # PyHessian's own object is built in every run, as its users do
        model.zero_grad(set_to_none=True)  # PyHessian reads p.grad: never let earlier graphs accumulate
        return reference_cls(model, criterion, data=(x, y), cuda=False)

    def their_trace():
        samples = reference().trace(maxIter=args.probes, tol=0.0)
        return None, len(samples)

    def their_power(iterations, tol):
        def run():
            values, _ = reference().eigenvalues(maxIter=iterations, tol=tol, top_n=1)
            return values[0], iterations if tol == 0.0 else None  # with a tolerance it may stop earlier
        return run

    def our_trace():
        probes = curvature.rademacher(params, args.probes, torch.Generator().manual_seed(0))
        q = curvature.quadratic_forms(curvature.trace(model), params, buffers, [(x, y)])
        curvature.hutchinson(q, probes, args.chunk)
        return None, args.probes

    def our_top():
        local = curvature.second_order([curvature.batch_loss(model, buffers, x, y)], params)
        op, count = curvature.hessian_operator(local.hvp, curvature.Coordinates(params))
        start = curvature.Coordinates(params).flatten(curvature.gaussian(params, torch.Generator().manual_seed(1))).numpy()
        value, _ = curvature.lanczos(op, "LA", start, args.tolerance, args.vectors, 100)
        return value, count[0]

    def our_extremes():
        local = curvature.second_order([curvature.batch_loss(model, buffers, x, y)], params)
        out = curvature.extreme_eigenvalues(local.hvp, params, curvature.gaussian(params, torch.Generator().manual_seed(1)),
                                            args.tolerance, args.vectors, 100)
        return out["lambda_max"], out["matvecs_max"] + out["matvecs_min"]

    return {
        "trace": [(label, their_trace, f"trace, {args.probes} probes"), ("modeconn", our_trace, f"trace, {args.probes} probes")],
        "top": [(label, their_power(args.iterations, 0.0), f"λ_max, {args.iterations} power iterations"),
                (label, their_power(100, 1e-3), "λ_max, power iteration to tol 1e-3 (its default)"),
                ("modeconn", our_top, f"λ_max, Lanczos (eigsh LA, ncv={args.vectors}, tol={args.tolerance:g})")],
        "both": [("modeconn", our_extremes, "λ_max and λ_min, Lanczos (LA, then SA)")],
    }


def reference_top(model, x, y) -> float:
    """λ_max to high accuracy (untimed): Lanczos with a tight tolerance on a float64 copy of the network."""
    model = copy.deepcopy(model).double()
    params, buffers = module_state(model)
    local = curvature.second_order([curvature.batch_loss(model, buffers, x.double(), y)], params)
    op, _ = curvature.hessian_operator(local.hvp, curvature.Coordinates(params))
    start = curvature.Coordinates(params).flatten(curvature.gaussian(params, torch.Generator().manual_seed(7))).numpy()
    return curvature.lanczos(op, "LA", start, 1e-10, 40, 1000)[0]


def timed(fn) -> tuple[float, tuple]:
    gc.collect()
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (one: the flatness jobs' setting)")
    p.add_argument("--examples", type=int, default=1000, help="examples in the Hessian's batch")
    p.add_argument("--probes", type=int, default=32)
    p.add_argument("--chunk", type=int, default=16, help="probes per batched forward-tangent pass (flatness.probe_chunk)")
    p.add_argument("--iterations", type=int, default=20, help="PyHessian power iterations of the fixed-step row")
    p.add_argument("--vectors", type=int, default=10, help="Lanczos vectors (flatness.lanczos_vectors)")
    p.add_argument("--tolerance", type=float, default=1e-3, help="Lanczos tolerance (flatness.tolerance)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds; the table shows the median")
    p.add_argument("--mnist", default=str(ROOT.parent / "shared/data/MNIST/raw"), help="folder with MNIST's idx .gz files")
    p.add_argument("--train-examples", type=int, default=10000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--random", action="store_true", help="random tensors and an untrained network instead of MNIST")
    p.add_argument("--no-pyhessian", action="store_true", help="compare against the re-implementation even if pyhessian is installed")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    try:  # ARPACK's own linear algebra (OpenBLAS) gets the same number of threads as torch
        from threadpoolctl import threadpool_limits
        blas, args.blas = threadpool_limits(args.threads), f"BLAS limited to {args.threads} thread(s) (threadpoolctl)"
    except ImportError:
        blas, args.blas = contextlib.nullcontext(), "BLAS threads not limited (threadpoolctl not installed)"
    with blas:
        run(args)


def run(args) -> None:
    load = os.getloadavg()[0]
    model, x, y, source = network(args)
    reference_cls, label, against = pyhessian_class(args.no_pyhessian)
    groups = tasks(args, model, x, y, reference_cls, label)
    truth = reference_top(model, x, y)

    times: dict[tuple[str, str], list[float]] = {}
    results: dict[tuple[str, str], tuple] = {}
    for _ in range(args.repeats):
        for rows in groups.values():
            for who, fn, what in rows:
                seconds, out = timed(fn)
                times.setdefault((who, what), []).append(seconds)
                results[(who, what)] = out

    print(f"torch {torch.__version__}, Python {platform.python_version()}, {args.threads} torch thread(s), {args.blas}, "
          f"load average {load:.2f} → {os.getloadavg()[0]:.2f}")
    print(f"network: 784-512-512-512-10 MLP ({sum(t.numel() for t in model.parameters()):,} parameters), "
          f"{x.shape[0]} examples, one batch; data: {source}; against: {against}")
    print(f"reference λ_max (Lanczos on a float64 copy, tol 1e-10): {truth:.6f}; {args.repeats} interleaved repeats\n")
    header = (f"{'who':<10} {'what':<58} {'products':>8} {'median s':>8} {'best s':>7} {'speed, median':>13} {'speed, best':>11}"
              f" {'λ_max rel. err':>14}")
    print(header)
    print("-" * len(header))
    for rows in groups.values():
        first = times[rows[0][0], rows[0][2]] if rows[0][0] != "modeconn" else None
        for who, _, what in rows:
            t = times[who, what]
            value, products = results[who, what]
            speed = [f"{statistics.median(first) / statistics.median(t):.2f}×", f"{min(first) / min(t):.2f}×"] if first else ["n/a", "n/a"]
            err = f"{abs(value - truth) / abs(truth):.1e}" if value is not None else ""
            print(f"{who:<10} {what:<58} {products if products is not None else '':>8} {statistics.median(t):>8.2f} {min(t):>7.2f}"
                  f" {speed[0]:>13} {speed[1]:>11} {err:>14}")
        print()
    print("speed: the first PyHessian row of the group (trace: its 32 probes; λ_max: its 20 power iterations) divided by "
          "the row's time, as the ratio of the medians and of the best (fastest) of the repeats; > 1 is faster than "
          "PyHessian. Other jobs on the machine only ever add time, so the best of the repeats is the least disturbed.")


if __name__ == "__main__":
    main()
