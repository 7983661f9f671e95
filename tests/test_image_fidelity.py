"""fid-inception: the FID Inception network from a verified local file, end to end, its refusals
(missing, different or pickled weights; never a download), its study validation, and agekit's own
feature-space functions against torch-fidelity's on the same float64 features."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch_fidelity.feature_extractor_inceptionv3 as tf_inception
import torch_fidelity.utils as tf_utils
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_isc import isc_features_to_metric
from torch_fidelity.metric_kid import kernel_mmd, kid_features_to_metric
from torch_fidelity.metric_prc import prc_features_to_metric

import agekit
from agekit.components import EvaluationContext
from agekit.config import ConfigError
from agekit.metrics import fidelity
from agekit.metrics.features import (
    frechet_distance,
    kernel_inception_distance,
    polynomial_mmd2_unbiased,
    precision_recall,
)
from agekit.metrics.fid_weights import (
    DEFAULT_PATH,
    ENVIRONMENT,
    OFFICIAL_SHA256,
    OFFICIAL_URLS,
)
from agekit.metrics.fidelity import inception_network, to_uint8_rgb
from agekit.metrics.inception import inception_score
from agekit.registry import ComponentOptionsError
from agekit.studies.spec import load_study, plan

ROOT = Path(__file__).resolve().parent.parent
SMALL = {"n_samples": 6, "n_real": 6, "isc_splits": 2, "kid_subsets": 3, "prc_neighborhood": 2}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """torch-fidelity's FID Inception architecture, randomly initialised, as a plain state dict.

    Its constructor always loads weights, so it is handed an empty dict with load_state_dict
    switched off for that one call; the values mean nothing, the whole path runs as with the real
    file (whose SHA-256 this file does not have).
    """
    torch.manual_seed(0)
    empty = io.BytesIO()
    torch.save({}, empty)
    empty.seek(0)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tf_inception.FeatureExtractorInceptionV3, "load_state_dict", lambda *a: None)
        network = tf_inception.FeatureExtractorInceptionV3(
            "inception-v3-compat", ["2048"], feature_extractor_weights_path=empty
        )
    path = tmp_path_factory.mktemp("fid") / "random-inception.pth"
    torch.save(network.state_dict(), path)
    return path


def _context(tmp_path: Path) -> EvaluationContext:
    prior = agekit.create("prior", "sphere", dim=8)
    data = agekit.create("dataset", "digits")
    pair = agekit.create("backbone", "dcgan", width=8).build(data.shape, 8, prior)
    return EvaluationContext(
        pair.encoder, pair.generator, prior, data, "digits", torch.device("cpu"), 7, tmp_path, {}
    )


class _Forbidden(AssertionError):
    pass


def _forbid(*_args: Any, **_kwargs: Any) -> Any:
    raise _Forbidden("torch-fidelity was asked to download weights or to draw its own noise")


# The network resizes every image to 299 x 299 itself (~0.3 s an image on one free CPU core), and
# FID's eigenvalues of 2048 x 2048 covariances take ~4 s: the default run shrinks the input to 75
# (Inception-v3's smallest; 16x fewer pixels) and reads the 64-d early pool instead of the 2048-d
# one; the slow checks run the real sizes. Every other step is the same.
@pytest.mark.parametrize(
    ("input_size", "pool"),
    [(75, "64"), pytest.param(299, "2048", marks=pytest.mark.slow)],
    ids=["75px-64d", "299px-2048d"],
)
def test_end_to_end_with_local_weights_and_the_runs_prior(
    input_size: int,
    pool: str,
    random_weights: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tf_inception.FeatureExtractorInceptionV3, "INPUT_IMAGE_SIZE", input_size)
    monkeypatch.setattr(fidelity, "POOL", pool)
    # Never a download, never torch-fidelity's own noise, never torch.load(weights_only=False) on
    # a file: torch-fidelity only ever unpickles bytes agekit serialised from verified tensors.
    monkeypatch.setattr(tf_inception, "load_state_dict_from_url", _forbid)
    monkeypatch.setattr(tf_utils, "sample_random", _forbid)
    loads: list[tuple[type, bool]] = []
    real_load = torch.load

    def spy_load(f: Any, *args: Any, **kwargs: Any) -> Any:
        loads.append((type(f), bool(kwargs.get("weights_only", True))))
        return real_load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", spy_load)
    context = _context(tmp_path)
    draws: list[int] = []
    real_sample = context.prior.sample
    monkeypatch.setattr(
        context.prior, "sample", lambda n, **kw: draws.append(n) or real_sample(n, **kw)
    )
    digest = _sha256(random_weights)
    metric = agekit.create("metric", "fid-inception", weights=str(random_weights), sha256=digest,
                           batch_size=4, **SMALL)  # fmt: skip
    result = metric(context)

    assert draws == [6]  # the run's own (sphere) prior, once, for all samples
    assert (io.BytesIO, False) in loads  # torch-fidelity's own load, seen by the spy
    assert all(weights_only or kind is io.BytesIO for kind, weights_only in loads)
    assert set(result.values) == {
        "fid", "inception_score", "inception_score_std", "kid", "kid_std", "precision", "recall"
    }  # fmt: skip
    assert all(np.isfinite(v) for v in result.values.values())
    assert result.values["fid"] >= 0 and 0 <= result.values["precision"] <= 1
    assert result.values["inception_score"] >= 1 - 1e-9
    protocol = result.protocol
    assert protocol["weights_sha256"] == digest and protocol["official_weights"] is False
    assert (protocol["n_fake"], protocol["n_real"], protocol["kid_subset_size"]) == (6, 6, 6)
    assert protocol["reference_split"] == "train" and protocol["seed"] == 7
    expected = (digest, "NOT the official", "uint8", "299", "3 subsets of 6", "2 splits")
    for part in (*expected, f"{pool}-d pool"):
        assert part in protocol["summary"]


def test_defaults_are_the_literatures_protocol(random_weights: Path) -> None:
    metric = agekit.create("metric", "fid-inception", weights=str(random_weights),
                           sha256=_sha256(random_weights))  # fmt: skip
    assert (metric.n_samples, metric.n_real, metric.reference_split) == (50_000, 50_000, "train")
    assert (metric.kid_subsets, metric.kid_subset_size, metric.isc_splits) == (100, 1000, 10)


def test_missing_weights_name_the_path_and_where_to_get_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "nowhere" / "pt_inception.pth"
    with pytest.raises(FileNotFoundError) as info:
        agekit.create("metric", "fid-inception", weights=str(missing))
    message = str(info.value)
    assert str(missing) in message and OFFICIAL_URLS[0] in message
    assert "agekit never downloads" in message and ENVIRONMENT in message
    monkeypatch.setenv(ENVIRONMENT, str(missing))
    with pytest.raises(FileNotFoundError, match=f"from \\${ENVIRONMENT}"):
        agekit.create("metric", "fid-inception")
    monkeypatch.delenv(ENVIRONMENT)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=str(DEFAULT_PATH).replace(".", r"\.")):
        agekit.create("metric", "fid-inception")


def test_weights_with_another_hash_are_refused_unless_named(random_weights: Path) -> None:
    digest = _sha256(random_weights)
    assert digest != OFFICIAL_SHA256
    with pytest.raises(ComponentOptionsError) as info:
        agekit.create("metric", "fid-inception", weights=str(random_weights))
    message = str(info.value)
    assert str(random_weights) in message and OFFICIAL_SHA256 in message
    assert f'sha256 = "{digest}"' in message
    with pytest.raises(ComponentOptionsError, match="64 hexadecimal digits"):
        agekit.create("metric", "fid-inception", weights=str(random_weights), sha256="abc")
    agekit.create("metric", "fid-inception", weights=str(random_weights), sha256=digest.upper())


UNPICKLED: list[str] = []


class Payload:
    """A custom object: unpickling it would run code (here, only a marker)."""

    def __setstate__(self, state: Any) -> None:
        UNPICKLED.append("ran")


def test_a_file_that_needs_pickle_is_refused_before_anything_unpickles_it(tmp_path: Path) -> None:
    path = tmp_path / "pickled.pth"
    torch.save({"conv.weight": torch.zeros(1), "payload": Payload()}, path)
    with pytest.raises(ComponentOptionsError) as info:
        agekit.create("metric", "fid-inception", weights=str(path), sha256=_sha256(path))
    assert str(path) in str(info.value) and "weights_only=True" in str(info.value)
    assert UNPICKLED == []
    listed = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(ComponentOptionsError, match="not a state dict"):
        agekit.create("metric", "fid-inception", weights=str(listed), sha256=_sha256(listed))
    with pytest.raises(ValueError, match="not the FID Inception network's state dict"):
        inception_network({"fc.weight": torch.zeros(3)}, listed)


def test_uint8_conversion_is_the_8_bit_file_one() -> None:
    images = torch.tensor([-1.0, -0.5, 0.0, 1.0, 1.5]).view(1, 1, 1, 5)
    pixels = to_uint8_rgb(images)
    assert pixels.dtype == torch.uint8 and pixels.shape == (1, 3, 1, 5)
    assert pixels[0, 2, 0].tolist() == [0, 64, 128, 255, 255]  # 63.75 -> 64; 127.5 -> 128
    with pytest.raises(ValueError, match="1 or 3 channels"):
        to_uint8_rgb(torch.zeros(1, 2, 4, 4))


STUDY = """
name = "fid_check"
seeds = [0]
[base]
recipe = "paper"
data = {{ name = "digits" }}
prior = {{ name = "sphere", dim = 8 }}
backbone = {{ name = "dcgan", options = {{ width = 8 }} }}
train = {{ steps = 2 }}
[[settings]]
name = "digits"
metrics = [{{ name = "fid-inception", options = {{ weights = "{weights}" }} }}]
"""


def test_a_study_without_the_weights_fails_validation_naming_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "absent.pth"
    source = tmp_path / "study.toml"
    source.write_text(STUDY.format(weights=missing))
    spec, where = load_study(source)
    with pytest.raises(ConfigError) as info:
        plan(spec, str(where), tmp_path / "out")
    assert "fid-inception" in str(info.value) and str(missing) in str(info.value)
    assert "agekit never downloads" in str(info.value)


@pytest.mark.parametrize("name", ["paper_cifar10", "paper_celeba", "paper_svhn"])
def test_the_paper_studies_score_with_it(name: str, tmp_path: Path) -> None:
    spec, source = load_study(ROOT / "studies" / f"{name}.toml")
    runs = plan(spec, str(source), tmp_path, check=False)
    assert all("fid-inception" in [m.name for m in run.metrics] for run in runs)


# Oracles: agekit's functions against torch-fidelity's on the same float64 features -------------
def _features(seed: int, n: int = 300, d: int = 16, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(d, d)) / np.sqrt(d)
    return rng.normal(size=(n, d)) @ mixing + shift


@pytest.mark.parametrize(("n", "d", "rel"), [(400, 16, 1e-9), (40, 64, 1e-6)])
def test_frechet_distance_matches_torch_fidelity(n: int, d: int, rel: float) -> None:
    # Both compute |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^1/2) in float64 from np.cov: agekit
    # via the symmetric S_a^1/2 S_b S_a^1/2, torch-fidelity via eigvals of S_a S_b. With n > d the
    # two differ by round-off (~1e-12 relative); with n < d both covariances are singular and
    # the non-symmetric eigensolver's tiny spurious eigenvalues cost up to ~1e-8 relative.
    a, b = _features(1, n, d), _features(2, n, d, shift=0.3)
    ours = frechet_distance(a, b)
    stats = [fid_features_to_statistics(torch.from_numpy(x)) for x in (a, b)]
    theirs = fid_statistics_to_metric(*stats, verbose=False)["frechet_inception_distance"]
    assert ours == pytest.approx(theirs, rel=rel)


def test_kid_matches_torch_fidelity() -> None:
    # Same subsets: the polynomial unbiased MMD^2 of one pair of sets agrees to round-off (float64
    # sums of ~1e5 kernel values: ~1e-13 relative of the kernel means, far below 1e-9 of MMD^2).
    a, b = _features(3, 200, 32), _features(4, 200, 32, shift=0.2)
    theirs_pair = kernel_mmd(a, b, kid_kernel="poly", kid_kernel_poly_degree=3,
                             kid_kernel_poly_gamma=None, kid_kernel_poly_coef0=1)  # fmt: skip
    assert polynomial_mmd2_unbiased(a, b) == pytest.approx(theirs_pair, rel=1e-9)
    # Whole sets as the "subsets" (each a permutation of the set, which MMD^2 ignores): the subset
    # draws of the two generators no longer matter, so mean and spread agree too.
    ours = kernel_inception_distance(a, b, subsets=4, subset_size=200, seed=0)
    theirs = kid_features_to_metric(torch.from_numpy(a), torch.from_numpy(b), kid_subsets=4,
                                    kid_subset_size=200, rng_seed=0, verbose=False)  # fmt: skip
    assert ours[0] == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-9)
    assert ours[1] == pytest.approx(theirs["kernel_inception_distance_std"], abs=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_precision_recall_match_torch_fidelity(seed: int) -> None:
    # Both count, with <=, the points inside the union of k-th-neighbour balls (the point itself
    # excluded): fractions of discrete events, so they agree exactly unless a point lies within
    # round-off (~1e-12) of a ball's surface, which continuous features make vanishingly unlikely.
    real, fake = _features(10 + seed, 300, 16), _features(20 + seed, 250, 16, shift=0.4)
    for k in (3, 5):
        ours = precision_recall(real, fake, k)
        theirs = prc_features_to_metric(torch.from_numpy(fake), torch.from_numpy(real),
                                        prc_neighborhood=k, verbose=False)  # fmt: skip
        # torch-fidelity averages the float32 indicator, so its fractions carry float32 round-off
        # (~1e-8); compare the counts of points, which must be identical.
        assert round(ours[0] * len(fake)) == round(theirs["precision"] * len(fake))
        assert round(ours[1] * len(real)) == round(theirs["recall"] * len(real))
        assert 0.0 < ours[0] < 1.0 and 0.0 < ours[1] < 1.0  # the check is not vacuous


def test_inception_score_matches_torch_fidelity() -> None:
    # Same splits (N divisible by the splits, no shuffle): exp(E KL(p(y|x) || p(y))) per split
    # from softmax probabilities (agekit) or logits (torch-fidelity), float64; agekit's clip at
    # 1e-12 never binds at these logits, so only round-off (~1e-14 relative) separates them.
    logits = torch.from_numpy(np.random.default_rng(5).normal(scale=3.0, size=(200, 50)))
    ours = inception_score(torch.softmax(logits, dim=1).numpy(), splits=4)
    theirs = isc_features_to_metric(logits, splits=4, shuffle=False)
    assert ours[0] == pytest.approx(theirs["inception_score_mean"], rel=1e-10)
    assert ours[1] == pytest.approx(theirs["inception_score_std"], rel=1e-8, abs=1e-12)
