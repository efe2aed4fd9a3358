"""Procedural toy world (shapes on textured backgrounds), its judge, and the toy SD model tools.

The shipped toy model (``attentionflow/assets/toy_model``) was trained on this world with
``python -m attentionflow.toyworld.train``.
"""

from __future__ import annotations

from attentionflow.toyworld.judge import Judgement, judge
from attentionflow.toyworld.world import (
    BACKGROUNDS,
    COLOURS,
    SHAPES,
    VERBS,
    WORLD_WORDS,
    ToyVideo,
    make_caption,
    make_video,
    parse_caption,
    random_caption,
    render_background,
    render_frame,
    sample_scene,
    sample_training_batch,
)

__all__ = [
    "BACKGROUNDS", "COLOURS", "SHAPES", "VERBS", "WORLD_WORDS", "Judgement", "ToyVideo", "judge", "make_caption",
    "make_video",
    "parse_caption", "random_caption", "render_background", "render_frame", "sample_scene",
    "sample_training_batch",
]
