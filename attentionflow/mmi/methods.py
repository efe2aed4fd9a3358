"""Names of the attention-vs-motion similarity measures (no torch import: the config checks them)."""

from __future__ import annotations

#: Names accepted by :func:`attentionflow.mmi.similarity.similarity` (first = default).
SIMILARITY_METHODS: tuple[str, ...] = ("ncc", "zncc", "cc", "ssd", "mi")
