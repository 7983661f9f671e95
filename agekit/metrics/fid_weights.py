"""The FID Inception network's weights: a local file, checked by SHA-256, loaded without pickle.

FID, the Inception score and KID are defined by one network, the TensorFlow Inception graph of
2015-12-05 that the original FID code used; pytorch-fid converted it to a PyTorch state dict,
``pt_inception-2015-12-05-6726825d.pth``, and torch-fidelity ships the same file as
``weights-inception-2015-12-05-6726825d.pth``. agekit never downloads it: the user copies it to the
machine and names it (the metric's ``weights`` option, else ``$AGEKIT_FID_WEIGHTS``, else
:data:`DEFAULT_PATH` relative to the working directory).

The whole file is read once; its SHA-256 must equal the expected one (:data:`OFFICIAL_SHA256`
unless the metric's ``sha256`` option names another file on purpose), and the same bytes are then
loaded with ``torch.load(weights_only=True)``: a file that needs pickle to load (custom classes,
code) is refused before anything unpickles it.

Where :data:`OFFICIAL_SHA256` comes from: torch-fidelity's and pytorch-fid's sources name the file
by the first 8 hex digits of its SHA-256 only (torch.hub's ``<name>-<hash prefix>.pth``
convention, ``6726825d``); the full digest below is the one genforce-derived evaluation code
(e.g. ``qiuyu96/Carver``, ``models/inception_model.py``) verifies pytorch-fid's download against,
and independent records of torch-fidelity's release file give the same digest and a size of
95,628,359 bytes. It starts with the file name's prefix, as torch.hub's convention requires.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

#: The official file's name (pytorch-fid's release asset).
OFFICIAL_FILE = "pt_inception-2015-12-05-6726825d.pth"
#: Its SHA-256 (see the module docstring for the source).
OFFICIAL_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
#: Where a user downloads it, on a machine with internet access (one file: both are recorded with
#: the same SHA-256).
OFFICIAL_URLS = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + OFFICIAL_FILE,
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
    "weights-inception-2015-12-05-6726825d.pth",
)
#: The environment variable that names the file when the metric's ``weights`` option does not.
ENVIRONMENT = "AGEKIT_FID_WEIGHTS"
#: Where the file is looked for when neither names it (beside the local data sets' folders).
DEFAULT_PATH = Path("data") / "fid" / OFFICIAL_FILE


def weights_path(option: str | None) -> tuple[Path, str]:
    """The weights file to use and what named it: the option, the environment, or the default."""
    if option:
        return Path(option).expanduser(), "from the metric's `weights` option"
    named = os.environ.get(ENVIRONMENT, "").strip()
    if named:
        return Path(named).expanduser(), f"from ${ENVIRONMENT}"
    return DEFAULT_PATH, f"the default path: no `weights` option, ${ENVIRONMENT} unset"


def expected_sha256(option: str | None) -> str:
    """The digest the file must have: the official one, or a 64-hex-digit ``sha256`` option."""
    if option is None:
        return OFFICIAL_SHA256
    digest = option.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise ValueError(f"sha256 must be 64 hexadecimal digits, got {option!r}")
    return digest


def missing_message(path: Path, source: str) -> str:
    path = path.absolute()
    return (
        f"{path}: no FID Inception weights file there ({source}). agekit never "
        f"downloads weights: on a machine with internet access download {OFFICIAL_URLS[0]} "
        f"(SHA-256 {OFFICIAL_SHA256}), copy it to this machine and put it at {path}, or point "
        f"${ENVIRONMENT} or the metric's `weights` option at it"
    )


def read_weights(path: Path, sha256: str, source: str = "") -> tuple[dict[str, Tensor], str]:
    """(state dict, SHA-256 of the file) after checking the digest and loading without pickle.

    Raises FileNotFoundError for a missing file and ValueError for a file with another digest, one
    that ``torch.load(weights_only=True)`` refuses, or one that is not a dict of tensors; each
    message names the file.
    """
    if not path.is_file():
        raise FileNotFoundError(missing_message(path, source or "as named"))
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        what = (
            f"the official FID weights' {OFFICIAL_SHA256} ({OFFICIAL_FILE})"
            if sha256 == OFFICIAL_SHA256
            else f"{sha256} (the metric's `sha256` option)"
        )
        raise ValueError(
            f"{path}: its SHA-256 is {digest}, not {what}. Scores from other weights are not "
            f"comparable with published FID/IS; to score with this very file anyway, set the "
            f'metric\'s option sha256 = "{digest}"'
        )
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(
            f"{path}: refused: torch.load(weights_only=True) cannot load it ({reason}). agekit "
            "loads weights without executing code, and a file that needs pickle is not the FID "
            "Inception state dict"
        ) from None
    if not isinstance(state, Mapping) or not all(
        isinstance(key, str) and isinstance(value, Tensor) for key, value in state.items()
    ):
        raise ValueError(f"{path}: not a state dict (a mapping of names to tensors)")
    return dict(state), digest
