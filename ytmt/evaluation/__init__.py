"""Evaluation, metrics, registry and inference."""
