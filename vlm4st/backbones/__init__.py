"""ALBEF-compatible vision and text/fusion encoders and checkpoint loading."""
