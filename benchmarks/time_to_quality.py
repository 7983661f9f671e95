"""Time to quality on mnist5k: AGE against a VAE and an adversarial autoencoder, same wall clock.

Every model is a configuration of agekit's registry trained by the same loop (``Trainer.fit``,
``train.max_minutes`` = ``--minutes``): the same networks (agekit's ``dcgan`` 32 px pair, width
16, M = 16), the same data (mnist5k's train split at batch 32), the same optimiser (Adam 2e-4,
betas (0.5, 0.999)), the same thread count and the same wall-clock budget, run one after the
other in this process. Then each is scored by agekit's own metrics on the held-out split:

- ``sample-quality``: Frechet distance, precision and recall in the features of agekit's
  deterministic mnist5k classifier (2,000 samples against the test split);
- ``reconstruction``: test squared error of g(e(x)), next to the mean-image baseline.

The peers are the registry's ``vae`` and ``aae`` games (docs/games.md) with the textbook
objectives (pythae's defaults), on a Gaussian prior N(0, I) of the same M, so that the
comparison is about the objective, not the architecture or the loop:

- VAE (Kingma & Welling 2014): the encoder's 2M outputs are the posterior's mean and log-variance;
  loss = 0.5 * sum of squared errors + KL(q(z|x) || N(0, I)), per image (pythae's "mse" VAE):
  ``data_loss = "l2"`` (the per-element mean) with ``data_weight`` = D/2 (512 at 1x32x32);
- AAE (Makhzani et al. 2016): deterministic codes, the same reconstruction, plus a latent
  critic (MLP 16-256-256-1: ``critic_width = 256``, ``critic_depth = 2``) that tells N(0, I)
  samples from codes; the encoder fools it (``adversarial_weight = 1``, pythae's default).

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

import agekit
from agekit.components import DataSource, EvaluationContext
from agekit.config import ExperimentConfig, GameConfig, PriorConfig, load_config
from agekit.config.recipes import RECIPES
from agekit.evaluation.batchnorm import reestimate_batchnorm
from agekit.evaluation.scoring import default_cache_dir
from agekit.training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "mnist5k.toml"

#: The AAE's latent critic: two hidden layers of 256 ReLU units (the registry's default is 1000).
CRITIC_WIDTH = 256


def paper_game(config: ExperimentConfig) -> ExperimentConfig:
    """``config``'s data, networks and budget with the ``paper`` recipe's game."""
    game = RECIPES["paper"]["game"]
    paper = config.model_copy(deep=True)
    paper.game = GameConfig.model_validate(game)
    return paper


def peer_game(config: ExperimentConfig, game: str, data_size: int) -> ExperimentConfig:
    """``config``'s data, networks and optimiser with registry game ``game`` (``vae`` or ``aae``)
    on N(0, I) of the same M, reconstructing with 0.5 * the per-image sum of squared errors.

    ``l2`` averages over an image's ``data_size`` pixels, so ``data_weight`` = ``data_size`` / 2
    makes the data term 0.5 * SSE, pythae's "mse" reconstruction (the games' default weight,
    ``data_size``, would give the whole SSE)."""
    options: dict[str, Any] = {"data_weight": data_size / 2}
    if game == "aae":
        options.update(adversarial_weight=1.0, critic_width=CRITIC_WIDTH, critic_depth=2)
    peer = config.model_copy(deep=True)
    peer.prior = PriorConfig(name="gaussian", dim=config.prior.dim)
    peer.game = GameConfig.model_validate(
        {"name": game, "options": options, "data_loss": {"name": "l2"}}
    )
    return peer


def configurations(config: ExperimentConfig, data: DataSource) -> dict[str, ExperimentConfig]:
    """Each benchmarked model's configuration, by the name the table gives it."""
    data_size = math.prod(data.shape)
    return {
        "AGE": config,
        "AGE-paper": paper_game(config),
        "VAE": peer_game(config, "vae", data_size),
        "AAE": peer_game(config, "aae", data_size),
    }


def train(config: ExperimentConfig, args: argparse.Namespace, folder: str) -> dict[str, Any]:
    """``config`` trained by the Trainer for ``args.minutes`` of wall clock on the CPU."""
    config = config.model_copy(deep=True)
    config.train.max_minutes = args.minutes
    config.train.steps = 10**9  # the wall clock stops every run
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
    quality = agekit.create("metric", "sample-quality")(context).values
    statistics.load(trained["generator"], "codes")
    recon = agekit.create("metric", "reconstruction")(context).values
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


COLUMNS = ("steps", "fd", "recall", "speckle", "pixel_recall", "class_kl", "test_mse", "label_acc")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="wall-clock budget per model")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    config = load_config(CONFIG)
    batch = config.data.batch_size
    data = agekit.create("dataset", config.data.name, **config.data.options)
    models = configurations(config, data)
    print(
        f"mnist5k, dcgan width {config.backbone.options['width']}, M = {config.prior.dim}, "
        f"batch {batch}, {args.minutes:g} min per model, seeds {args.seeds}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    results: dict[str, list[dict[str, float]]] = {name: [] for name in models}
    for seed in args.seeds:
        args.seed = seed
        for name, model in models.items():
            torch.manual_seed(seed)
            started = time.perf_counter()
            with tempfile.TemporaryDirectory() as folder:
                trained = train(model, args, folder)
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
