"""The GPU benchmark script cannot run here without a GPU; its code paths run on the CPU."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest
import torch

import agekit
from agekit.config import load_config
from agekit.games.aae import AAEPlay
from agekit.games.vae import GaussianEncoder, VAEPlay
from agekit.metrics.ais import AISConfig, HMCSettings
from agekit.model import build_model

GPU_SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"


def test_gpu_benchmark_script_runs_end_to_end_on_cpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Keeps benchmarks/gpu.py from rotting where no GPU is: every table row it would print on a
    # GPU (fp32 only: the trainer refuses bf16 on a CPU) is produced and written to the JSON.
    out = tmp_path / "gpu.json"
    argv = ["gpu.py", "--device", "cpu", "--quick", "--steps", "1", "--width", "8"]
    monkeypatch.setattr(sys, "argv", [*argv, "--repeats", "1", "--out", str(out)])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(GPU_SCRIPT), run_name="__main__")
    assert exit_info.value.code == 0
    results = json.loads(out.read_text())
    assert results["device"].startswith("CPU")
    assert [(r["image_size"], r["batch"], r["precision"]) for r in results["train"]] == [
        (32, 64, "fp32"),
        (64, 64, "fp32"),
    ]
    assert all(r["images_per_s"] > 0 for r in results["train"])
    cells = {(r["batch"], r["dim"]) for r in results["divergences"]}
    assert cells == {(b, m) for b in (64, 256, 1024, 4096, 8192) for m in (16, 64, 128)}
    assert all(
        r["gaussian_kl_ms"] > 0 and r["kozachenko_leonenko_ms"] > 0 for r in results["divergences"]
    )
    assert "wrote" in capsys.readouterr().out


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_gpu_benchmark_refuses_clearly_without_cuda(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["gpu.py"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(GPU_SCRIPT), run_name="__main__")
    assert exit_info.value.code == 2
    assert "needs a CUDA device" in capsys.readouterr().err


def test_knn_gradient_benchmark_quick_mode_runs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "knn_gradient.py"
    monkeypatch.setattr(sys, "argv", ["knn_gradient.py", "--quick"])
    previous = torch.get_num_threads()
    try:
        runpy.run_path(str(script), run_name="__main__")
    finally:
        torch.set_num_threads(previous)
    out = capsys.readouterr().out
    assert "4 near" in out and "cos(knn, gauss)" in out


def test_time_to_quality_peers_are_registry_games_with_the_textbook_objectives() -> None:
    # benchmarks/time_to_quality.py trains every model through the Trainer; its VAE and AAE
    # configurations must keep pythae's objectives: 0.5 * the per-image sum of squared errors
    # plus the KL (VAE) or plus the non-saturating fool term of a 16-256-256-1 critic (AAE).
    script = runpy.run_path(
        str(Path(__file__).resolve().parents[1] / "benchmarks" / "time_to_quality.py")
    )
    config = load_config(script["CONFIG"])
    data = agekit.create("dataset", config.data.name, **config.data.options)
    models = script["configurations"](config, data)
    assert list(models) == ["AGE", "AGE-paper", "VAE", "AAE"]
    torch.manual_seed(0)
    x = torch.rand(4, *data.shape) * 2 - 1
    for name in ("VAE", "AAE"):
        peer = models[name]
        assert (peer.prior.name, peer.prior.dim) == ("gaussian", config.prior.dim)
        assert (peer.backbone, peer.data, peer.optim) == (
            config.backbone,
            config.data,
            config.optim,
        )
        model = build_model(peer, torch.device("cpu"))
        encoder, generator = model.pair.encoder, model.pair.generator
        with torch.no_grad():
            if name == "VAE":
                assert isinstance(model.game, VAEPlay) and isinstance(encoder, GaussianEncoder)
                noise = torch.randn(4, config.prior.dim)
                loss = model.game.losses(x, noise).loss
                mean, log_var = encoder.posterior(x)
                z = mean + noise * torch.exp(0.5 * log_var)
                extra = 0.5 * (mean.square() + log_var.exp() - 1 - log_var).sum(1).mean()
            else:
                critic = model.networks["critic"]
                linears = [m for m in critic.modules() if isinstance(m, torch.nn.Linear)]
                assert [m.out_features for m in linears] == [256, 256, 1]
                assert isinstance(model.game, AAEPlay)
                loss = model.game.autoencoder_step(x).loss
                z = encoder(x)
                extra = torch.nn.functional.softplus(-critic(z)).mean()
            expected = 0.5 * (generator(z) - x).square().flatten(1).sum(1).mean() + extra
        assert torch.allclose(loss, expected, rtol=1e-5)


def test_likelihood_benchmark_bare_loop_repeats_agekits_ais_step_for_step(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # benchmarks/likelihood.py times agekit's AIS against a hand-written HMC loop: the two must do
    # the same work (the same decoder gradient evaluations on the same rows) and, drawing the
    # same random numbers, return the same estimates; then the script runs at tiny sizes.
    script = runpy.run_path(
        str(Path(__file__).resolve().parents[1] / "benchmarks" / "likelihood.py")
    )
    decode, latent_dim, _ = script["build_decoder"]("mlp")
    x = script["simulated_images"](decode, 3, latent_dim, 0.1, seed=1)
    config = AISConfig(chains=2, steps=4, hmc=HMCSettings(leapfrog=3))
    counted = {name: script["CountingDecoder"](decode) for name in ("agekit", "bare")}
    ours = script["agekit_ais"](counted["agekit"], x, 0.1, latent_dim, config, 2)
    bare = script["bare_ais"](counted["bare"], x, 0.1, latent_dim, config, 2)
    # One evaluation at the start, then L per HMC move, one move per step but the last.
    assert counted["agekit"].calls == counted["bare"].calls == 1 + (4 - 1) * 3
    assert counted["agekit"].rows == counted["bare"].rows == 3 * 2 * (1 + (4 - 1) * 3)
    assert torch.equal(ours, bare)
    previous = torch.get_num_threads()
    argv = ["--images", "2", "--chains", "2", "--steps", "3", "--leapfrog", "2", "--repeats", "1"]
    try:
        script["main"](argv)
        script["main"]([*argv, "--backbone", "dcgan"])
    finally:
        torch.set_num_threads(previous)
    out = capsys.readouterr().out
    assert out.count("ratio agekit/bare = ") == 2 and "max |agekit - bare| = 0 nats" in out
