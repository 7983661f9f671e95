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

AGE trains with ``configs/mnist5k.toml``; "AGE-paper" is the same data and networks with the
``paper`` recipe's game (the bare eq. 5-6: no margin, no generator data term, lambda 250 and mu 5,
the paper's 1000 and 10 on the reference code's scale). Before scoring, every model's batch-norm
statistics are re-estimated on real training images (encoder) and prior samples (generator), as
``agekit.evaluation.scoring`` does.

    python benchmarks/time_to_quality.py                        # 3 minutes per model, 1 seed
    python benchmarks/time_to_quality.py --minutes 2 --seeds 0 1 2

The printed ratios are peer / AGE (FD: > 1 means AGE is better; MSE likewise). Test MSE is on
[0, 1] pixels.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

import agekit
from agekit.components import DataSource, EvaluationContext, Prior
from agekit.config import ExperimentConfig, GameConfig, load_config
from agekit.config.recipes import RECIPES
from agekit.datasets.stream import BatchStream
from agekit.evaluation.batchnorm import reestimate_batchnorm
from agekit.evaluation.scoring import default_cache_dir
from agekit.training.trainer import Trainer

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


def paper_game(config: ExperimentConfig) -> ExperimentConfig:
    """``config``'s data, networks and budget with the ``paper`` recipe's game and optimiser."""
    game = RECIPES["paper"]["game"]
    paper = config.model_copy(deep=True)
    paper.game = GameConfig.model_validate(game)
    return paper


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
    _, statistics = reestimate_batchnorm(
        trained["encoder"], trained["generator"], trained["prior"], data, seed=seed
    )
    assert statistics is not None  # mnist5k is unconditional
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
    # As agekit.evaluation.scoring does: generator statistics for what each metric decodes.
    statistics.load(trained["generator"], "prior")
    quality = agekit.create("metric", "sample-quality")(context)
    statistics.load(trained["generator"], "codes")
    recon = agekit.create("metric", "reconstruction")(context)
    return {
        "steps": trained["steps"],
        "fd": quality["fd_classifier"],
        "precision": quality["precision"],
        "recall": quality["recall"],
        "speckle": quality["speckle_ratio"],
        "pixel_recall": quality["pixel_recall"],
        "class_kl": quality["class_kl_uniform"],
        # [-1, 1] pixels -> [0, 1]: a quarter of the squared error.
        "test_mse": recon["recon_mse"] / 4,
        "label_acc": recon["recon_label_accuracy"],
        "mean_image_mse": recon["mean_image_mse"] / 4,
    }


MODELS = ("AGE", "AGE-paper", "VAE", "AAE")
COLUMNS = ("steps", "fd", "recall", "speckle", "pixel_recall", "class_kl", "test_mse", "label_acc")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="wall-clock budget per model")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds")
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
        f"{args.minutes:g} min per model, seeds {args.seeds}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    results: dict[str, list[dict[str, float]]] = {name: [] for name in MODELS}
    for seed in args.seeds:
        args.seed = seed
        for name in MODELS:
            torch.manual_seed(seed)
            started = time.perf_counter()
            if name.startswith("AGE"):
                game = config if name == "AGE" else paper_game(config)
                with tempfile.TemporaryDirectory() as folder:
                    trained = train_age(game, args, folder)
            else:
                stream = BatchStream(data, batch, torch.device("cpu"), seed=seed)
                trainer = train_vae if name == "VAE" else train_aae
                trained = trainer(data, stream, args)
            row = score(trained, data, seed)
            row["train_s"] = time.perf_counter() - started
            results[name].append(row)
            print(f"  seed {seed} {name}: " + _cells(row), flush=True)

    header = f"{'model':<10} " + " ".join(f"{c:>14}" for c in COLUMNS) + f" | {'FD / AGE':>8}"
    print(header)
    print("-" * len(header))
    age_fd = float(np.mean([r["fd"] for r in results["AGE"]]))
    for name, rows in results.items():
        fd = float(np.mean([r["fd"] for r in rows]))
        print(f"{name:<10} " + _cells_mean(rows) + f" | {fd / age_fd:>8.2f}")
    mean_mse = results["AGE"][0]["mean_image_mse"]
    print(f"mean +- sample std over {len(args.seeds)} seed(s); mean-image test MSE {mean_mse:.4f}")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    if not all(math.isfinite(r["fd"]) for rows in results.values() for r in rows):
        raise SystemExit("a model produced non-finite samples")


def _cells(row: dict[str, float]) -> str:
    return " ".join(f"{c} {row[c]:.4g}" for c in COLUMNS)


def _cells_mean(rows: list[dict[str, float]]) -> str:
    cells = []
    for column in COLUMNS:
        values = np.array([r[column] for r in rows], dtype=np.float64)
        spread = values.std(ddof=1) if len(values) > 1 else 0.0
        cells.append(f"{values.mean():>7.4g} +-{spread:<5.2g}")
    return " ".join(cells)


if __name__ == "__main__":
    main()
