"""Loggers: the experiment trackers a run's scalars and image grids are sent to as it trains
(TensorBoard, MLflow, Weights & Biases), beside the run folder's own ``metrics.jsonl``. Each
imports its library only when a configuration names it (:mod:`.base` holds the contract)."""
