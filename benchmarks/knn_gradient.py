"""The signal the kNN divergence gives an encoder, against gaussian-kl's (sphere prior).

Three measurements, each on the same batches for both divergences (both in nats per dimension,
the defaults; kozachenko-leonenko with k = 3):

1. Gradient scale per code. Codes are x = u / |u| with the gradient taken in u at |u| = 1, i.e.
   the tangent gradient an encoder ending in the sphere projection receives. Per-code gradient
   norms, median over codes and the largest over the median, averaged over batches, for codes
   from the prior, from a von Mises-Fisher cluster (KL to the prior 0.25 nats per dimension), and
   from the prior with one code replaced by a copy of another 1e-4 away ("pair": the pair's
   gradient over the median), and with 4 = k + 1 codes within 1e-4 ("4 near"). With k = 1 and
   ``relative_distance_floor = 0.1`` for comparison.
2. The value's spread over 50 batches against its mean, for prior codes and the vMF cluster: the
   signal-to-noise of D(e(x)) an encoder sees at one batch.
3. Direction consistency: codes = project(W h) for a linear map W (M x 32) and inputs h that make
   the codes moderately concentrated; the mean cosine between dD/dW on independent batches, and
   between the two divergences' dD/dW on the same batch.

    python benchmarks/knn_gradient.py            # about 20 s on 2 cores
    python benchmarks/knn_gradient.py --quick    # the test's smoke run: one cell, few batches
"""

from __future__ import annotations

import argparse
import functools
import itertools
import math
from collections.abc import Callable

import numpy as np
import torch
from scipy.stats import vonmises_fisher
from torch import Tensor

import agekit
from agekit.components import Divergence, Prior
from agekit.testing import vmf_kappa

#: vMF cluster of measurement 1 and 2: KL to the uniform sphere, in nats per dimension.
VMF_KL_PER_DIM = 0.25
#: Distance of the near-coincident pair (chordal, on the unit sphere).
PAIR_GAP = 1e-4
FLOOR = 0.1


def divergences() -> dict[str, Divergence]:
    def knn(k: int, floor: float = 0.0) -> Divergence:
        return agekit.create(
            "divergence", "kozachenko-leonenko", k=k, relative_distance_floor=floor
        )

    return {
        "gaussian-kl": agekit.create("divergence", "gaussian-kl"),
        "knn": knn(3),
        f"knn floor {FLOOR:g}": knn(3, FLOOR),
        "knn k=1": knn(1),
        f"knn k=1 floor {FLOOR:g}": knn(1, FLOOR),
    }


def code_gradients(divergence: Divergence, codes: Tensor, prior: Prior) -> tuple[float, Tensor]:
    """The value and the tangent gradient per code (B x M)."""
    raw = codes.detach().clone().requires_grad_(True)
    value = divergence(prior.project(raw), prior)
    (grad,) = torch.autograd.grad(value, raw)
    return float(value.detach()), grad


def vmf_codes(dim: int, batch: int, seed: int) -> Tensor:
    mu = np.zeros(dim)
    mu[0] = 1.0
    kappa = vmf_kappa(dim, VMF_KL_PER_DIM * dim)
    x = vonmises_fisher(mu, kappa).rvs(batch, random_state=np.random.default_rng(seed))
    return torch.as_tensor(np.asarray(x), dtype=torch.float64).reshape(batch, dim)


def prior_codes(prior: Prior, batch: int, seed: int) -> Tensor:
    return prior.sample(batch, torch.Generator().manual_seed(seed)).double()


def near_codes(prior: Prior, batch: int, seed: int, near: int) -> Tensor:
    """Prior codes with codes 1 .. near-1 replaced by code 0 moved PAIR_GAP along random
    tangents: ``near`` codes within about PAIR_GAP of each other."""
    gen = torch.Generator().manual_seed(seed)
    codes = prior.sample(batch, gen).double()
    for i in range(1, near):
        step = torch.randn(prior.dim, generator=gen, dtype=torch.float64)
        step -= (step @ codes[0]) * codes[0]
        codes[i] = codes[0] + PAIR_GAP * step / step.norm()
    return prior.project(codes)


def gradient_scale(cells: list[tuple[int, int]], batches: int) -> None:
    print(
        "1. per-code gradient norm (tangent): median over codes (x1e-3), and max/median; for "
        f"'pair' and '4 near' (codes {PAIR_GAP:g} apart), the near codes' largest / median. "
        f"Mean over {batches} batches."
    )
    names = list(divergences())
    header = f"{'M':>3} {'B':>3} {'codes':<6} | " + " | ".join(f"{name:>17}" for name in names)
    print(header)
    print(" " * 14 + "| " + " | ".join(f"{'median':>7} {'ratio':>9}" for _ in names))
    print("-" * len(header))
    for dim, batch in cells:
        prior = agekit.create("prior", "sphere", dim=dim)
        makers: dict[str, Callable[[int], Tensor]] = {
            "prior": functools.partial(prior_codes, prior, batch),
            "vMF": functools.partial(vmf_codes, dim, batch),
            "pair": functools.partial(near_codes, prior, batch, near=2),
            "4 near": functools.partial(near_codes, prior, batch, near=4),
        }
        for what, make in makers.items():
            cols = []
            for div in divergences().values():
                medians, ratios = [], []
                for s in range(batches):
                    _, grad = code_gradients(div, make(100 + s), prior)
                    norms = grad.norm(dim=1)
                    median = float(norms.median())
                    near = {"pair": 2, "4 near": 4}.get(what)
                    top = float(norms[:near].max() if near else norms.max())
                    medians.append(median)
                    ratios.append(top / median)
                cols.append(f"{np.mean(medians) * 1e3:>7.3g} {np.mean(ratios):>9.3g}")
            print(f"{dim:>3} {batch:>3} {what:<6} | " + " | ".join(cols))


def value_spread(cells: list[tuple[int, int]], batches: int) -> None:
    print(
        f"\n2. value over {batches} batches: mean +- std (nats per dimension); the vMF cluster's "
        f"true KL is {VMF_KL_PER_DIM} per dimension, gaussian-kl is a moment match, not that KL."
    )
    names = ["gaussian-kl", "knn"]
    header = f"{'M':>3} {'B':>3} | " + " | ".join(
        f"{n + ' prior':>17} {n + ' vMF':>17} {'(vMF-prior)/std':>15}" for n in names
    )
    print(header)
    print("-" * len(header))
    for dim, batch in cells:
        prior = agekit.create("prior", "sphere", dim=dim)
        cols = []
        for name in names:
            div = divergences()[name]
            with torch.no_grad():
                at_prior = np.array(
                    [
                        float(div(prior.sample(batch, torch.Generator().manual_seed(s)), prior))
                        for s in range(batches)
                    ]
                )
                at_vmf = np.array(
                    [float(div(vmf_codes(dim, batch, 500 + s), prior)) for s in range(batches)]
                )
            spread = math.sqrt((at_prior.var(ddof=1) + at_vmf.var(ddof=1)) / 2)
            cols.append(
                f"{at_prior.mean():>8.3f} +-{at_prior.std(ddof=1):<6.3f} "
                f"{at_vmf.mean():>8.3f} +-{at_vmf.std(ddof=1):<6.3f} "
                f"{(at_vmf.mean() - at_prior.mean()) / spread:>15.2f}"
            )
        print(f"{dim:>3} {batch:>3} | " + " | ".join(cols))


def direction_consistency(cells: list[tuple[int, int]], batches: int) -> None:
    print(
        f"\n3. dD/dW of a linear encoder, codes = project(W h), h ~ N(c e_1, I_32) (c = 2: "
        f"moderately concentrated codes): mean cosine over pairs of {batches} independent "
        "batches, and between the two divergences on the same batch"
    )
    names = ["gaussian-kl", "knn", f"knn floor {FLOOR:g}"]
    header = (
        f"{'M':>3} {'B':>3} {'D (gauss)':>10} | "
        + " ".join(f"{n:>15}" for n in names)
        + f" | {'cos(knn, gauss)':>15}"
    )
    print(header)
    print("-" * len(header))
    inputs = 32
    for dim, batch in cells:
        prior = agekit.create("prior", "sphere", dim=dim)
        gen = torch.Generator().manual_seed(dim)
        weight = torch.randn(dim, inputs, generator=gen, dtype=torch.float64) / math.sqrt(inputs)
        shift = torch.zeros(inputs, dtype=torch.float64)
        shift[0] = 2.0 * math.sqrt(inputs)
        grads: dict[str, list[Tensor]] = {n: [] for n in names}
        values = []
        for _ in range(batches):
            h = shift + torch.randn(batch, inputs, generator=gen, dtype=torch.float64)
            for name in names:
                w = weight.clone().requires_grad_(True)
                value = divergences()[name](prior.project(h @ w.T), prior)
                (g,) = torch.autograd.grad(value, w)
                grads[name].append(g.flatten())
                if name == "gaussian-kl":
                    values.append(float(value.detach()))

        def cos(a: Tensor, b: Tensor) -> float:
            return float(a @ b / (a.norm() * b.norm()))

        within = [
            np.mean([cos(a, b) for a, b in itertools.combinations(grads[n], 2)]) for n in names
        ]
        across = np.mean(
            [cos(a, b) for a, b in zip(grads["knn"], grads["gaussian-kl"], strict=True)]
        )
        print(
            f"{dim:>3} {batch:>3} {np.mean(values):>10.3f} | "
            + " ".join(f"{w:>15.3f}" for w in within)
            + f" | {across:>15.3f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one cell, 3 batches (smoke test)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.quick:
        cells, grad_batches, spread_batches = [(16, 32)], 2, 3
    else:
        cells, grad_batches, spread_batches = [(16, 32), (16, 64), (64, 64)], 10, 50
    print(f"torch {torch.__version__}, sphere prior, k = 3, float64")
    gradient_scale(cells, grad_batches)
    value_spread([c for c in cells if c[0] == 16] or cells, spread_batches)
    direction_consistency(cells, 3 if args.quick else 20)


if __name__ == "__main__":
    main()
