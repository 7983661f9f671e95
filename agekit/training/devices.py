"""The device a run trains on: resolved from ``train.device``, never silently changed."""

from __future__ import annotations

import torch


class DeviceUnavailable(RuntimeError):
    pass


def resolve_device(spec: str) -> torch.device:
    """``auto`` picks CUDA when present; an explicit device that is not there is an error."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise DeviceUnavailable(
            f"train.device: {spec!r} is not a device; use 'auto', 'cpu', 'cuda' or 'cuda:N'"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceUnavailable(
                f"train.device = {spec!r} but CUDA is not available on this machine "
                "(agekit never falls back to another device; use 'auto' or 'cpu')"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceUnavailable(
                f"train.device = {spec!r} but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
    elif device.type != "cpu":
        raise DeviceUnavailable(f"train.device: unsupported device type {device.type!r}")
    return device


def check_device(device: str, precision: str, compile: bool) -> None:
    """The device exists, and bf16 and compile are asked for on CUDA only."""
    try:
        resolved = resolve_device(device)
    except DeviceUnavailable as exc:
        raise ValueError(str(exc).removeprefix("train.device: ")) from None
    if precision == "bf16" and resolved.type != "cuda":
        raise ValueError(f"train.precision = 'bf16' needs a CUDA device, not {device!r}")
    if compile and resolved.type != "cuda":
        raise ValueError(f"train.compile = true is supported on CUDA devices only, not {device!r}")
