"""Training loop, optimisation, checkpoints, metrics and distributed helpers."""
