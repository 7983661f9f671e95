"""What a run's training cost: seconds per iteration, read from its training log."""

from __future__ import annotations

import json
from typing import ClassVar

from agekit.components import Direction, EvaluationContext, Metric, MetricResult
from agekit.runs.layout import RunFolder


class TrainingCost(Metric):
    """Seconds per training iteration, from the run's ``metrics.jsonl``.

    The log's ``elapsed_s`` counts the training steps only (not checkpoints, images or
    evaluation), so games compare by the cost of their updates. The figure is the machine's under
    whatever else ran beside the run (a study's parallel jobs): compare runs of one study, made
    under the same ``jobs``.
    """

    headline: ClassVar[dict[str, Direction]] = {"seconds_per_iteration": "lower"}
    headline_order: ClassVar[int] = 90

    def __call__(self, context: EvaluationContext) -> MetricResult:
        if context.run_dir is None:
            raise ValueError("training-cost needs the run folder (evaluate a trained run)")
        log = RunFolder(context.run_dir).metrics
        last = None
        for line in log.read_text().splitlines():
            try:
                last = json.loads(line)
            except ValueError:
                continue  # a line torn by a crash; the records before it stand
        if not last or not last.get("step") or not last.get("elapsed_s"):
            raise ValueError(f"{log}: no training record with step and elapsed_s")
        step, elapsed = int(last["step"]), float(last["elapsed_s"])
        return MetricResult(
            values={"seconds_per_iteration": elapsed / step},
            protocol={
                "source": f"{log.name}: elapsed_s of the last record (training steps only)",
                "iterations": step,
            },
        )
