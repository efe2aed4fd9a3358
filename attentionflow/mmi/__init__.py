"""Motion Map Injection: attention-vs-motion similarity and the injecting attention controller."""

from __future__ import annotations

from attentionflow.mmi.inject import BRANCH_CHOICES, PLACES, MotionInjector
from attentionflow.mmi.similarity import MI_BINS, SIMILARITY_METHODS, similarity

__all__ = ["BRANCH_CHOICES", "MI_BINS", "PLACES", "SIMILARITY_METHODS", "MotionInjector", "similarity"]
