"""The training loop (:class:`agekit.training.trainer.Trainer`, with :class:`TrainingHooks` for a
caller's code at its events) and what it consults: what it trains with (:mod:`.parts`), its
clocks and stop votes (:mod:`.loop`), its start and resume policy (:mod:`.startup`), the device
(:mod:`.devices`), the non-finite guard, stop signals, progress and logs, snapshots, and
multi-process training (:mod:`.distributed`)."""
