"""Shared code for the HW1 scripts: datasets, transforms, metrics, models, checkpoints, distributed helpers."""
