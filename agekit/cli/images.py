"""The commands that draw with a trained model: sample, reconstruct, interpolate (unconditional)
and colorize, transfer (conditional). The tensor work is :mod:`agekit.evaluation.inference`'s."""

from __future__ import annotations

import argparse
from typing import Any

from agekit.cli.shared import UsageError, console, image_out


def load_model(checkpoint: str, device: str, command: str, conditional: bool = False) -> Any:
    """The trained model of ``checkpoint``, refused unless its kind fits ``command``."""
    from agekit.evaluation import inference
    from agekit.model import load_trained

    model, _ = load_trained(checkpoint, device)
    try:
        if conditional:
            inference.require_conditional(model, command)
        else:
            inference.require_unconditional(model, command)
    except inference.InferenceError as exc:
        raise UsageError(f"{checkpoint}: {exc}") from None
    return model


def cmd_sample(args: argparse.Namespace) -> int:
    from agekit.evaluation import inference
    from agekit.evaluation.visual import save_samples

    model = load_model(args.checkpoint, args.device, "sample")
    out = image_out(args.out)
    samples = inference.sample(model, args.n, args.seed)
    save_samples(samples, out, model.data)
    console.print(f"wrote {args.n} samples to {args.out}")
    return 0


def cmd_reconstruct(args: argparse.Namespace) -> int:
    from agekit.datasets.stream import test_batch
    from agekit.evaluation import inference
    from agekit.evaluation.visual import save_pairs_grid

    model = load_model(args.checkpoint, args.device, "reconstruct")
    out = image_out(args.out)
    x = test_batch(model.data, args.n)
    recon = inference.reconstruct(model, x)
    save_pairs_grid(x, recon, out, model.data)
    l1 = float((recon - x.float()).abs().mean())
    console.print(
        f"wrote {len(x)} test images and their reconstructions to {args.out} (mean L1 {l1:.4f})"
    )
    return 0


def cmd_interpolate(args: argparse.Namespace) -> int:
    import torch

    from agekit.datasets.stream import test_batch
    from agekit.evaluation import inference
    from agekit.evaluation.visual import save_grid

    model = load_model(args.checkpoint, args.device, "interpolate")
    if model.data.kind != "image":
        raise UsageError("interpolate draws images; this model's data are vectors")
    out = image_out(args.out)
    x = test_batch(model.data, 2 * args.rows)
    pairs = len(x) // 2
    if pairs == 0:
        raise UsageError(f"{args.checkpoint}: the test split has fewer than 2 images")
    start, end = x[0 : 2 * pairs : 2], x[1 : 2 * pairs : 2]
    paths = inference.interpolate(model, start, end, args.steps)
    # a row per pair: the real test image, the decoded path, the other real test image
    save_grid(torch.cat([start[:, None].float(), paths, end[:, None].float()], dim=1), out)
    console.print(
        f"wrote {pairs} interpolations to {args.out} "
        "(ends: the real test images; between: decoded codes)"
    )
    return 0


def cmd_colorize(args: argparse.Namespace) -> int:
    import torch

    from agekit.evaluation import inference
    from agekit.evaluation.visual import save_grid

    model = load_model(args.checkpoint, args.device, "colorize", conditional=True)
    out = image_out(args.out)
    rgb = inference.read_rgb_batch(args.images, inference.condition_size(model))
    colours = inference.colorize(model, rgb, args.n, args.seed)
    grey = inference.lightness_only(rgb)
    save_grid(torch.cat([grey[:, None], colours], dim=1), out, signed=False)
    console.print(
        f"wrote {len(rgb)} x {args.n} colorizations to {args.out} "
        "(a row per image: its grayscale input, then one colorization per z)"
    )
    return 0


def cmd_transfer(args: argparse.Namespace) -> int:
    import torch

    from agekit.evaluation import inference
    from agekit.evaluation.visual import save_grid

    model = load_model(args.checkpoint, args.device, "transfer", conditional=True)
    out = image_out(args.out)
    size = inference.condition_size(model)
    source, target = inference.read_rgb(args.source, size), inference.read_rgb(args.target, size)
    result = inference.transfer(model, source, target)
    grey = inference.lightness_only(target[None])[0]
    save_grid(torch.stack([source, grey, result, target])[None], out, signed=False)
    console.print(
        f"wrote {args.out}: source, target's grayscale, g(e(source | L_source) | L_target), "
        "target's own colours"
    )
    return 0
