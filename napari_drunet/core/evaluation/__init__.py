"""Metrics of a prediction against ground truth, per case and over many cases."""
