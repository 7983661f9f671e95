"""Inception score and Inception FID, from Inception-v3 weights the user points to (never fetched).

    [[settings]]
    metrics = [{ name = "inception", options = { weights = "/data/inception_v3_google.pth" } }]

``weights`` is a state dict of torchvision's ``inception_v3`` (for example torchvision's own
``inception_v3_google-*.pth`` copied to the machine), loaded with ``torch.load(weights_only=True)``.
The scores follow torchvision's network, which is close to but not the TF-slim graph of the
original papers: compare them with numbers computed the same way, not with published ones.
For numbers comparable with published FID/IS use ``fid-inception`` (:mod:`agekit.metrics.fidelity`).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch
from torch import Tensor, nn

from agekit.components import Direction, EvaluationContext, Metric, MetricResult
from agekit.metrics.classifier import generate_samples, load_split
from agekit.metrics.features import frechet_distance

#: Inception-v3's input size and ImageNet normalisation (torchvision's preprocessing).
INPUT_SIZE = 299
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


def load_inception(weights: str | Path, device: torch.device | str = "cpu") -> nn.Module:
    from torchvision.models import inception_v3

    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no Inception-v3 weights there; agekit never downloads weights. Copy a "
            "torchvision inception_v3 state dict (e.g. inception_v3_google-*.pth) to this path"
        )
    network = inception_v3(weights=None, aux_logits=True, init_weights=False)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        network.load_state_dict(state)
    except Exception as exc:
        raise ValueError(f"{path}: not a torchvision inception_v3 state dict: {exc}") from None
    return network.eval().to(device)


def _prepare(images: Tensor) -> Tensor:
    """[-1, 1] images (grey or RGB, any size) -> normalised RGB 299 x 299."""
    from torchvision.transforms.v2 import functional as F

    x = (images.float() + 1) / 2
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    x = F.resize(x, [INPUT_SIZE, INPUT_SIZE], antialias=True)
    return F.normalize(x, list(_MEAN), list(_STD))


@torch.no_grad()
def inception_outputs(
    network: nn.Module, images: Tensor, batch_size: int = 50
) -> tuple[np.ndarray, np.ndarray]:
    """(pool3 features (N, 2048), class probabilities (N, 1000)), float64."""
    device = next(network.parameters()).device
    pooled: list[Tensor] = []
    captured: list[Tensor] = []
    hook = network.avgpool.register_forward_hook(  # type: ignore[union-attr]
        lambda _m, _i, out: captured.append(out.flatten(1))
    )
    probabilities: list[Tensor] = []
    try:
        for batch in images.split(batch_size):
            logits = network(_prepare(batch).to(device))
            probabilities.append(torch.softmax(logits.double(), dim=1).cpu())
            pooled.append(captured.pop().double().cpu())
    finally:
        hook.remove()
    return torch.cat(pooled).numpy(), torch.cat(probabilities).numpy()


def inception_score(probabilities: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """exp(E_x KL(p(y|x) || p(y))), mean and standard deviation over ``splits`` parts."""
    scores = []
    for part in np.array_split(probabilities, splits):
        marginal = part.mean(axis=0, keepdims=True)
        kl = part * (np.log(np.clip(part, 1e-12, None)) - np.log(np.clip(marginal, 1e-12, None)))
        scores.append(float(np.exp(kl.sum(axis=1).mean())))
    return float(np.mean(scores)), float(np.std(scores))


class Inception(Metric):
    """Inception score of generator samples and FID between them and the test split."""

    # No headline keys yet: declaring inception_score ("higher") and fid_inception ("lower")
    # would add their comparisons to a study's Holm family and so change the adjusted p-values of
    # existing reports. Reports list the keys after the headline keys.
    headline: ClassVar[dict[str, Direction]] = {}
    headline_order: ClassVar[int] = 50

    def __init__(
        self,
        weights: str,
        n_samples: int = 5000,
        splits: int = 10,
        batch_size: int = 50,
        bn_mode: Literal["eval", "train"] = "eval",
    ) -> None:
        if n_samples < splits or splits < 1 or batch_size < 1:
            raise ValueError("need n_samples >= splits >= 1 and a positive batch_size")
        self.weights = weights
        self.n_samples = n_samples
        self.splits = splits
        self.batch_size = batch_size
        self.bn_mode = bn_mode

    def __call__(self, context: EvaluationContext) -> MetricResult:
        if context.data.kind != "image":
            raise ValueError(f"inception scores need images; {context.dataset_name!r} is not")
        network = load_inception(self.weights, context.device)
        x_real, _ = load_split(context.data, "test", self.n_samples, seed=context.seed)
        x_fake = generate_samples(context, self.n_samples, self.batch_size, self.bn_mode)
        real_features, _ = inception_outputs(network, x_real, self.batch_size)
        fake_features, fake_probabilities = inception_outputs(network, x_fake, self.batch_size)
        score, score_std = inception_score(fake_probabilities, self.splits)
        values = {
            "inception_score": score,
            "inception_score_std": score_std,
            "fid_inception": frechet_distance(real_features, fake_features),
        }
        return MetricResult(
            values,
            protocol={
                "metric": "inception",
                "network": "torchvision inception_v3, pool3 (2048-d) and softmax",
                "weights": str(Path(self.weights).resolve()),
                "n_fake": int(x_fake.shape[0]),
                "n_real": int(x_real.shape[0]),
                "reference_split": "test",
                "splits": self.splits,
                "resize": f"bilinear antialiased to {INPUT_SIZE}, grey repeated to RGB",
                "seed": context.seed,
                "bn_mode": self.bn_mode,
            },
        )
