"""Colorization metrics for conditional models (x = ab, condition = L): diversity, colourfulness
and ab reconstruction, on held-out data."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from torch import Tensor

from agekit.components import DataSource, Direction, EvaluationContext, Metric, MetricResult
from agekit.metrics.classifier import network_mode
from agekit.util.lab import AB_SCALE, network_to_rgb


def colourfulness(rgb: Tensor) -> Tensor:
    """Hasler & Suesstrunk (2003) colourfulness M of RGB images in [0, 1], (..., 3, H, W) -> (...).

    On 0-255 values: rg = R - G, yb = (R + G) / 2 - B,
    M = sqrt(std(rg)^2 + std(yb)^2) + 0.3 sqrt(mean(rg)^2 + mean(yb)^2) (population std over
    pixels). A grey image scores 0.
    """
    rgb = rgb.double() * 255.0
    red, green, blue = rgb.unbind(-3)
    rg = (red - green).flatten(-2)
    yb = (0.5 * (red + green) - blue).flatten(-2)
    spread = (rg.var(-1, unbiased=False) + yb.var(-1, unbiased=False)).sqrt()
    centre = (rg.mean(-1).square() + yb.mean(-1).square()).sqrt()
    return spread + 0.3 * centre


def pairwise_ab_distance(ab: Tensor) -> Tensor:
    """Diversity of K colorizations of each of N images: ab (N, K, 2, H, W) in Lab units -> (N,).

    The mean over the K(K-1)/2 pairs of the per-pixel Euclidean ab distance averaged over pixels.
    Identical colorizations give 0.
    """
    if ab.ndim != 5 or ab.shape[1] < 2:
        raise ValueError(f"expected (N, K >= 2, 2, H, W) colorizations, got {tuple(ab.shape)}")
    k = ab.shape[1]
    first, second = torch.triu_indices(k, k, offset=1)
    diff = ab[:, first] - ab[:, second]  # (N, P, 2, H, W)
    return diff.double().square().sum(2).sqrt().mean(dim=(-2, -1)).mean(1)


def load_conditioned(
    data: DataSource, name: Literal["train", "test"], limit: int, seed: int
) -> tuple[Tensor, Tensor]:
    """(x, conditions) of at most ``limit`` samples of a split (a seeded subset), on the CPU."""
    tensors, conditions = data.tensors(name), data.conditions(name)
    if tensors is not None and conditions is not None:
        x = tensors[0]
        if limit < x.shape[0]:
            keep = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
            keep = keep[:limit]
            return x[keep].cpu(), conditions[keep].cpu()
        return x.cpu(), conditions.cpu()
    split = data.split(name)
    items = [split[i] for i in range(min(limit, len(split)))]  # type: ignore[arg-type]
    return torch.stack([it[0] for it in items]), torch.stack([it[2] for it in items])


class Colorization(Metric):
    """Diversity, colourfulness and faithfulness of a conditional (ab | L) model on TEST data.

    Protocol: ``n_images`` test samples (a seeded subset); for each, ``n_codes`` codes z drawn
    from the prior (seeded by the evaluation seed) give colorizations g(z | L).

    * ``diversity``: mean pairwise ab distance (Lab units, per pixel, averaged) between the
      colorizations of the same L; 0 when z is ignored. ``real_ab_spread`` is the same distance
      between the true ab of different test images (scale reference, not a target).
    * ``colourfulness``: Hasler-Suesstrunk M of the RGB colorizations (mean over images and
      codes); ``real_colourfulness`` of the true images, ``grey`` images score 0.
    * ``ab_recon_l1``: mean |ab - g(e(x | L) | L)| in Lab units (faithfulness of reconstructions);
      ``zero_ab_l1``: the same error of an all-grey prediction (ab = 0), a baseline.
    ``bn_mode`` as in the reconstruction metric.
    """

    headline: ClassVar[dict[str, Direction]] = {
        "diversity": "higher",
        "ab_recon_l1": "lower",
        "zero_ab_l1": "reference",
        "colourfulness": "higher",
        "real_colourfulness": "reference",
    }
    headline_order: ClassVar[int] = 60

    def __init__(
        self,
        n_images: int = 200,
        n_codes: int = 8,
        batch_size: int = 256,
        bn_mode: Literal["eval", "train"] = "eval",
    ) -> None:
        if n_images < 1 or n_codes < 2 or batch_size < 1:
            raise ValueError("n_images and batch_size must be positive and n_codes >= 2")
        self.n_images = n_images
        self.n_codes = n_codes
        self.batch_size = batch_size
        self.bn_mode = bn_mode

    def __call__(self, context: EvaluationContext) -> MetricResult:
        data = context.data
        if data.condition_shape is None:
            raise ValueError("the colorization metric needs conditional data (x = ab, L)")
        x, condition = load_conditioned(data, "test", self.n_images, context.seed)
        n, k = x.shape[0], self.n_codes
        z_gen = torch.Generator().manual_seed(context.seed)
        codes = context.prior.sample(n * k, z_gen).view(n, k, -1)
        diversity, colourful, abs_sum, zero_sum = [], [], 0.0, 0.0
        with network_mode([context.encoder, context.generator], self.bn_mode):
            per = max(1, self.batch_size // k)
            for start in range(0, n, per):
                xb, cb = x[start : start + per], condition[start : start + per]
                b = xb.shape[0]
                cond = cb.repeat_interleave(k, 0).to(context.device)
                z = codes[start : start + b].reshape(b * k, -1).to(context.device)
                out = context.generator(z, cond).float().cpu()
                ab = out.view(b, k, *out.shape[1:]) * AB_SCALE
                diversity.append(pairwise_ab_distance(ab))
                rgb = network_to_rgb(out, cond.cpu().float())
                colourful.append(colourfulness(rgb).view(b, k).mean(1))
                xd, cd = xb.to(context.device), cb.to(context.device)
                recon = context.generator(context.encoder(xd, cd), cd).float().cpu()
                abs_sum += float((recon - xb).abs().double().sum()) * AB_SCALE
                zero_sum += float(xb.abs().double().sum()) * AB_SCALE
        real = x.double() * AB_SCALE
        half = n // 2
        spread = (
            (real[:half] - real[half : 2 * half]).square().sum(1).sqrt().mean().item()
            if half
            else float("nan")
        )
        elements = x.numel()
        values = {
            "diversity": float(torch.cat(diversity).mean()),
            "colourfulness": float(torch.cat(colourful).mean()),
            "real_colourfulness": float(colourfulness(network_to_rgb(x, condition)).mean()),
            "ab_recon_l1": abs_sum / elements,
            "zero_ab_l1": zero_sum / elements,
            "real_ab_spread": spread,
        }
        return MetricResult(
            values,
            protocol={
                "metric": "colorization",
                "split": "test",
                "n_images": n,
                "n_codes": k,
                "subset_seed": context.seed,
                "z_seed": context.seed,
                "units": "Lab (L 0-100, ab about -110..110); colourfulness on 0-255 RGB",
                "diversity": "mean over pairs of codes of the per-pixel ab L2 distance, pixel "
                "mean, then mean over images",
                "real_ab_spread": "the same distance between the true ab of test image i and "
                "test image i + n/2",
                "colourfulness": "Hasler & Suesstrunk 2003, mean over images and codes",
                "batch_size": self.batch_size,
                "bn_mode": self.bn_mode,
            },
        )


__all__ = ["Colorization", "colourfulness", "load_conditioned", "pairwise_ab_distance"]
