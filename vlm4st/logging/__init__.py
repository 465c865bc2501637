"""Experiment loggers (TensorBoard, Weights & Biases) behind one small interface."""
