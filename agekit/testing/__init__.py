"""The conformance kit plugin authors call from their tests (:mod:`.divergence_kit`)."""

from agekit.testing.divergence_kit import (
    CLOSED_FORM_KL,
    CLOSED_FORM_RELATIVE,
    FD_RATIO,
    FD_STEP,
    SIGMAS,
    VMF_CONCENTRATIONS,
    ConformanceReport,
    DivergenceSource,
    check_divergence,
    conformance_test,
    default_priors,
    diagonal_gaussian_kl,
    diagonal_gaussian_offsets,
    vmf_kappa,
    vmf_kl,
)

__all__ = [
    "CLOSED_FORM_KL",
    "CLOSED_FORM_RELATIVE",
    "FD_RATIO",
    "FD_STEP",
    "SIGMAS",
    "VMF_CONCENTRATIONS",
    "ConformanceReport",
    "DivergenceSource",
    "check_divergence",
    "conformance_test",
    "default_priors",
    "diagonal_gaussian_kl",
    "diagonal_gaussian_offsets",
    "vmf_kappa",
    "vmf_kl",
]
