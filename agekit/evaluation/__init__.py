"""Using a trained model: scores from registered metrics (:mod:`.scoring`), batch-norm
statistics, samples, reconstructions and paths (:mod:`.inference`), image grids."""
