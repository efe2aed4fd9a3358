"""Evaluation: measuring what the tool makes (segmentation of what moves, on DAVIS and on toy scenes)."""
