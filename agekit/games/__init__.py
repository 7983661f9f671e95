"""Games: the objectives that turn batches into each network's loss (AGE's, and the safeguards
it plays with), pure components that own no optimiser, device or loop."""
