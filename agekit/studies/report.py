"""The study report: per-cell means with 95% bootstrap intervals over seeds, paired comparisons
between cells (Holm-adjusted within the study), figures, and report.md, summary.csv and
summary.json."""

from __future__ import annotations

import csv
import itertools
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table
from scipy import stats

from agekit.components import Direction
from agekit.evaluation import write_json_atomic
from agekit.registry import REGISTRY, RegistryError

console = Console()


def headline(metrics: Iterable[str] | None = None) -> dict[str, Direction]:
    """'metric.key' -> the direction that is better ("lower", "higher" or "reference"), in report
    order, for the named metrics (default: every registered metric).

    Each metric class declares its own keys (``Metric.headline``) and where they come
    (``Metric.headline_order``, ties by name), so a plugin metric's headline keys reach reports
    without any change here. A metric that is no longer installed, or is broken, has none.
    """
    names = REGISTRY.available("metric") if metrics is None else sorted(set(metrics))
    declared: list[tuple[int, str, dict[str, Direction]]] = []
    for name in names:
        try:
            component = REGISTRY.load("metric", name)
        except RegistryError:
            continue
        keys = dict(getattr(component, "headline", None) or {})
        if keys:
            declared.append((int(getattr(component, "headline_order", 100)), name, keys))
    return {
        f"{name}.{key}": direction
        for _, name, keys in sorted(declared, key=lambda item: item[:2])
        for key, direction in keys.items()
    }


class _RegisteredHeadline(Mapping[str, Direction]):
    """:func:`headline` of every registered metric, looked up on each use (read-only)."""

    def __getitem__(self, key: str) -> Direction:
        return headline()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(headline())

    def __len__(self) -> int:
        return len(headline())


#: Headline keys of every registered metric, in report order, with the direction that is better.
HEADLINE: Mapping[str, Direction] = _RegisteredHeadline()


def _metric_names(keys: Iterable[str]) -> set[str]:
    return {key.split(".", 1)[0] for key in keys}


def _summary_headline(summary: dict[str, Any]) -> dict[str, Direction]:
    """:func:`headline` of the metrics a summary holds."""
    return headline(
        _metric_names(key for cell in summary["cells"].values() for key in cell["metrics"])
    )


@dataclass
class CellStats:
    setting: str
    cell: str
    n: int
    mean: float
    low: float
    high: float
    values: dict[int, float]


def load_records(folder: Path) -> list[dict[str, Any]]:
    records = []
    for path in sorted((folder / "runs").glob("*/eval.json")):
        records.append(json.loads(path.read_text()))
    return records


def flatten(record: dict[str, Any]) -> dict[str, float]:
    flat: dict[str, float] = {}
    for metric, values in record["metrics"].items():
        for key, value in values.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            flat[f"{metric}.{key}"] = float(value)
    return flat


#: Bootstrap resamples for every interval; fixed seed so a report is reproducible.
BOOTSTRAP_RESAMPLES = 10_000


def _bootstrap_means(array: np.ndarray, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(array), size=(BOOTSTRAP_RESAMPLES, len(array)))
    return array[picks].mean(axis=1)


def mean_ci(values: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean and percentile-bootstrap interval over seeds; NaN bounds with one value.

    Resampling seeds keeps every bound between the smallest and largest observed value, so an
    interval never leaves the quantity's range (a count of modes, a share, a precision). With
    few seeds it is narrow rather than conservative: read it with the n beside it.
    """
    array = np.asarray(values, dtype=np.float64)
    mean = float(array.mean())
    if len(array) < 2:
        return mean, math.nan, math.nan
    if np.all(array == array[0]):
        return mean, mean, mean
    means = _bootstrap_means(array)
    low, high = np.quantile(means, [0.5 - level / 2, 0.5 + level / 2])
    return mean, float(low), float(high)


def paired_comparison(a: dict[int, float], b: dict[int, float]) -> dict[str, Any]:
    """Paired by training seed: mean difference a - b, its bootstrap 95% interval and the paired
    t-test p-value (unadjusted; :func:`summarise` adds Holm's adjustment over the study)."""
    seeds = sorted(set(a) & set(b))
    diffs = [a[s] - b[s] for s in seeds]
    result: dict[str, Any] = {"n_pairs": len(seeds)}
    if len(seeds) < 2:
        result.update(
            mean_diff=diffs[0] if diffs else math.nan, low=math.nan, high=math.nan, p_value=math.nan
        )
        return result
    mean, low, high = mean_ci(diffs)
    if all(d == diffs[0] for d in diffs):
        p_value = 1.0 if diffs[0] == 0 else 0.0
    else:
        p_value = float(stats.ttest_rel([a[s] for s in seeds], [b[s] for s in seeds]).pvalue)
    result.update(mean_diff=mean, low=low, high=high, p_value=p_value)
    return result


def holm_adjust(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment (family-wise error), NaNs left out of the family."""
    indexed = sorted((p, i) for i, p in enumerate(p_values) if not math.isnan(p))
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    family = len(indexed)
    for rank, (p, i) in enumerate(indexed):
        running = max(running, min(1.0, (family - rank) * p))
        adjusted[i] = running
    return adjusted


def summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    by_cell: dict[tuple[str, str], dict[str, dict[int, float]]] = defaultdict(
        lambda: defaultdict(dict)
    )
    for record in records:
        for key, value in flatten(record).items():
            by_cell[(record["setting"], record["cell"])][key][record["train_seed"]] = value
    cells: dict[str, dict[str, Any]] = {}
    for (setting, cell), metrics in sorted(by_cell.items()):
        entry: dict[str, Any] = {"setting": setting, "metrics": {}}
        for key, values in sorted(metrics.items()):
            mean, low, high = mean_ci(list(values.values()))
            entry["metrics"][key] = {
                "n": len(values),
                "mean": mean,
                "ci95": [low, high],
                "values": {str(seed): v for seed, v in sorted(values.items())},
            }
        cells[cell] = entry
    comparisons = []
    settings = sorted({entry["setting"] for entry in cells.values()})
    for setting in settings:
        names = [c for c, e in cells.items() if e["setting"] == setting]
        for first, second in itertools.combinations(names, 2):
            shared = set(cells[first]["metrics"]) & set(cells[second]["metrics"])
            for key in sorted(shared):
                a = {int(s): v for s, v in cells[first]["metrics"][key]["values"].items()}
                b = {int(s): v for s, v in cells[second]["metrics"][key]["values"].items()}
                comparison = paired_comparison(a, b)
                comparison.update(setting=setting, metric=key, a=first, b=second)
                comparisons.append(comparison)
    # One family per study: the comparisons of headline metrics that the report tests.
    directions = headline(metric for record in records for metric in record["metrics"])
    tested = [c for c in comparisons if directions.get(c["metric"]) in ("lower", "higher")]
    for comparison, adjusted in zip(
        tested, holm_adjust([c["p_value"] for c in tested]), strict=True
    ):
        comparison["p_holm"] = adjusted
    return {"cells": cells, "comparisons": comparisons}


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:.4g}"


def _ci_text(stat: dict[str, Any]) -> str:
    low, high = stat["ci95"]
    if math.isnan(low):
        return f"{_fmt(stat['mean'])} (n={stat['n']})"
    return f"{_fmt(stat['mean'])} [{_fmt(low)}, {_fmt(high)}] (n={stat['n']})"


def _ordered_metrics(summary: dict[str, Any], directions: Mapping[str, Direction]) -> list[str]:
    present = {key for cell in summary["cells"].values() for key in cell["metrics"]}
    head = [key for key in directions if key in present]
    rest = sorted(key for key in present if key not in directions)
    return head + rest


def write_report(folder: Path) -> dict[str, Any]:
    folder = Path(folder)
    records = load_records(folder)
    study = (
        json.loads((folder / "study.json").read_text()) if (folder / "study.json").exists() else {}
    )
    if not records:
        console.print(f"[yellow]no evaluated runs in {folder / 'runs'} yet[/yellow]")
        return {}
    summary = summarise(records)
    summary["study"] = study.get("study", {}).get("name", folder.name)
    summary["question"] = study.get("study", {}).get("question", "")
    summary["planned_runs"] = study.get("runs", [])
    summary["evaluated_runs"] = sorted(r["run_id"] for r in records)
    write_json_atomic(_json_safe(summary), folder / "summary.json")
    _write_csv(summary, folder / "summary.csv")
    figures = _figures(folder, records, summary)
    (folder / "report.md").write_text(_markdown(summary, records, figures, folder, study))
    _print_table(summary, folder / "report.md")
    console.print(f"report: {folder / 'report.md'}")
    return summary


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def _write_csv(summary: dict[str, Any], path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["setting", "cell", "metric", "n", "mean", "ci95_low", "ci95_high"])
        for cell, entry in summary["cells"].items():
            for key, stat in entry["metrics"].items():
                writer.writerow(
                    [entry["setting"], cell, key, stat["n"], stat["mean"], *stat["ci95"]]
                )


def _short_ci(stat: dict[str, Any]) -> str:
    low, high = stat["ci95"]
    if math.isnan(low):
        return f"{stat['mean']:.3g}"
    return f"{stat['mean']:.3g} [{low:.3g}, {high:.3g}]"


def _print_table(summary: dict[str, Any], report: Path | None = None) -> None:
    """The headline metrics that fit the console's width (80 columns when output is a file), one
    row per cell, never truncating a value; the full table is in report.md."""
    directions = _summary_headline(summary)
    keys = [k for k in _ordered_metrics(summary, directions) if directions.get(k) != "reference"]
    keys = [k for k in keys if k in directions]
    for setting in sorted({e["setting"] for e in summary["cells"].values()}):
        cells = {c: e for c, e in summary["cells"].items() if e["setting"] == setting}
        shown = [k for k in keys if any(k in e["metrics"] for e in cells.values())]
        labels = {
            # axis values only ("gaussian-kl", not "divergence=gaussian-kl"); the report's
            # headers carry the keys
            cell: ", ".join(
                p.split("=", 1)[-1] for p in cell.removeprefix(setting + "__").split("__")
            )
            for cell in cells
        }
        texts = {
            (cell, k): _short_ci(e["metrics"][k]) if k in e["metrics"] else "-"
            for cell, e in cells.items()
            for k in shown
        }
        budget = console.width - max(len(label) for label in labels.values()) - 4
        fitting: list[str] = []
        for key in shown:
            width = max(len(key.split(".", 1)[1]), *(len(texts[c, key]) for c in cells)) + 3
            if width > budget:
                break
            fitting.append(key)
            budget -= width
        seeds = sorted(
            {e["metrics"][k]["n"] for e in cells.values() for k in fitting if k in e["metrics"]}
        )
        table = Table(
            title=f"{summary['study']}: {setting}, mean [95% interval] over "
            f"{'/'.join(map(str, seeds))} seeds"
        )
        table.add_column("cell", no_wrap=True)
        for key in fitting:
            table.add_column(key.split(".", 1)[1], no_wrap=True)
        for cell in cells:
            table.add_row(labels[cell], *[texts[cell, k] for k in fitting])
        console.print(table, crop=False)
        if len(fitting) < len(shown):
            where = f" in {report}" if report is not None else " in report.md"
            console.print(f"{len(shown) - len(fitting)} more metrics{where}", soft_wrap=True)


def _markdown(
    summary: dict[str, Any],
    records: list[dict[str, Any]],
    figures: dict[str, list[str]],
    folder: Path,
    study: dict[str, Any] | None = None,
) -> str:
    directions = _summary_headline(summary)
    lines = [f"# Study: {summary['study']}", ""]
    if summary["question"]:
        lines += [f"**Question.** {summary['question']}", ""]
    missing = sorted(set(summary["planned_runs"]) - set(summary["evaluated_runs"]))
    lines += [
        f"{len(summary['evaluated_runs'])} runs evaluated"
        + (
            f"; {len(missing)} planned runs not evaluated yet: {', '.join(missing)}"
            if missing
            else ""
        )
        + ". Values are means over training seeds (n = seeds per cell) with 95% percentile-"
        "bootstrap intervals over seeds, which stay inside the observed range; comparisons are "
        "paired by seed (paired t-test), with p-values Holm-adjusted over every comparison in "
        "the study (p_holm) and verdicts taken from the adjusted value.",
        "",
    ]
    for setting in sorted({e["setting"] for e in summary["cells"].values()}):
        cells = {c: e for c, e in summary["cells"].items() if e["setting"] == setting}
        keys = [
            k
            for k in _ordered_metrics(summary, directions)
            if any(k in e["metrics"] for e in cells.values())
        ]
        lines += [
            f"## {setting}",
            "",
            "| metric | " + " | ".join(c.removeprefix(setting + "__") for c in cells) + " |",
            "|---|" + "---|" * len(cells),
        ]
        for key in keys:
            direction = directions.get(key, "")
            label = f"{key} ({direction} is better)" if direction in ("lower", "higher") else key
            lines.append(
                f"| {label} | "
                + " | ".join(
                    _ci_text(e["metrics"][key]) if key in e["metrics"] else "-"
                    for e in cells.values()
                )
                + " |"
            )
        lines.append("")
        comparisons = [
            c
            for c in summary["comparisons"]
            if c["setting"] == setting
            and c["metric"] in directions
            and directions[c["metric"]] != "reference"
        ]
        if comparisons:
            lines += ["**Paired comparisons** (difference a − b):", ""]
            lines += [
                "| metric | a | b | mean diff [95% CI] | p | p_holm | verdict |",
                "|---|---|---|---|---|---|---|",
            ]
            for c in comparisons:
                verdict = _verdict(c)
                lines.append(
                    f"| {c['metric']} | {c['a'].removeprefix(setting + '__')} | "
                    f"{c['b'].removeprefix(setting + '__')} | {_fmt(c['mean_diff'])} "
                    f"[{_fmt(c['low'])}, {_fmt(c['high'])}] | {_fmt(c['p_value'])} | "
                    f"{_fmt(c.get('p_holm', math.nan))} | {verdict} |"
                )
            lines.append("")
        for figure in figures.get(setting, []):
            lines += [f"![{figure}]({figure})", ""]
    references = study.get("study", {}).get("references", []) if study else []
    if references:
        lines += [
            "## Published numbers (quoted, not re-measured)",
            "",
            "| method | setting | values | source |",
            "|---|---|---|---|",
        ]
        for ref in references:
            values = ", ".join(f"{k} {v}" for k, v in ref["values"].items())
            note = f" ({ref['note']})" if ref.get("note") else ""
            lines.append(
                f"| {ref['method']} | {ref['setting']} | {values} | {ref['source']}{note} |"
            )
        lines.append("")
    lines += ["## Protocols", ""]
    protocols: dict[str, Any] = {}
    for record in records:
        for metric, values in record["metrics"].items():
            protocols.setdefault(metric, values.get("protocol"))
    for metric, protocol in protocols.items():
        lines += [f"- **{metric}**: `{json.dumps(protocol, sort_keys=True)}`"]
    lines += [
        "",
        "Each run's checkpoint, configuration, training log and evaluation are in "
        f"`{folder / 'runs'}/<run>/`.",
        "",
    ]
    return "\n".join(lines)


def _verdict(comparison: dict[str, Any]) -> str:
    p = comparison.get("p_holm", math.nan)
    if comparison["n_pairs"] < 2 or math.isnan(p):
        return "too few seeds to test"
    return "differ (p < 0.05)" if p < 0.05 else "no significant difference"


def _figures(
    folder: Path, records: list[dict[str, Any]], summary: dict[str, Any]
) -> dict[str, list[str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directions = _summary_headline(summary)
    out = folder / "figures"
    out.mkdir(exist_ok=True)
    made: dict[str, list[str]] = defaultdict(list)
    by_setting: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        by_setting[record["setting"]].append(record)
    for setting, group in sorted(by_setting.items()):
        cells = sorted({r["cell"] for r in group})
        # Training curves: one panel per term, one line per cell (mean over seeds).
        terms = [
            ("kl_real", "KL_real"),
            ("kl_fake", "KL_fake"),
            ("data_rec", "L_X"),
            ("latent_rec", "L_Z"),
        ]
        fig, axes = plt.subplots(1, len(terms), figsize=(4 * len(terms), 3.2))
        for cell in cells:
            curves = [
                _curve(folder / "runs" / r["run_id"] / "metrics.jsonl")
                for r in group
                if r["cell"] == cell
            ]
            for axis, (key, label) in zip(axes, terms, strict=True):
                steps, values = _mean_curve([c.get(key, ([], [])) for c in curves])
                if len(steps):
                    axis.plot(steps, values, label=cell.removeprefix(setting + "__"))
                axis.set_title(label)
                axis.set_xlabel("iteration")
        axes[0].legend(fontsize=7)
        fig.tight_layout()
        name = f"figures/curves_{setting}.png"
        fig.savefig(folder / name, dpi=90)
        plt.close(fig)
        made[setting].append(name)
        # Metric comparison with intervals.
        keys = [
            k
            for k in directions
            if directions[k] != "reference"
            and any(k in summary["cells"][c]["metrics"] for c in cells)
        ]
        if keys:
            fig, axes = plt.subplots(1, len(keys), figsize=(2.6 * len(keys), 3.2), squeeze=False)
            for axis, key in zip(axes[0], keys, strict=True):
                means, errors, labels = [], [], []
                for cell in cells:
                    stat = summary["cells"][cell]["metrics"].get(key)
                    if stat is None:
                        continue
                    means.append(stat["mean"])
                    low, high = stat["ci95"]
                    errors.append(0.0 if math.isnan(low) else (high - low) / 2)
                    labels.append(cell.removeprefix(setting + "__"))
                axis.bar(
                    range(len(means)),
                    means,
                    yerr=errors,
                    capsize=4,
                    color=[f"C{i}" for i in range(len(means))],
                )
                axis.set_xticks(range(len(means)), labels, rotation=30, ha="right", fontsize=7)
                axis.set_title(f"{key.split('.', 1)[1]} ({directions[key]})", fontsize=9)
            fig.tight_layout()
            name = f"figures/metrics_{setting}.png"
            fig.savefig(folder / name, dpi=90)
            plt.close(fig)
            made[setting].append(name)
        # Samples and reconstructions side by side, the first seed of each cell.
        firsts = [
            min((r for r in group if r["cell"] == c), key=lambda r: r["train_seed"]) for c in cells
        ]
        fig, axes = plt.subplots(len(firsts), 2, figsize=(8, 4 * len(firsts)), squeeze=False)
        for row, record in zip(axes, firsts, strict=True):
            images = folder / "runs" / record["run_id"] / "images"
            for axis, kind in zip(row, ("samples", "reconstructions"), strict=True):
                found = sorted(images.glob(f"{kind}_*.png"))
                if found:
                    axis.imshow(plt.imread(found[-1]))
                axis.set_title(f"{record['cell'].removeprefix(setting + '__')}: {kind}", fontsize=9)
                axis.axis("off")
        fig.tight_layout()
        name = f"figures/grids_{setting}.png"
        fig.savefig(folder / name, dpi=100)
        plt.close(fig)
        made[setting].append(name)
    return made


def _curve(path: Path) -> dict[str, tuple[list[int], list[float]]]:
    series: dict[str, tuple[list[int], list[float]]] = defaultdict(lambda: ([], []))
    if not path.exists():
        return series
    for line in path.read_text().splitlines():
        entry = json.loads(line)
        for key, value in entry.items():
            if isinstance(value, int | float):
                series[key][0].append(entry["step"])
                series[key][1].append(float(value))
    return series


def _mean_curve(curves: list[tuple[list[int], list[float]]]) -> tuple[np.ndarray, np.ndarray]:
    curves = [c for c in curves if c[0]]
    if not curves:
        return np.array([]), np.array([])
    length = min(len(c[0]) for c in curves)
    steps = np.asarray(curves[0][0][:length])
    values = np.mean([c[1][:length] for c in curves], axis=0)
    return steps, values
