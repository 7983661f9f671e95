"""Log-likelihood throughput: images scored per second by agekit's AIS against a bare HMC loop.

agekit's ``log-likelihood`` metric estimates log p(x) by annealed importance sampling
(``agekit.metrics.ais.ais_log_likelihood``): N images x C chains, T annealing steps, one HMC move
of L leapfrog steps per intermediate distribution, the step size adapted per image. The bare loop
below does the same transitions written as plainly as possible: the same decoder (the metric's own
``model_decoder``), the same Gaussian observation model, the same 1 + (T - 1) L decoder gradient
evaluations on the same N C rows, the same step-size adaptation (agekit adapts, so the bare loop
does too), and draws its random numbers in the same order from the same seed, so it returns the
same estimates; it has no dataclasses, no input checks and no acceptance bookkeeping beyond what
the adaptation needs. Both are measured in this run, interleaved, each the best of ``--repeats``
rounds. The images are simulated from the decoder (x = g(u) + sigma noise, u ~ N(0, I)): what
is timed does not depend on them.

Decoders: ``mlp`` (default), agekit's ``mlp`` backbone from a 10-d Gaussian latent to 784 values
(2 hidden layers of 256), scored in its own units; ``dcgan``, the mnist5k configuration's pair
(32 px, width 16, 16-d sphere prior), scored on [0, 1] pixels as the metric scores images.

    python benchmarks/likelihood.py                  # N 16, C 8, T 50, L 5: 5-20 s on 2 cores
    python benchmarks/likelihood.py --images 100 --chains 16 --steps 500 --leapfrog 10
    python benchmarks/likelihood.py --backbone dcgan # about 40x the mlp's time per image

The second line is the metric's own defaults (n_images, chains, steps, leapfrog). One torch thread
unless ``--threads`` says otherwise.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable

import torch
from torch import Tensor

import agekit
from agekit.components import Generator, Prior
from agekit.metrics.ais import AISConfig, HMCSettings, ais_log_likelihood, annealing_schedule
from agekit.metrics.likelihood import model_decoder

Decoder = Callable[[Tensor], Tensor]


class CountingDecoder:
    """Wraps a decoder and counts its calls and the rows they decoded."""

    def __init__(self, decode: Decoder) -> None:
        self.decode, self.calls, self.rows = decode, 0, 0

    def __call__(self, u: Tensor) -> Tensor:
        self.calls += 1
        self.rows += u.shape[0]
        return self.decode(u)


def build_decoder(backbone: str, seed: int = 0) -> tuple[Decoder, int, int]:
    """(decode, latent size, data size) for the named setting; generator in eval mode."""
    torch.manual_seed(seed)
    prior: Prior
    generator: Generator
    if backbone == "mlp":
        prior = agekit.create("prior", "gaussian", dim=10)
        pair = agekit.create("backbone", "mlp", hidden=256, depth=2).build((784,), 10, prior)
        generator, unit_pixels, size = pair.generator, False, 784
    elif backbone == "dcgan":
        prior = agekit.create("prior", "sphere", dim=16)
        pair = agekit.create("backbone", "dcgan", width=16).build((1, 32, 32), 16, prior)
        generator, unit_pixels, size = pair.generator, True, 32 * 32
    else:
        raise ValueError(f"backbone must be 'mlp' or 'dcgan', got {backbone!r}")
    generator.eval().requires_grad_(False)
    return model_decoder(generator, prior, unit_pixels), prior.dim, size


def simulated_images(decode: Decoder, n: int, latent_dim: int, sigma: float, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(n, latent_dim, generator=g, dtype=torch.float64)
    with torch.no_grad():
        mean = decode(u).flatten(1).double()
    return mean + sigma * torch.randn(mean.shape, generator=g, dtype=torch.float64)


def agekit_ais(
    decode: Decoder, x: Tensor, sigma: float, latent_dim: int, config: AISConfig, seed: int
) -> Tensor:
    rng = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # as the metric calls it: the networks under no_grad
        return ais_log_likelihood(decode, x, sigma, latent_dim, config, rng).log_likelihood


def bare_ais(
    decode: Decoder, x: Tensor, sigma: float, latent_dim: int, config: AISConfig, seed: int
) -> Tensor:
    """Forward AIS with HMC, written out: the transitions of ``agekit.metrics.ais.anneal``."""
    with torch.no_grad():
        return _bare_ais(decode, x, sigma, latent_dim, config, seed)


def _bare_ais(
    decode: Decoder, x: Tensor, sigma: float, latent_dim: int, config: AISConfig, seed: int
) -> Tensor:
    rng = torch.Generator().manual_seed(seed)
    hmc, chains, n = config.hmc, config.chains, x.shape[0]
    target = x.flatten(1).double().repeat_interleave(chains, 0)
    half_precision = 0.5 / sigma**2
    log_norm = -target.shape[1] * (math.log(sigma) + 0.5 * math.log(2 * math.pi))

    def log_lik_and_grad(u: Tensor) -> tuple[Tensor, Tensor]:
        with torch.enable_grad():
            u = u.detach().requires_grad_(True)
            mean = decode(u).flatten(1).double()
            ll = log_norm - half_precision * (target - mean).square().sum(1)
            (grad,) = torch.autograd.grad(ll.sum(), u)
        return ll.detach(), grad

    betas = annealing_schedule(config.steps, config.schedule).tolist()
    u = torch.randn(n * chains, latent_dim, generator=rng, dtype=torch.float64)
    ll, grad = log_lik_and_grad(u)
    log_w = torch.zeros(n * chains, dtype=torch.float64)
    step = torch.full((n,), hmc.initial_step, dtype=torch.float64)
    rate = torch.full((n,), hmc.target_acceptance, dtype=torch.float64)
    for t in range(1, len(betas)):
        log_w += (betas[t] - betas[t - 1]) * ll
        if t == len(betas) - 1:
            break
        beta, eps = betas[t], step.repeat_interleave(chains).unsqueeze(1)
        p0 = torch.randn(u.shape, generator=rng, dtype=torch.float64)
        q, p = u, p0 - 0.5 * eps * (u - beta * grad)
        for index in range(hmc.leapfrog):
            q = q + eps * p
            ll_new, grad_new = log_lik_and_grad(q)
            p = p - (0.5 * eps if index == hmc.leapfrog - 1 else eps) * (q - beta * grad_new)
        h_old = 0.5 * (u.square().sum(1) + p0.square().sum(1)) - beta * ll
        h_new = 0.5 * (q.square().sum(1) + p.square().sum(1)) - beta * ll_new
        uniform = torch.rand(u.shape[0], generator=rng, dtype=torch.float64)
        accept = uniform.log() < h_old - h_new  # a NaN energy compares False: rejected
        u = torch.where(accept.unsqueeze(1), q, u)
        ll = torch.where(accept, ll_new, ll)
        grad = torch.where(accept.unsqueeze(1), grad_new, grad)
        rate = hmc.smoothing * rate + (1 - hmc.smoothing) * accept.double().view(n, chains).mean(1)
        grown = torch.where(rate > hmc.target_acceptance, hmc.step_increase, hmc.step_decrease)
        step = (step * grown).clamp(hmc.step_min, hmc.step_max)
    return torch.logsumexp(log_w.view(n, chains), 1) - math.log(chains)


def best_seconds(candidates: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Best wall time of each candidate over ``repeats`` interleaved rounds (call them once
    before, as a warm-up)."""
    best = dict.fromkeys(candidates, math.inf)
    for _ in range(repeats):
        for name, fn in candidates.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", choices=["mlp", "dcgan"], default="mlp")
    parser.add_argument("--images", type=int, default=16, help="N, images scored")
    parser.add_argument("--chains", type=int, default=8, help="C, chains per image")
    parser.add_argument("--steps", type=int, default=50, help="T, annealing steps")
    parser.add_argument("--leapfrog", type=int, default=5, help="L, leapfrog steps per move")
    parser.add_argument("--sigma", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: its default)")
    args = parser.parse_args(argv)
    if args.threads:  # one thread by default: a busy neighbour stalls multi-threaded kernels
        torch.set_num_threads(args.threads)
    decode, latent_dim, size = build_decoder(args.backbone)
    x = simulated_images(decode, args.images, latent_dim, args.sigma, seed=1)
    config = AISConfig(args.chains, args.steps, "sigmoid", HMCSettings(leapfrog=args.leapfrog))
    ours = agekit_ais(decode, x, args.sigma, latent_dim, config, 2)  # also the warm-up
    bare = bare_ais(decode, x, args.sigma, latent_dim, config, 2)
    seconds = best_seconds(
        {
            "agekit": lambda: agekit_ais(decode, x, args.sigma, latent_dim, config, 2),
            "bare": lambda: bare_ais(decode, x, args.sigma, latent_dim, config, 2),
        },
        args.repeats,
    )
    rate = {name: args.images / s for name, s in seconds.items()}
    evaluations = 1 + (args.steps - 1) * args.leapfrog
    print(
        f"{args.backbone} decoder ({latent_dim}-d latent -> {size} values), torch "
        f"{torch.__version__}, torch threads {torch.get_num_threads()}; N {args.images} images x "
        f"C {args.chains} chains x T {args.steps} steps x L {args.leapfrog} leapfrog: "
        f"{evaluations} decoder gradient evaluations of {args.images * args.chains} rows"
    )
    print(f"same estimates: max |agekit - bare| = {float((ours - bare).abs().max()):.3g} nats")
    print(f"agekit AIS : {rate['agekit']:8.2f} images/s  (best of {args.repeats})")
    print(f"bare loop  : {rate['bare']:8.2f} images/s")
    print(f"ratio agekit/bare = {rate['agekit'] / rate['bare']:.3f}")


if __name__ == "__main__":
    main()
