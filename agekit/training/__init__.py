"""The training loop (:class:`agekit.training.trainer.Trainer`) and what it consults: the
non-finite guard, stop signals, progress and logs, snapshots, multi-process training."""
