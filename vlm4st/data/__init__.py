"""Readers, windows, scalers, synthetic cities and loaders for spatiotemporal grid series."""
