"""How far the encoder's codes of real and of generated data are from the prior, per divergence."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from torch import Tensor

from agekit.components import Direction, EvaluationContext, Metric, MetricResult
from agekit.metrics.classifier import generate_samples, load_split, network_mode


class LatentDivergence(Metric):
    """D(e(x_test) || prior) and D(e(g(z)) || prior) for every divergence in the context.

    AGE's game drives the first down (real codes match the prior) and the encoder drives the second
    up while the generator drives it down, so the pair shows both where the encoder puts real data
    and how well the generator fools it. Each divergence sees all ``n_samples`` codes in one batch
    (sample-based estimators depend on batch size, so it is in the protocol), in float64.

    The divergence the run trained with (``context.run_divergence``) has the run's options, the
    others their defaults; the protocol's ``divergence_options`` says which is which.

    Results are flat keys ``'<divergence>_real'`` and ``'<divergence>_fake'``, and
    ``latent_recovery``: the mean E||z - e(g(z))||^2 over the same prior samples, the quantity the
    generator's lambda term minimises (2 for codes unrelated to z on the sphere, 0 for exact
    recovery).
    """

    # No headline keys: they depend on the installed divergences, and '<divergence>_fake' has no
    # better direction (the encoder drives it up, the generator down). Reports list them after
    # the headline keys.
    headline: ClassVar[dict[str, Direction]] = {}
    headline_order: ClassVar[int] = 40

    def __init__(
        self,
        n_samples: int = 512,
        batch_size: int = 256,
        bn_mode: Literal["eval", "train"] = "eval",
    ) -> None:
        if n_samples < 2 or batch_size < 1:
            raise ValueError("n_samples must be >= 2 and batch_size positive")
        self.n_samples = n_samples
        self.batch_size = batch_size
        self.bn_mode = bn_mode

    def _encode(self, context: EvaluationContext, x: Tensor) -> Tensor:
        codes: list[Tensor] = []
        with network_mode([context.encoder], self.bn_mode):
            for batch in x.split(self.batch_size):
                codes.append(context.encoder(batch.to(context.device)).cpu())
        return torch.cat(codes).double()

    def __call__(self, context: EvaluationContext) -> MetricResult:
        if not context.divergences:
            raise ValueError("latent-divergence needs at least one divergence in the context")
        x_real, _ = load_split(context.data, "test", self.n_samples, seed=context.seed)
        x_fake = generate_samples(context, self.n_samples, self.batch_size, self.bn_mode)
        real_codes = self._encode(context, x_real)
        fake_codes = self._encode(context, x_fake)
        # The same z that generate_samples decoded (it draws them from context.seed on the CPU).
        z = context.prior.sample(
            self.n_samples, generator=torch.Generator().manual_seed(context.seed)
        ).double()
        values = {"latent_recovery": float(((fake_codes - z) ** 2).sum(1).mean())}
        with torch.no_grad():
            for name, divergence in sorted(context.divergences.items()):
                values[f"{name}_real"] = float(divergence(real_codes, context.prior))
                values[f"{name}_fake"] = float(divergence(fake_codes, context.prior))
        protocol = {
            "metric": "latent-divergence",
            "real_split": "test",
            "n_real": int(real_codes.shape[0]),
            "n_fake": int(fake_codes.shape[0]),
            "seed": context.seed,
            "batch_size": self.batch_size,
            "bn_mode": self.bn_mode,
            "divergences": {name: repr(d) for name, d in sorted(context.divergences.items())},
            "divergence_options": {
                name: (
                    "the run's (divergence.options)"
                    if name == context.run_divergence
                    else "defaults"
                )
                for name in sorted(context.divergences)
            },
            "dtype": "float64",
        }
        return MetricResult(values, protocol)
