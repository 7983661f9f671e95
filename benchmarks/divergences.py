"""Divergence cost: forward + backward of the built-in divergences against k-NN libraries.

For each batch size B and latent dimension M (codes uniform on the sphere, k = 3):

- ``gaussian-kl`` and ``kozachenko-leonenko`` (sphere prior), forward + backward, float32 torch
  (the training dtype);
- agekit's k-NN search alone (``kth_neighbour_indices``, torch float32, no autograd);
- the k-NN search alone (k + 1 neighbours, the point itself included, same data as float64 numpy)
  with scikit-learn's ``NearestNeighbors`` (fit + kneighbors) and scipy's ``cKDTree`` (build +
  query), the references. Two ratios: the whole differentiable estimator (search, cap measure,
  value and gradient) against a library doing only the search, and search against search.

Every timing is the best of several calls after a warm-up, the candidates of one cell taking turns
round by round, so that another process on the machine slows all of them alike and the minimum
(what ``timeit`` recommends) discards the calls it interrupted.

Then the divergence's share of a training iteration: one ``Trainer.train_step`` of the 32 px
dcgan pair at B = 64 against the divergence alone, times the 4 divergence evaluations an iteration
makes (D(e(x)) and D(e(g(z))) in the encoder step, D(e(g(z))) in each of the 2 generator steps).

    python benchmarks/divergences.py            # B <= 4096, M in {16, 64}: about 1 minute
    python benchmarks/divergences.py --full     # B up to 8192, M in {16, 64, 128}
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import time
from collections.abc import Callable

import numpy as np
import torch

import agekit
from agekit.config import parse_config
from agekit.divergences.kozachenko_leonenko import kth_neighbour_indices
from agekit.training.trainer import Trainer

K = 3


def best_of_rounds(
    candidates: dict[str, Callable[[], object]], budget: float = 1.0, max_rounds: int = 50
) -> dict[str, float]:
    """Seconds per call for each candidate: the best of up to ``max_rounds`` rounds, one call of
    each candidate per round, after one warm-up call each."""
    for fn in candidates.values():
        fn()
    best = dict.fromkeys(candidates, float("inf"))
    spent = 0.0
    rounds = 0
    while rounds < max_rounds and (spent < budget or rounds < 3):
        for name, fn in candidates.items():
            start = time.perf_counter()
            fn()
            elapsed = time.perf_counter() - start
            best[name] = min(best[name], elapsed)
            spent += elapsed
        rounds += 1
    return best


def forward_backward(name: str, codes: torch.Tensor, prior: agekit.Prior) -> Callable[[], None]:
    divergence = agekit.create("divergence", name, **({"k": K} if "leonenko" in name else {}))

    def run() -> None:
        leaf = codes.detach().requires_grad_(True)
        divergence(leaf, prior).backward()

    return run


def knn_timers(x: np.ndarray) -> dict[str, Callable[[], object]]:
    from scipy.spatial import cKDTree
    from sklearn.neighbors import NearestNeighbors

    return {
        "sklearn": lambda: NearestNeighbors(n_neighbors=K + 1).fit(x).kneighbors(x),
        "ckdtree": lambda: cKDTree(x).query(x, k=K + 1),
    }


def grid(batches: list[int], dims: list[int]) -> None:
    print(
        f"forward+backward (torch float32), k-NN search alone (torch float32; libraries float64),"
        f" k = {K}, ms, best of rounds"
    )
    header = (
        f"{'B':>6} {'M':>4} | {'gauss-KL':>9} {'K-L':>9} | {'search':>9} {'sklearn':>9} "
        f"{'cKDTree':>9} | {'K-L/sklearn':>11} {'K-L/cKDTree':>11} | {'search/best lib':>15}"
    )
    print(header)
    print("-" * len(header))
    for m in dims:
        prior = agekit.create("prior", "sphere", dim=m)
        for b in batches:
            codes = prior.sample(b, torch.Generator().manual_seed(b * 1000 + m))
            x = codes.double().numpy()
            budget = 1.0 if b <= 1024 else 3.0
            t = best_of_rounds(
                {
                    "gauss": forward_backward("gaussian-kl", codes, prior),
                    "kl": forward_backward("kozachenko-leonenko", codes, prior),
                    "search": functools.partial(kth_neighbour_indices, codes, K),
                    **knn_timers(x),
                },
                budget=budget,
            )
            best_library = min(t["sklearn"], t["ckdtree"])
            print(
                f"{b:>6} {m:>4} | {t['gauss'] * 1e3:>9.2f} {t['kl'] * 1e3:>9.2f} | "
                f"{t['search'] * 1e3:>9.2f} {t['sklearn'] * 1e3:>9.2f} "
                f"{t['ckdtree'] * 1e3:>9.2f} | "
                f"{t['kl'] / t['sklearn']:>11.2f} {t['kl'] / t['ckdtree']:>11.2f} | "
                f"{t['search'] / best_library:>15.2f}"
            )


def share_of_step(width: int, dim: int, steps: int) -> None:
    raw = {
        "name": "bench",
        "data": {"name": "mnist5k", "batch_size": 64, "options": {"image_size": 32}},
        "prior": {"name": "sphere", "dim": dim},
        "backbone": {"name": "dcgan", "options": {"width": width}},
        "train": {"steps": steps, "device": "cpu"},
    }
    print(f"\nshare of one training iteration: dcgan 32 px, width {width}, B = 64, M = {dim}")
    header = f"{'divergence':<22} {'iteration ms':>12} {'4 x D fwd+bwd ms':>17} {'share':>7}"
    print(header)
    print("-" * len(header))
    for name in ("gaussian-kl", "kozachenko-leonenko"):
        raw["divergence"] = {"name": name}
        with tempfile.TemporaryDirectory() as folder:
            trainer = Trainer(parse_config(raw), folder)
            trainer.train_step()  # warm-up
            start = time.perf_counter()
            for _ in range(steps):
                trainer.train_step()
            iteration = (time.perf_counter() - start) / steps
            with torch.no_grad():
                x = trainer.stream.next()
                codes = trainer.encoder(x)
        alone = best_of_rounds({name: forward_backward(name, codes, trainer.model.prior)})[name]
        share = 4 * alone / iteration
        print(f"{name:<22} {iteration * 1e3:>12.1f} {4 * alone * 1e3:>17.2f} {share:>7.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="B up to 8192, M up to 128")
    parser.add_argument("--steps", type=int, default=3, help="iterations timed for the share")
    parser.add_argument(
        "--width", type=int, default=16, help="dcgan width for the share (configs/: 16)"
    )
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.full:
        grid([64, 256, 1024, 4096, 8192], [16, 64, 128])
    else:
        grid([64, 256, 1024, 4096], [16, 64])
    share_of_step(args.width, 64, args.steps)


if __name__ == "__main__":
    main()
