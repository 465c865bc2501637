"""Tests of the VLM4ST model and its modules."""
