"""Small helpers the components and the machinery share: atomic writes, Lab colour, low-pass
filters, special functions, network train/eval modes, the terminal consoles."""
