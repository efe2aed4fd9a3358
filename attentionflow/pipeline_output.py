"""What the pipeline returns: the edit's videos and maps (:class:`EditOutput`, :class:`AttentionMaps`) and a reusable
inversion (:class:`Inversion`), as diffusers keeps a pipeline's outputs beside it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from attentionflow.flow.motion import MotionResult

__all__ = ["AttentionMaps", "EditOutput", "Inversion"]


@dataclass
class AttentionMaps:
    """Head-, step- and layer-averaged cross-attention maps at one resolution, per branch."""

    size: tuple[int, int]
    """(h, w) of the maps."""
    words: list[list[tuple[str, list[int]]]]
    """Per branch: the prompt's words in order, each with its token positions (a word may span several tokens)."""
    without_mmi: torch.Tensor
    """(B, F, h, w, K) maps before injection (K = 77 token positions; F: the :attr:`frames` kept)."""
    with_mmi: torch.Tensor | None
    """(B, F, h, w, K) maps after injection; None when MMI is off."""
    motion: torch.Tensor | None
    """(F, h, w) motion maps at this resolution (the same frames as the maps); None when MMI is off."""
    frames: list[int] | None = None
    """The video frames of the maps' F axis (at most ``figures.ATTENTION_FIGURE_FRAMES``, evenly spaced: nothing stores
    every frame's maps of a long video); None = frames 0 .. F-1."""
    total_frames: int = 0
    """Frames of the edited video (0: F)."""

    @property
    def frame_indices(self) -> list[int]:
        """The video frame of each map along F."""
        return list(self.frames) if self.frames is not None else list(range(self.without_mmi.shape[1]))

    @property
    def video_frames(self) -> int:
        """Frames of the edited video."""
        return self.total_frames or self.without_mmi.shape[1]


@dataclass
class EditOutput:
    """Result of :meth:`AttentionFlowPipeline.edit`; videos are (F, H, W, 3) uint8 RGB arrays."""

    source_prompt: str
    target_prompts: list[str]
    reconstruction: np.ndarray
    """The source branch: the inverted video regenerated with the source prompt."""
    edits: list[np.ndarray]
    """One video per target prompt."""
    motion: MotionResult | None
    """Full-resolution motion maps (F, H, W) in [0, 1] and the flows behind them (None without MMI and edit_region
    all)."""
    attention: AttentionMaps | None
    """Stored cross-attention maps for visualisation."""
    edit_modes: list[str]
    """'replace' or 'refine' per target prompt."""
    motion_words: list[str]
    """Motion word(s) used (the chosen one in auto mode)."""
    motion_ranking: list[tuple[str, float]] = field(default_factory=list)
    """Auto mode: words ranked by attention-motion similarity (best first)."""
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds per stage."""
    inversion_reused: bool = False
    """True when the edit started from a given or cached :class:`Inversion` (no inversion ran)."""
    inversion_method: str = ""
    """The inversion method of the edit (direct, negative-prompt, null-text or ddim)."""
    inversion_carries: str = ""
    """What the inversion handed to sampling (:attr:`Inversion.carries`)."""
    region: np.ndarray | None = None
    """(F, H, W) bool pixel masks of the moving object(s) that ``p2p.edit_region`` used (None for all)."""
    edit_region: str = "all"
    """``p2p.edit_region`` of the edit: all, moving or static."""
    chunk_frames: int = 0
    """Frames per model call (``chunk_frames``; ``auto`` resolved): the number of frames when they all went at once."""


@dataclass
class Inversion:
    """The source video inverted once; any number of edits with the same settings can start from it.

    Made by :meth:`AttentionFlowPipeline.invert` and accepted by :meth:`AttentionFlowPipeline.edit`
    (``inversion=``), which checks that it was made with the edit's own frames, source prompt and
    inversion settings. It does not depend on the target prompts, P2P or MMI.
    """

    x_t: torch.Tensor
    """(F, C, h, w) the noisiest latent of the DDIM inversion trajectory (sampling starts here)."""
    null_embeddings: list[torch.Tensor] | None
    """Null-text inversion: one (1, L, D) unconditional embedding per sampling step; None otherwise."""
    settings: dict[str, Any]
    """What it was computed with (frames digest, source prompt, method, steps, null-text settings, attention)."""
    method: str = "ddim"
    """The inversion method that made it: direct, negative-prompt, null-text or ddim."""
    trajectory: list[torch.Tensor] | None = None
    """Direct inversion: the DDIM inversion trajectory ``[x_0 .. x_T]`` (T + 1 latents (F, C, h, w)) that the source
    branch follows while sampling; None for the other methods."""
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds of the ``encode`` (frames and source prompt), ``inversion`` and ``null_text`` stages."""

    @property
    def carries(self) -> str:
        """What sampling starts from, in words (the manifest records it)."""
        if self.trajectory is not None:
            return f"the inversion trajectory ({len(self.trajectory)} latents)"
        if self.null_embeddings is not None:
            return f"x_T and {len(self.null_embeddings)} null-text embeddings"
        return "x_T"
