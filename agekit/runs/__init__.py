"""A run folder and what it holds: checkpoints, the writer's lock, the provenance of records."""
