"""Introspective games: IntroVAE (Huang et al., NeurIPS 2018) and Soft-IntroVAE (Daniel & Tamar,
CVPR 2021), re-derived for agekit's deterministic encoders and batch divergences.

In both, the encoder is the discriminator: it scores a batch by the divergence of its codes from
the prior, keeps real codes close to the prior and pushes the codes of generated images away, while
the generator tries to make its images' codes look like real ones. Here the per-sample KL of a
Gaussian posterior is replaced by the configured batch divergence D(codes || prior), as in AGE, and
the encoder is deterministic (its codes lie on the prior's support), so both priors work.

Notation: x the real batch, e the encoder, g the generator, z ~ prior, x_r = g(e(x)), x_p = g(z),
D(y) = divergence(e(y) || prior) over the batch y, L_X the configured data loss (a per-sample
mean over elements, l(a_i, b_i) per sample), r the divergence's scale (below). Minimised:

IntroVAE (the paper's L_E and L_G, with D for the KL):
    encoder    r D(x) + alpha r ([m - D(x_p)]^+ + [m - D(x_r)]^+) + beta L_X(x, x_r)
    generator  alpha r (D(x_p) + D(x_r)) + beta L_X(x, x_r)
Soft-IntroVAE (the paper's objectives), with E_i(y) = beta_rec l(y_i, g(e(y_i))) + beta_neg r D(y):
    encoder    beta_rec L_X(x, x_r) + beta_kl r D(x) + 1/(2 alpha) sum_{y = x_p, x_r} mean_i
               exp(-alpha E_i(y))
    generator  beta_rec L_X(x, x_r) + beta_kl r (D(x_p) + D(x_r)) / 2
               + gamma_r beta_rec (l(x_p, g(e(x_p))) + l(x_r, g(e(x_r)))) / 2
In the encoder step x_p and x_r enter as constants (the generator gets no gradient through them);
in the generator step e(x) is a constant.

r (``divergence_scale``): the reference codes sum the KL over the M latent dimensions and the
squared error over the N elements of a sample (Soft-IntroVAE divides both by N). agekit's
divergences report nats per latent dimension (gaussian-kl, kozachenko-leonenko by default) and its
data losses a per-element mean, so the default r = M / N, read from each batch, keeps the
reference's balance between the terms and lets its weights mean what they meant there. r = 1 is
the plain form D + alpha [...] + beta L_X. See docs/games.md for what else changes.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from agekit.components import ComponentInputError, Divergence, Prior
from agekit.games.age import TERM_LABELS
from agekit.games.base import Game, GameBatch, GameParts, Phase, Play, StepLosses

#: AGE's labels for the terms the games share, so that every game's log reads alike.
INTROVAE_TERMS: dict[str, str] = {
    "kl_real": TERM_LABELS["kl_real"],
    "kl_fake": TERM_LABELS["kl_fake"],
    "kl_rec": "KL_rec",
    "data_rec": TERM_LABELS["data_rec"],
}
SOFT_INTROVAE_TERMS: dict[str, str] = {**INTROVAE_TERMS, "exp_elbo_fake": "expELBO_fake"}

#: The largest log of the soft term's batch mean. In the reference the exponent alpha * ELBO is
#: <= 0 (a squared error and a KL are >= 0), so the term is at most 1/alpha; here it is positive
#: only where a divergence estimate is negative (estimators that are >= 0 only in expectation, by
#: about 1/B). With the default weights at M = 64, N = 784 reaching 30 takes D < -0.7 nats per
#: dimension, far beyond such noise, so the cap changes nothing in a sound run and keeps a broken
#: estimate from overflowing float32 (exp(89) = inf) into the loss.
EXPONENT_CAP = 30.0


def refuse_signless(game: str, divergence: Divergence) -> None:
    """Both games compare D with 0 (a margin, an exponential bounded by 1/alpha): a divergence
    that promises no sign (the reference code's KL formula) has no meaning there."""
    if divergence.guarantees.nonnegative == "none":
        raise ComponentInputError(
            f"game {game!r} needs a divergence that is >= 0 (at least in expectation); "
            f"{divergence!r} promises no sign"
        )


def _check(name: str, value: float | None, *, positive: bool = False) -> None:
    """Weights must be finite and >= 0 (> 0 where the game divides by them)."""
    if value is None:
        return
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value}")


def log_mean_exp(exponents: Tensor) -> Tensor:
    """log(mean_i exp(a_i)) over the batch, without forming exp(a_i): logsumexp shifts by the
    largest a_i, so neither large nor very negative exponents lose the result or its gradient."""
    return torch.logsumexp(exponents, dim=0) - math.log(exponents.shape[0])


def soft_mean_exp(exponents: Tensor) -> Tensor:
    """mean_i exp(a_i), the reference's ``exp_elbo``, with its log capped at EXPONENT_CAP."""
    return torch.exp(log_mean_exp(exponents).clamp(max=EXPONENT_CAP))


class IntrospectivePlay(Play):
    """What both games share: the networks, the divergence's scale and the batch divergence."""

    #: The terms each phase computes, as the trainer's non-finite guard names them.
    encoder_label = ""
    generator_label = ""

    def __init__(self, parts: GameParts, divergence_scale: float | None) -> None:
        self.encoder = parts.encoder
        self.generator = parts.generator
        self.prior: Prior = parts.prior
        self.divergence = parts.divergence
        self.data_loss = parts.data_loss
        #: Applied to codes before the divergence only, as in AGE: a multi-process trainer's
        #: all-gather lets the batch statistic see the global batch.
        self.gather: Callable[[Tensor], Tensor] | None = parts.gather
        self.divergence_scale = divergence_scale

    def scale(self, x: Tensor) -> float:
        """r: the given number, or M / N for a batch of samples with N elements each."""
        if self.divergence_scale is not None:
            return self.divergence_scale
        return self.prior.dim / x[0].numel()

    def score(self, codes: Tensor) -> Tensor:
        if self.gather is not None:
            codes = self.gather(codes)
        return self.divergence(codes, self.prior)

    def phases(self) -> list[Phase]:
        return [
            Phase("encoder", self._encoder_phase, label=self.encoder_label),
            Phase("generator", self._generator_phase, label=self.generator_label),
        ]

    def _encoder_phase(self, batch: GameBatch) -> StepLosses:
        return self.encoder_step(batch.x, batch.sample_z(batch.size), batch.condition)

    def _generator_phase(self, batch: GameBatch) -> StepLosses:
        return self.generator_step(batch.x, batch.sample_z(batch.size), batch.condition)

    @abstractmethod
    def encoder_step(self, x: Tensor, z: Tensor, condition: Tensor | None = None) -> StepLosses: ...

    @abstractmethod
    def generator_step(
        self, x: Tensor, z: Tensor, condition: Tensor | None = None
    ) -> StepLosses: ...


@dataclass(frozen=True)
class IntroVAEWeights:
    alpha: float
    beta: float
    margin: float


class IntroVAEPlay(IntrospectivePlay):
    """IntroVAE bound to its networks: an encoder update, then a generator update."""

    encoder_label = "kl_real, kl_fake_enc, kl_rec_enc, data_rec"
    generator_label = "kl_fake, kl_rec, data_rec_gen"

    def __init__(
        self, parts: GameParts, weights: IntroVAEWeights, divergence_scale: float | None = None
    ) -> None:
        super().__init__(parts, divergence_scale)
        self.weights = weights

    def encoder_step(self, x: Tensor, z: Tensor, condition: Tensor | None = None) -> StepLosses:
        """Real codes onto the prior, codes of samples and reconstructions at least m away from
        it (the hinge stops pushing past m), and x recoverable from e(x)."""
        w, r = self.weights, self.scale(x)
        encoder, generator = self.encoder, self.generator
        with torch.no_grad():
            fake = generator(z, condition)
        codes = encoder(x, condition)
        if w.beta > 0:
            rec = generator(codes, condition)
            data_rec = self.data_loss(x, rec)
        else:  # still logged, but the generator must then stay out of the encoder's graph
            with torch.no_grad():
                rec = generator(codes, condition)
                data_rec = self.data_loss(x, rec)
        kl_real = self.score(codes)
        kl_fake = self.score(encoder(fake, condition))
        kl_rec = self.score(encoder(rec.detach(), condition))
        hinge = torch.relu(w.margin - kl_fake) + torch.relu(w.margin - kl_rec)
        loss = r * kl_real + w.alpha * r * hinge + w.beta * data_rec
        terms = {"kl_real": kl_real, "kl_fake_enc": kl_fake, "kl_rec_enc": kl_rec}
        return StepLosses(loss, {**terms, "data_rec": data_rec})

    def generator_step(self, x: Tensor, z: Tensor, condition: Tensor | None = None) -> StepLosses:
        """Codes of samples and reconstructions onto the prior, through the (frozen) encoder."""
        w, r = self.weights, self.scale(x)
        encoder, generator = self.encoder, self.generator
        with torch.no_grad():
            codes = encoder(x, condition)
        rec = generator(codes, condition)
        fake = generator(z, condition)
        kl_fake = self.score(encoder(fake, condition))
        kl_rec = self.score(encoder(rec, condition))
        data_rec = self.data_loss(x, rec)
        loss = w.alpha * r * (kl_fake + kl_rec) + w.beta * data_rec
        return StepLosses(loss, {"kl_fake": kl_fake, "kl_rec": kl_rec, "data_rec_gen": data_rec})


@dataclass(frozen=True)
class SoftIntroVAEWeights:
    beta_rec: float
    beta_kl: float
    beta_neg: float
    gamma_r: float
    alpha: float


class SoftIntroVAEPlay(IntrospectivePlay):
    """Soft-IntroVAE bound to its networks: an encoder update, then a generator update."""

    encoder_label = "kl_real, kl_fake_enc, kl_rec_enc, data_rec, exp_elbo_fake, exp_elbo_rec"
    generator_label = "kl_fake, kl_rec, data_rec_gen, fake_rec, rec_rec"

    def __init__(
        self, parts: GameParts, weights: SoftIntroVAEWeights, divergence_scale: float | None = None
    ) -> None:
        super().__init__(parts, divergence_scale)
        self.weights = weights

    def _fake_elbo(self, fake: Tensor, condition: Tensor | None, r: float) -> tuple[Tensor, Tensor]:
        """mean_i exp(-alpha E_i(fake)) and D(fake), for a batch the encoder sees as constant.
        The reconstruction term stays per sample, as the reference's; D is the batch's."""
        w = self.weights
        codes = self.encoder(fake, condition)
        kl = self.score(codes)
        errors = self.data_loss.per_sample(fake, self.generator(codes, condition))
        energy = w.beta_rec * errors + w.beta_neg * r * kl
        return soft_mean_exp(-w.alpha * energy), kl

    def encoder_step(self, x: Tensor, z: Tensor, condition: Tensor | None = None) -> StepLosses:
        """Maximise the real batch's ELBO and minimise the soft exponential of the fakes' ELBOs
        (a smooth stand-in for IntroVAE's hinge: fakes with a low ELBO stop pulling)."""
        w, r = self.weights, self.scale(x)
        encoder, generator = self.encoder, self.generator
        with torch.no_grad():
            fake = generator(z, condition)
        codes = encoder(x, condition)
        rec = generator(codes, condition)
        data_rec = self.data_loss(x, rec)
        kl_real = self.score(codes)
        exp_fake, kl_fake = self._fake_elbo(fake, condition, r)
        exp_rec, kl_rec = self._fake_elbo(rec.detach(), condition, r)
        # 1/alpha from the soft exponential, 1/2 for the average over the two kinds of fakes.
        soft = (exp_fake + exp_rec) / (2.0 * w.alpha)
        loss = w.beta_rec * data_rec + w.beta_kl * r * kl_real + soft
        terms = {"kl_real": kl_real, "kl_fake_enc": kl_fake, "kl_rec_enc": kl_rec}
        extra = {"data_rec": data_rec, "exp_elbo_fake": exp_fake, "exp_elbo_rec": exp_rec}
        return StepLosses(loss, {**terms, **extra})

    def generator_step(self, x: Tensor, z: Tensor, condition: Tensor | None = None) -> StepLosses:
        """Maximise the fakes' ELBO: their codes onto the prior, x recoverable, and (gamma_r) the
        fakes recoverable from their own codes."""
        w, r = self.weights, self.scale(x)
        encoder, generator = self.encoder, self.generator
        with torch.no_grad():
            codes = encoder(x, condition)
        rec = generator(codes, condition)
        fake = generator(z, condition)
        data_rec = self.data_loss(x, rec)
        rec_codes, fake_codes = encoder(rec, condition), encoder(fake, condition)
        kl_rec, kl_fake = self.score(rec_codes), self.score(fake_codes)
        loss = w.beta_rec * data_rec + w.beta_kl * r * (kl_fake + kl_rec) / 2
        terms = {"kl_fake": kl_fake, "kl_rec": kl_rec, "data_rec_gen": data_rec}
        if w.gamma_r > 0:
            # As in the reference: the target and the code are constants; only the decoding of
            # the fake's code is trained (the generator as a decoder of its own images).
            fake_rec = self.data_loss(fake.detach(), generator(fake_codes.detach(), condition))
            rec_rec = self.data_loss(rec.detach(), generator(rec_codes.detach(), condition))
            loss = loss + w.gamma_r * w.beta_rec * (fake_rec + rec_rec) / 2
            terms.update(fake_rec=fake_rec, rec_rec=rec_rec)
        return StepLosses(loss, terms)


class IntroVAE(Game):
    """IntroVAE with the configured divergence for the KL; registered as ``introvae``.

    Defaults follow the authors' code for 256 px CelebA-HQ (hhb072/IntroVAE ``run_256.sh``:
    ``m_plus=120, weight_rec=0.05, weight_neg=0.5`` with hdim 512), translated to agekit's units:
    alpha = 0.5 * weight_neg = 0.25, beta = 0.05 (with r = M / N), margin = 120 / 512 nats per
    latent dimension. The reference's margin is on a KL summed over M = 512 dimensions.
    """

    term_labels: ClassVar[Mapping[str, str]] = INTROVAE_TERMS
    uses_divergence = True

    def __init__(
        self,
        alpha: float = 0.25,
        beta: float = 0.05,
        margin: float = 120.0 / 512.0,
        divergence_scale: float | None = None,
    ) -> None:
        _check("alpha", alpha)
        _check("beta", beta)
        _check("margin", margin, positive=True)
        _check("divergence_scale", divergence_scale, positive=True)
        self.weights = IntroVAEWeights(alpha=alpha, beta=beta, margin=margin)
        self.divergence_scale = divergence_scale

    def check(self, prior: Prior, divergence: Divergence) -> None:
        refuse_signless("introvae", divergence)

    def bind(self, parts: GameParts) -> IntroVAEPlay:
        return IntroVAEPlay(parts, self.weights, self.divergence_scale)


class SoftIntroVAE(Game):
    """Soft-IntroVAE with the configured divergence for the KL; registered as ``soft-introvae``.

    Defaults are the paper's and its code's image settings (taldatech/soft-intro-vae-pytorch,
    CIFAR-10/SVHN/MNIST: beta_rec = beta_kl = 1, beta_neg = 256, gamma_r = 1e-8; the exponent's
    factor 2 and the 1/4 = 1/alpha * 1/2 in front of it give alpha = 2). Those were tuned for
    images, where r = M / N is small (128 / 3072 on CIFAR-10); on vector data with M >= N,
    beta_neg * r is large and the soft term is negligible unless beta_neg is lowered.
    """

    term_labels: ClassVar[Mapping[str, str]] = SOFT_INTROVAE_TERMS
    uses_divergence = True

    def __init__(
        self,
        beta_rec: float = 1.0,
        beta_kl: float = 1.0,
        beta_neg: float = 256.0,
        gamma_r: float = 1e-8,
        alpha: float = 2.0,
        divergence_scale: float | None = None,
    ) -> None:
        for name, value in (("beta_rec", beta_rec), ("beta_kl", beta_kl), ("beta_neg", beta_neg)):
            _check(name, value)
        _check("gamma_r", gamma_r)
        _check("alpha", alpha, positive=True)
        _check("divergence_scale", divergence_scale, positive=True)
        self.weights = SoftIntroVAEWeights(beta_rec, beta_kl, beta_neg, gamma_r, alpha)
        self.divergence_scale = divergence_scale

    def check(self, prior: Prior, divergence: Divergence) -> None:
        refuse_signless("soft-introvae", divergence)

    def bind(self, parts: GameParts) -> SoftIntroVAEPlay:
        return SoftIntroVAEPlay(parts, self.weights, self.divergence_scale)
