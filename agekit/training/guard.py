"""The training loop's guard against divergence: a NaN or inf stops the run, named.

A term of the game, or the codes on their way to the divergence, that hold NaN or inf stop
training with :class:`TrainingDiverged`: the step, what was not finite (the terms, or the codes
entering which divergence terms), the networks' non-finite weights if any, and the last good
checkpoint. The codes are checked before the divergence sees them, because the divergence would
otherwise reject them with its own input check (codes off the prior's support) and the user would
read that instead. The weights are checked before every checkpoint is written, so that the
checkpoint an error names as the last good one holds finite weights.

Every process of a multi-process run stops at the same check: terms are averaged over the ranks
(a NaN anywhere is a NaN everywhere), gathered codes are the same on every rank, and local codes
(``distributed.divergence = "per-rank"``) are compared over the ranks with an all-reduce, so no
rank is left waiting in the next collective.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from agekit.runs import checkpoint as ckpt
from agekit.training import distributed

__all__ = ["NonFiniteGuard", "TrainingDiverged"]


class TrainingDiverged(RuntimeError):
    """A term of the game (or the codes it is computed from) became NaN or inf."""


class NonFiniteGuard:
    """Checks one trainer's terms and codes; the loop sets :attr:`step` and :attr:`phase_terms`
    before each phase, so that the error names them."""

    def __init__(
        self,
        networks: Mapping[str, nn.Module],
        checkpoint_dir: Path,
        device: torch.device,
        multi_process: bool,
    ) -> None:
        self.networks = dict(networks)
        self.checkpoint_dir = checkpoint_dir
        self.device = device
        self.multi_process = multi_process
        #: The step in progress, counted from 1 (as the log counts it).
        self.step = 0
        #: The divergence terms the phase in progress computes (``"kl_fake_enc, kl_real"``).
        self.phase_terms = ""

    def codes_hook(self, gather: Callable[[Tensor], Tensor] | None) -> Callable[[Tensor], Tensor]:
        """The game's ``gather`` hook (codes on their way to the divergence): ``gather`` (if any),
        then the check."""
        per_rank = self.multi_process and gather is None

        def checked(codes: Tensor) -> Tensor:
            if gather is not None:
                codes = gather(codes)
            bad = not bool(torch.isfinite(codes.detach()).all())
            if per_rank:
                bad = distributed.any_rank(bad, self.device)
            if bad:
                raise self.error(f"the codes entering {self.phase_terms}")
            return codes

        return checked

    def check_terms(self, terms: Mapping[str, Tensor]) -> None:
        values = torch.stack([t.detach().float() for t in terms.values()])
        if self.multi_process:
            values = distributed.mean_over_ranks(values)
        if bool(torch.isfinite(values).all()):
            return
        bad = [name for name, t in zip(terms, values, strict=True) if not bool(torch.isfinite(t))]
        raise self.error(", ".join(bad))

    def check_weights(self, where: str, across_ranks: bool = True) -> None:
        """Stop when a parameter or buffer of the networks is NaN or inf (``where`` in the error).

        A term is checked before its update, so the step's last update can leave non-finite weights
        that nothing checks until the next step: a checkpoint written in between would hold them.
        With ``across_ranks`` (every process calls it at the same point) a bad weight on any rank
        stops them all; without, only this process's copy is checked, for the one process that
        writes checkpoints (a collective there would wait forever for the others).
        """
        bad = bool(self.non_finite_weights())
        if self.multi_process and across_ranks:
            bad = distributed.any_rank(bad, self.device)
        if bad:
            raise self.error(where)

    def non_finite_weights(self) -> list[str]:
        """The parameters and buffers (``encoder.<name>``) that hold NaN or inf, in this process."""
        return [
            f"{role}.{name}"
            for role, net in self.networks.items()
            for name, value in net.state_dict().items()
            if value.is_floating_point() and not bool(torch.isfinite(value).all())
        ]

    def error(self, where: str) -> TrainingDiverged:
        """The error of a step that produced NaN or inf in ``where``, naming non-finite weights."""
        bad = self.non_finite_weights()
        weights = ""
        if bad:
            more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
            weights = f" (non-finite weights: {', '.join(bad[:3])}{more})"
        last = ckpt.latest(self.checkpoint_dir)
        kept = f"the last good checkpoint is {last}" if last else "no checkpoint had been written"
        return TrainingDiverged(
            f"step {self.step}: non-finite value in {where}{weights}; training stopped, {kept}"
        )
