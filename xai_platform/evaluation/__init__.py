"""Metrics that score explanations."""
