"""Time to quality on mnist5k: AGE against a VAE and an adversarial autoencoder, same wall clock.

Every model gets the same networks (agekit's ``dcgan`` 32 px pair, width 16, M = 16), the same data
(mnist5k's train split at batch 32), the same optimiser (Adam 2e-4, betas (0.5, 0.999)), the same
thread count and the same wall-clock budget, run one after the other in this process. Then each is
scored by agekit's own metrics on the held-out split:

- ``sample-quality``: Frechet distance, precision and recall in the features of agekit's
  deterministic mnist5k classifier (2,000 samples against the test split);
- ``reconstruction``: test L1 of g(e(x)), next to the mean-image baseline.

The peers are the textbook objectives (pythae's defaults, written here on the same networks so the
comparison is about the objective, not the architecture):

- VAE (Kingma & Welling 2014): the encoder's 2M outputs are the posterior's mean and log-variance;
  loss = 0.5 * sum of squared errors + KL(q(z|x) || N(0, I)), per image (pythae's "mse" VAE);
- AAE (Makhzani et al. 2016): deterministic codes, the same reconstruction, plus a latent
  discriminator (MLP 16-256-256-1) that tells N(0, I) samples from codes; the encoder fools it
  (weight 1, pythae's default).

AGE trains with ``configs/mnist5k.toml`` (the shipped 10-minute configuration) and the budget below.

    python benchmarks/time_to_quality.py               # 3 minutes per model, about 10 minutes
    python benchmarks/time_to_quality.py --minutes 10  # the mnist5k configuration's own budget

The printed ratios are peer / AGE (FD: > 1 means AGE is better; L1 likewise).
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

import agekit
from agekit.components import DataSource, EvaluationContext, Prior
from agekit.config import ExperimentConfig, load_config
from agekit.evaluation import default_cache_dir
from agekit.trainer import BatchStream, Trainer

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "mnist5k.toml"


class VAEEncoder(nn.Module):
    """Wraps a dcgan encoder with 2M raw outputs; ``forward`` gives the posterior mean."""

    def __init__(self, trunk: nn.Module, dim: int) -> None:
        super().__init__()
        self.trunk = trunk
        self.dim = dim

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out = self.trunk(x)
        return out[:, : self.dim], out[:, self.dim :]

    def forward(self, x: Tensor, condition: Tensor | None = None) -> Tensor:
        return self.posterior(x)[0]


def build_pair(data: DataSource, dim: int, encoder_dim: int, width: int) -> tuple[Any, Any, Prior]:
    """The dcgan pair on a Gaussian prior (identity projection), encoder with ``encoder_dim``.

    Channels-last, as the trainer runs AGE's pair (``train.channels_last``), so that every model
    gets the same speed per pass.
    """
    backbone = agekit.create("backbone", "dcgan", width=width)
    wide_prior = agekit.create("prior", "gaussian", dim=encoder_dim)
    encoder = backbone.build(data.shape, encoder_dim, wide_prior).encoder
    prior = agekit.create("prior", "gaussian", dim=dim)
    generator = backbone.build(data.shape, dim, prior).generator
    for net in (encoder, generator):
        net.to(memory_format=torch.channels_last)
    return encoder, generator, prior


def next_batch(stream: BatchStream) -> Tensor:
    return stream.next().contiguous(memory_format=torch.channels_last)


def adam(modules: list[nn.Module], lr: float) -> torch.optim.Adam:
    """Adam with the betas AGE trains with here (the config default, (0.5, 0.999))."""
    return torch.optim.Adam([q for m in modules for q in m.parameters()], lr=lr, betas=(0.5, 0.999))


def sum_squared_error(x: Tensor, recon: Tensor) -> Tensor:
    return 0.5 * (recon - x).square().flatten(1).sum(1).mean()


def train_vae(data: DataSource, stream: BatchStream, args: argparse.Namespace) -> dict[str, Any]:
    trunk, generator, prior = build_pair(data, args.dim, 2 * args.dim, args.width)
    encoder = VAEEncoder(trunk, args.dim)
    optimiser = adam([encoder, generator], args.lr)
    deadline, steps = time.perf_counter() + 60 * args.minutes, 0
    while time.perf_counter() < deadline:
        x = next_batch(stream)
        mean, log_var = encoder.posterior(x)
        z = mean + torch.randn_like(mean) * torch.exp(0.5 * log_var)
        kl = 0.5 * (mean.square() + log_var.exp() - 1 - log_var).sum(1).mean()
        loss = sum_squared_error(x, generator(z)) + kl
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        steps += 1
    return {"encoder": encoder, "generator": generator, "prior": prior, "steps": steps}


def train_aae(data: DataSource, stream: BatchStream, args: argparse.Namespace) -> dict[str, Any]:
    encoder, generator, prior = build_pair(data, args.dim, args.dim, args.width)
    critic = nn.Sequential(
        nn.Linear(args.dim, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 1)
    )
    autoencoder = adam([encoder, generator], args.lr)
    critic_optimiser = adam([critic], args.lr)
    deadline, steps = time.perf_counter() + 60 * args.minutes, 0
    while time.perf_counter() < deadline:
        x = next_batch(stream)
        codes = encoder(x)
        fooled = F.binary_cross_entropy_with_logits(critic(codes), torch.ones(x.shape[0], 1))
        loss = sum_squared_error(x, generator(codes)) + fooled
        autoencoder.zero_grad(set_to_none=True)
        loss.backward()
        autoencoder.step()
        prior_codes = torch.randn(x.shape[0], args.dim)
        logits = critic(torch.cat([prior_codes, codes.detach()]))
        labels = torch.cat([torch.ones(x.shape[0], 1), torch.zeros(x.shape[0], 1)])
        critic_loss = F.binary_cross_entropy_with_logits(logits, labels)
        critic_optimiser.zero_grad(set_to_none=True)
        critic_loss.backward()
        critic_optimiser.step()
        steps += 1
    return {"encoder": encoder, "generator": generator, "prior": prior, "steps": steps}


def train_age(config: ExperimentConfig, args: argparse.Namespace, folder: str) -> dict[str, Any]:
    config = config.model_copy(deep=True)
    config.train.max_minutes = args.minutes
    config.train.steps = 10**9
    config.train.device = "cpu"
    config.train.seed = args.seed
    config.train.checkpoint_every = config.train.image_every = 10**9
    trainer = Trainer(config, folder)
    trainer.fit()
    model = trainer.model
    return {
        "encoder": model.pair.encoder,
        "generator": model.pair.generator,
        "prior": model.prior,
        "steps": trainer.step,
    }


def score(trained: dict[str, Any], data: DataSource, seed: int) -> dict[str, float]:
    context = EvaluationContext(
        encoder=trained["encoder"],
        generator=trained["generator"],
        prior=trained["prior"],
        data=data,
        dataset_name="mnist5k",
        device=torch.device("cpu"),
        seed=seed,
        cache_dir=default_cache_dir(),
        divergences={},
    )
    quality = agekit.create("metric", "sample-quality")(context)
    recon = agekit.create("metric", "reconstruction")(context)
    return {
        "steps": trained["steps"],
        "fd": quality["fd_classifier"],
        "precision": quality["precision"],
        "recall": quality["recall"],
        "test_l1": recon["recon_l1"],
        "mean_image_l1": recon["mean_image_l1"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="wall-clock budget per model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    config = load_config(CONFIG)
    args.dim = config.prior.dim
    args.width = config.backbone.options["width"]
    args.lr = config.optim.lr
    batch = config.data.batch_size
    data = agekit.create("dataset", config.data.name, **config.data.options)
    print(
        f"mnist5k, dcgan width {args.width}, M = {args.dim}, batch {batch}, "
        f"{args.minutes:g} min per model, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    results: dict[str, dict[str, float]] = {}
    for name in ("AGE", "VAE", "AAE"):
        torch.manual_seed(args.seed)
        started = time.perf_counter()
        if name == "AGE":
            with tempfile.TemporaryDirectory() as folder:
                trained = train_age(config, args, folder)
        else:
            stream = BatchStream(data, batch, torch.device("cpu"), seed=args.seed)
            trainer = train_vae if name == "VAE" else train_aae
            trained = trainer(data, stream, args)
        results[name] = score(trained, data, args.seed)
        results[name]["train_s"] = time.perf_counter() - started
        print(f"  {name}: {results[name]['steps']} steps", flush=True)

    age = results["AGE"]
    header = (
        f"{'model':<6} {'steps':>7} {'FD':>8} {'precision':>9} {'recall':>7} "
        f"{'test L1':>8} | {'FD / AGE':>8} {'L1 / AGE':>8}"
    )
    print(header)
    print("-" * len(header))
    for name, r in results.items():
        print(
            f"{name:<6} {int(r['steps']):>7} {r['fd']:>8.1f} {r['precision']:>9.3f} "
            f"{r['recall']:>7.3f} {r['test_l1']:>8.3f} | {r['fd'] / age['fd']:>8.2f} "
            f"{r['test_l1'] / age['test_l1']:>8.2f}"
        )
    print(f"mean-image test L1: {age['mean_image_l1']:.3f}")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    if not all(math.isfinite(r["fd"]) for r in results.values()):
        raise SystemExit("a model produced non-finite samples")


if __name__ == "__main__":
    main()
