"""FID, Inception score, KID and precision/recall the way the literature computes them.

    [[settings]]
    metrics = ["reconstruction", "fid-inception"]      # weights: data/fid/ or $AGEKIT_FID_WEIGHTS

The network is torch-fidelity's ``inception-v3-compat`` (:class:`FeatureExtractorInceptionV3`),
the PyTorch port of the TensorFlow graph behind the published FID and Inception-score numbers,
with the official weights read from a local file (:mod:`agekit.metrics.fid_weights`: never
downloaded, SHA-256 checked, loaded without pickle). The scores are torch-fidelity's own
functions: FID and KID on the 2048-d pool features, IS on the unbiased logits, precision/recall on
the pool features too.

The protocol is the literature's: ``n_samples`` generator samples (50,000 by default, as CIFAR-10
FIDs are reported) against ``n_real`` images of the TRAIN split (CIFAR-10's convention, 50,000
images), every image converted to uint8 RGB in [0, 255] before the network (grey repeated to
three channels; the network resizes to 299 itself), KID over 100 subsets of 1,000, IS over 10
splits. Samples are g(z) with z drawn from the run's own prior with the evaluation seed, the very
draws of ``sample-quality`` (so a sphere prior is sampled as trained, never a library's Gaussian).
Numbers are comparable with published ones only under this protocol and the official weights; the
protocol entry says both.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from agekit.components import Direction, EvaluationContext, Metric, MetricResult
from agekit.metrics.classifier import load_split
from agekit.metrics.fid_weights import (
    OFFICIAL_SHA256,
    expected_sha256,
    read_weights,
    weights_path,
)
from agekit.util.network_modes import network_mode

try:
    import torch_fidelity
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
    from torch_fidelity.metric_isc import isc_features_to_metric
    from torch_fidelity.metric_kid import kid_features_to_metric
    from torch_fidelity.metric_prc import prc_features_to_metric
except ModuleNotFoundError as exc:  # pragma: no cover - the dev and fidelity extras install it
    raise ModuleNotFoundError(
        "the fid-inception metric needs torch-fidelity >= 0.4.0: pip install 'agekit[fidelity]'"
    ) from exc

#: torch-fidelity's name of the FID network and the two outputs agekit reads from it.
NETWORK = "inception-v3-compat"
POOL, LOGITS = "2048", "logits_unbiased"


def to_uint8_rgb(images: Tensor) -> Tensor:
    """[-1, 1] images (N, 1 or 3, H, W) -> uint8 RGB in [0, 255], as if saved to an 8-bit file.

    x -> round((x + 1) * 127.5), clamped; one channel is repeated to three.
    """
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(
            f"fid-inception scores images with 1 or 3 channels, got shape {tuple(images.shape)}"
        )
    pixels = ((images.float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return pixels.expand(-1, 3, -1, -1).contiguous() if pixels.shape[1] == 1 else pixels


def inception_network(state: dict[str, Tensor], where: Path | str = "weights") -> nn.Module:
    """torch-fidelity's FID Inception network with ``state`` loaded (strict), in eval mode.

    torch-fidelity reads weights with ``torch.load(weights_only=False)``, so it is never handed the
    user's file: it gets bytes agekit itself serialised from ``state``, a dict of tensors already
    loaded without pickle, and it is always handed something, so it never downloads.
    """
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    try:
        return FeatureExtractorInceptionV3(
            NETWORK, [POOL, LOGITS], feature_extractor_weights_path=buffer
        )
    except RuntimeError as exc:  # load_state_dict: missing, unexpected or misshapen keys
        first = str(exc).strip().splitlines()[0]
        raise ValueError(f"{where}: not the FID Inception network's state dict: {first}") from None


def prior_images(
    context: EvaluationContext, n: int, batch_size: int, bn_mode: Literal["eval", "train"]
) -> Iterator[Tensor]:
    """g(z) in batches, z ~ the run's prior drawn on the CPU from ``context.seed`` (the draws of
    :func:`agekit.metrics.classifier.generate_samples`), without keeping all samples at once."""
    z = context.prior.sample(n, generator=torch.Generator().manual_seed(context.seed))
    with network_mode([context.generator], bn_mode):
        for start in range(0, n, batch_size):
            yield context.generator(z[start : start + batch_size].to(context.device)).float()


@torch.no_grad()
def inception_features(
    network: nn.Module, batches: Iterable[Tensor], device: torch.device
) -> tuple[Tensor, Tensor]:
    """(pool features (N, 2048), unbiased logits (N, 1008)), float64 on the CPU."""
    pools: list[Tensor] = []
    logits: list[Tensor] = []
    for images in batches:
        pool, logit = network(to_uint8_rgb(images).to(device))
        pools.append(pool.double().cpu())
        logits.append(logit.double().cpu())
    return torch.cat(pools), torch.cat(logits)


def fidelity_scores(
    fake: Tensor,
    real: Tensor,
    fake_logits: Tensor,
    *,
    seed: int,
    isc_splits: int = 10,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    prc_neighborhood: int = 3,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """torch-fidelity's FID, IS, KID and precision/recall of float64 features.

    KID's subsets and IS's shuffle are drawn from ``seed``; the KID subset size is capped at the
    smaller set (torch-fidelity refuses a larger one). The precision/recall distances are computed
    on ``device`` (50,000 x 50,000 of them at the default sample counts).
    """
    fid = fid_statistics_to_metric(
        fid_features_to_statistics(fake), fid_features_to_statistics(real), verbose=False
    )
    isc = isc_features_to_metric(fake_logits, splits=isc_splits, shuffle=True, rng_seed=seed)
    size = min(kid_subset_size, fake.shape[0], real.shape[0])
    kid = kid_features_to_metric(
        fake, real, kid_subsets=kid_subsets, kid_subset_size=size, rng_seed=seed, verbose=False
    )
    # save_cpu_ram: the distances in blocks of rows, not three full N x N matrices (20 GB at 50k)
    prc = prc_features_to_metric(
        fake.to(device),
        real.to(device),
        prc_neighborhood=prc_neighborhood,
        save_cpu_ram=True,
        verbose=False,
    )
    return {
        "fid": float(fid["frechet_inception_distance"]),
        "inception_score": float(isc["inception_score_mean"]),
        "inception_score_std": float(isc["inception_score_std"]),
        "kid": float(kid["kernel_inception_distance_mean"]),
        "kid_std": float(kid["kernel_inception_distance_std"]),
        "precision": float(prc["precision"]),
        "recall": float(prc["recall"]),
    }


class FIDInception(Metric):
    """FID, Inception score, KID and precision/recall in the FID Inception network's features.

    Options: ``weights`` (the local ``pt_inception-2015-12-05-6726825d.pth``; default
    ``$AGEKIT_FID_WEIGHTS``, else ``data/fid/``), ``sha256`` (the digest the file must have;
    default the official file's: another file's digest scores with it, and the protocol says the
    numbers are not the published network's), ``n_samples`` and ``n_real`` (50,000 each; ``n_real``
    is capped at the split's size), ``reference_split`` ("train"), ``kid_subsets`` (100),
    ``kid_subset_size`` (1,000), ``isc_splits`` (10), ``prc_neighborhood`` (k = 3),
    ``batch_size``, ``bn_mode``. A missing, different or unsafe weights file is refused when the
    metric is built, so a study fails at validation, before training, naming the file.
    """

    headline: ClassVar[dict[str, Direction]] = {
        "fid": "lower",
        "inception_score": "higher",
        "kid": "lower",
        "precision": "higher",
        "recall": "higher",
    }
    headline_order: ClassVar[int] = 15

    def __init__(
        self,
        weights: str | None = None,
        sha256: str | None = None,
        n_samples: int = 50_000,
        n_real: int = 50_000,
        reference_split: Literal["train", "test"] = "train",
        kid_subsets: int = 100,
        kid_subset_size: int = 1000,
        isc_splits: int = 10,
        prc_neighborhood: int = 3,
        batch_size: int = 100,
        bn_mode: Literal["eval", "train"] = "eval",
    ) -> None:
        if min(kid_subsets, kid_subset_size, isc_splits, prc_neighborhood, batch_size) < 1:
            raise ValueError("subset counts and sizes, splits, k and batch_size must be positive")
        if n_samples < max(2, isc_splits) or min(n_samples, n_real) <= prc_neighborhood:
            raise ValueError(
                "n_samples must be >= 2 and >= isc_splits, and both n_samples and n_real must "
                "exceed prc_neighborhood"
            )
        self.path, self.source = weights_path(weights)
        self.sha256 = expected_sha256(sha256)
        self.n_samples, self.n_real, self.reference_split = n_samples, n_real, reference_split
        self.kid_subsets, self.kid_subset_size = kid_subsets, kid_subset_size
        self.isc_splits, self.prc_neighborhood = isc_splits, prc_neighborhood
        self.batch_size, self.bn_mode = batch_size, bn_mode
        # Validation time: a missing, different or pickled file fails the study before training.
        read_weights(self.path, self.sha256, self.source)

    def __call__(self, context: EvaluationContext) -> MetricResult:
        name = context.dataset_name
        if context.data.kind != "image" or context.data.condition_shape is not None:
            raise ValueError(f"fid-inception scores unconditional image data; {name!r} is not")
        if len(context.data.shape) != 3 or context.data.shape[0] not in (1, 3):
            raise ValueError(
                f"fid-inception needs 1- or 3-channel images; {name!r} has shape "
                f"{tuple(context.data.shape)}"
            )
        state, digest = read_weights(self.path, self.sha256, self.source)
        network = inception_network(state, self.path).to(context.device)
        del state
        fake, fake_logits = inception_features(
            network,
            prior_images(context, self.n_samples, self.batch_size, self.bn_mode),
            context.device,
        )
        x_real, _ = load_split(context.data, self.reference_split, self.n_real, context.seed)
        real, _ = inception_features(network, x_real.split(self.batch_size), context.device)
        values = fidelity_scores(
            fake,
            real,
            fake_logits,
            seed=context.seed,
            isc_splits=self.isc_splits,
            kid_subsets=self.kid_subsets,
            kid_subset_size=self.kid_subset_size,
            prc_neighborhood=self.prc_neighborhood,
            device=context.device,
        )
        return MetricResult(values, protocol=self.protocol(context, digest, len(fake), len(real)))

    def protocol(
        self, context: EvaluationContext, digest: str, n_fake: int, n_real: int
    ) -> dict[str, Any]:
        official = digest == OFFICIAL_SHA256
        kid_size = min(self.kid_subset_size, n_fake, n_real)
        weights = "" if official else " (NOT the official FID weights: not the published network)"
        summary = (
            f"torch-fidelity {torch_fidelity.__version__} {NETWORK}, weights SHA-256 {digest}"
            f"{weights}; {n_fake} samples g(z), z ~ the run's prior (seed {context.seed}), against "
            f"{n_real} {self.reference_split}-split images of {context.dataset_name}; uint8 RGB "
            f"[0, 255] in, grey repeated to 3 channels, resized to 299 by the network; FID, KID "
            f"({self.kid_subsets} subsets of {kid_size}) and precision/recall "
            f"(k = {self.prc_neighborhood}) on the {POOL}-d pool features, IS "
            f"({self.isc_splits} splits) on the unbiased logits"
        )
        return {
            "metric": "fid-inception",
            "summary": summary,
            "library": f"torch-fidelity {torch_fidelity.__version__}",
            "network": f"{NETWORK} (FeatureExtractorInceptionV3): {POOL} and {LOGITS}",
            "weights_file": self.path.name,
            "weights_sha256": digest,
            "official_weights": official,
            "dataset": context.dataset_name,
            "reference_split": self.reference_split,
            "n_fake": n_fake,
            "n_real": n_real,
            "seed": context.seed,
            "samples": "g(z), z ~ the run's prior drawn by agekit from the evaluation seed",
            "input": "uint8 RGB round((x + 1) * 127.5); grey repeated; resized to 299 in-network",
            "isc_splits": self.isc_splits,
            "kid_subsets": self.kid_subsets,
            "kid_subset_size": kid_size,
            "kid_kernel": "(x.y/d + 1)^3, unbiased MMD^2",
            "prc_neighborhood": self.prc_neighborhood,
            "prc_features": "Inception pool (Kynkaanniemi et al. used VGG-16 fc2)",
            "batch_size": self.batch_size,
            "bn_mode": self.bn_mode,
        }
