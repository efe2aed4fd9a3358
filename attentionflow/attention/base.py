"""Shared contracts between the attention processors, the controllers and the pipeline.

Batch layout seen by every attention processor (the UNet is a 2D UNet; frames are folded into the
batch):  ``Bt = G * B * F`` where

* ``G`` = 2 when classifier-free guidance is on (``[uncond, cond]`` halves, uncond first), else 1,
* ``B`` = number of branches (source + each edit; 1 during inversion),
* ``F`` = number of frames in the call: all frames of the video, or one chunk of them (``chunk_frames``:
  frames ``state.frame_start .. frame_start + F - 1`` of ``state.total_frames``, every branch and guidance half
  of them together; see :mod:`attentionflow.attention.processors` for how cross-frame attention stays exact).

Index order is ``(g, b, f)``: ``hidden_states.view(G, B, F, N, C)``.

Controllers see explicit attention probabilities ``probs`` of shape ``(Bt, heads, Q, K)`` only at the
sites whose :meth:`AttentionController.wants_probs` returns True; every other site uses SDPA. Their memory may be
token-major (:func:`is_token_major`); controllers must work on either layout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Literal, Sequence

import torch

from attentionflow.attention.windows import step_window  # noqa: F401 (re-exported: controllers gate steps with it)

Place = Literal["down", "mid", "up"]


def is_token_major(probs: torch.Tensor) -> bool:
    """True when ``probs`` ``(..., Q, K)`` is the transposed view of a contiguous ``(..., K, Q)`` tensor: each key
    token's map over the queries is one contiguous row (how the attention processor makes explicit probabilities,
    :meth:`attentionflow.attention.processors.FrameAttnProcessor._probs`). False for contiguous tensors."""
    return probs.transpose(-1, -2).is_contiguous() and not probs.is_contiguous()


def as_token_major(probs: torch.Tensor) -> torch.Tensor:
    """A copy of ``probs`` ``(..., Q, K)`` laid out token-major (:func:`is_token_major` holds when ``Q, K > 1``)."""
    return probs.transpose(-1, -2).contiguous().transpose(-1, -2)


def index_span(indices: Iterable[int]) -> tuple[int, int] | None:
    """``(lo, hi)``: the smallest range ``lo .. hi - 1`` holding every index (e.g. a prompt's word tokens); None for
    no index."""
    found = sorted({int(i) for i in indices})
    return (found[0], found[-1] + 1) if found else None


def token_rows(probs: torch.Tensor, tokens: tuple[int, int]) -> torch.Tensor:
    """The maps of the key tokens ``lo .. hi - 1`` of ``probs`` ``(..., Q, K)`` as rows: a ``(..., K', Q)`` view,
    each token's map one contiguous row when ``probs`` is token-major (:func:`is_token_major`)."""
    lo, hi = tokens
    return probs[..., lo:hi].transpose(-1, -2)


def head_sum(rows: torch.Tensor, dim: int) -> torch.Tensor:
    """The sum of ``rows`` over the heads axis ``dim``; with one head, a view of it (no copy: do not write to it)."""
    return rows.select(dim, 0) if rows.shape[dim] == 1 else rows.sum(dim=dim)


FrameMode = Literal["per_frame", "cross_frame"]


@dataclass(frozen=True)
class AttentionSite:
    """Static description of one attention layer of the UNet."""

    name: str
    """Module path, e.g. ``down_blocks.1.attentions.0.transformer_blocks.0.attn2``."""
    is_cross: bool
    """True for cross-attention (keys are text tokens), False for self-attention."""
    place: Place
    """Which part of the UNet: ``down``, ``mid`` or ``up``."""
    block_index: int
    """Index of the down/up block (0 for the mid block)."""
    dense: bool = False
    """Self-attention only: True where dense spatial-temporal attention is used (``st_attn_idx``)."""
    level: int | None = None
    """2x downsamplings between the latents and this layer (None = unknown): its map is
    ``(ceil(h / 2**level), ceil(w / 2**level))`` for latents (h, w)."""


@dataclass
class AttentionState:
    """Mutable per-call state shared by all processors of one UNet; the pipeline updates it."""

    num_frames: int = 1
    """F: frames per branch in the current call (the chunk's frames when the video is processed in chunks)."""
    frame_start: int = 0
    """Index in the video of the call's first frame (0 unless the video is processed in chunks)."""
    total_frames: int = 0
    """Frames per branch of the whole video; 0 means ``num_frames`` (the call holds every frame)."""
    num_branches: int = 1
    """B: branches (source + edits), 1 during inversion."""
    cfg: bool = False
    """True when the batch holds ``[uncond, cond]`` halves: the conditional half is the last ``B*F`` rows; the
    unconditional half holds ``B*F`` rows, or ``(B-1)*F`` when it leaves out the source branch (direct inversion
    discards the source's guided step: :func:`attentionflow.inversion.skips_source_uncond`)."""
    step: int = 0
    """Denoising step index, 0 at the noisiest step."""
    num_steps: int = 1
    """Total number of denoising steps T."""
    frame_mode: FrameMode = "cross_frame"
    """``per_frame`` (plain attention, used for inversion) or ``cross_frame`` (sparse-causal/dense)."""
    latent_size: tuple[int, int] = (0, 0)
    """(h, w) of the latents, so a controller can turn a query count Q into a map size."""
    resolutions: dict[int, tuple[int, int]] = field(default_factory=dict)
    """Query count Q -> (h, w) map size for every attention resolution of the UNet."""

    @property
    def video_frames(self) -> int:
        """Frames per branch of the whole video (``total_frames``, or ``num_frames`` when that is 0)."""
        return self.total_frames or self.num_frames

    @property
    def chunked(self) -> bool:
        """True when the call holds only some of the video's frames (a chunk)."""
        return self.video_frames > self.num_frames

    @property
    def frames(self) -> slice:
        """The video's frames in the current call: ``frame_start .. frame_start + num_frames``."""
        return slice(self.frame_start, self.frame_start + self.num_frames)

    def set_chunk(self, frames: slice) -> None:
        """Point the state at the frames ``frames`` (a slice with start and stop) of the video."""
        self.frame_start, self.num_frames = int(frames.start), int(frames.stop - frames.start)

    def enter(self, step: int, frames: slice) -> None:
        """Point the state at step ``step`` and the video frames ``frames``: the ``before_chunk`` / ``before_step``
        hook of the loops of ``attentionflow/inversion.py`` (the controllers and processors read both)."""
        self.step = step
        self.set_chunk(frames)

    @property
    def groups(self) -> int:
        """G: 2 with classifier-free guidance, else 1."""
        return 2 if self.cfg else 1

    def map_size(self, num_queries: int) -> tuple[int, int]:
        """(h, w) of an attention map with ``num_queries`` queries."""
        try:
            return self.resolutions[num_queries]
        except KeyError as exc:  # pragma: no cover - programming error
            raise ValueError(f"unknown attention resolution with {num_queries} queries; "
                             f"known: {sorted(self.resolutions)}") from exc

    def site_size(self, site: AttentionSite) -> tuple[int, int] | None:
        """(h, w) of the attention maps at ``site`` for ``latent_size``; None when the level or size is unknown.

        Lets a controller decide by resolution in ``wants_probs``, before any probabilities exist.
        """
        h, w = self.latent_size
        if site.level is None or h <= 0 or w <= 0:
            return None
        for _ in range(site.level):
            h, w = math.ceil(h / 2), math.ceil(w / 2)  # strided convolutions round up
        return h, w

    def cond_view(self, probs: torch.Tensor) -> torch.Tensor:
        """View of the conditional half of ``probs`` as ``(B, F, heads, Q, K)`` (shares memory).

        ``probs``: ``(G*B*F, heads, Q, K)`` (``(G*B-1)*F`` rows without the unconditional source branch); the
        conditional half is its last ``B*F`` rows.
        """
        b, f = self.num_branches, self.num_frames
        return probs[probs.shape[0] - b * f:].view(b, f, *probs.shape[1:])

    def cond_rows(self, probs: torch.Tensor, tokens: tuple[int, int]) -> torch.Tensor:
        """The conditional half's maps of the key tokens ``lo .. hi - 1`` as rows: a ``(B, F, heads, K', Q)`` view of
        ``probs`` ``(G*B*F, heads, Q, K)``, shares memory; each token's map one contiguous row when ``probs`` is
        token-major."""
        b, f = self.num_branches, self.num_frames
        lo, hi = tokens
        if probs.shape[0] < b * f or not 0 <= lo <= hi <= probs.shape[-1]:
            raise ValueError(f"probabilities {tuple(probs.shape)} have no conditional half of B*F = {b}*{f} rows "
                             f"and key tokens [{lo}, {hi})")
        return token_rows(self.cond_view(probs), tokens)

    def share_source(self, x: torch.Tensor, frames_folded: bool = False) -> torch.Tensor:
        """Copy of ``x`` whose conditional edit branches hold the conditional source branch's values.

        ``x``: ``(G*B*F, ...)``, or ``(G*B, ...)`` with ``frames_folded`` (one block fewer without the
        unconditional source branch); other rows unchanged.
        """
        b = self.num_branches
        rows = 1 if frames_folded else self.num_frames
        y = x.clone()
        cond = y[y.shape[0] - b * rows:].view(b, rows, *x.shape[1:])  # (B, F or 1, ...) the conditional half
        cond[1:] = cond[:1]  # (B-1, F, ...) <- source branch
        return y


class AttentionController:
    """Base class: sees (and may edit) attention probabilities, and may edit latents after each step.

    Subclasses override what they need. A controller must be cheap to call and keep its tensors on
    the device of the probabilities it receives.
    """

    def wants_probs(self, site: AttentionSite, state: AttentionState) -> bool:
        """Return True if this controller needs explicit probabilities at ``site`` for this step."""
        return False

    def __call__(self, probs: torch.Tensor, site: AttentionSite, state: AttentionState) -> torch.Tensor:
        """Edit ``probs`` ``(G*B*F, heads, Q, K)``; return the (possibly new) tensor."""
        return probs

    def shares_source_self_attention(self, site: AttentionSite, state: AttentionState) -> bool:
        """True if, at this self-attention site, the conditional edit branches must attend exactly as
        the source branch does (prompt-to-prompt self-attention replacement).

        The processor then gives every conditional branch the source branch's queries and keys:
        ``softmax(q_0 k_0^T) v_b`` equals replacing the edit probabilities by the source ones, but
        runs on SDPA without materialising them (dense attention over many frames stays bounded).
        """
        return False

    def step_end(self, latents: torch.Tensor, state: AttentionState) -> torch.Tensor:
        """Called after each denoising step with latents ``(B*F, C, h, w)``; may return edited latents."""
        return latents

    def reset(self) -> None:
        """Forget all per-run state (called at the start of a run)."""


class ControllerChain(AttentionController):
    """Applies several controllers in order (e.g. prompt-to-prompt, then MMI, then a store)."""

    def __init__(self, controllers: Sequence[AttentionController]) -> None:
        self.controllers = list(controllers)

    def wants_probs(self, site: AttentionSite, state: AttentionState) -> bool:
        return any(c.wants_probs(site, state) for c in self.controllers)

    def __call__(self, probs: torch.Tensor, site: AttentionSite, state: AttentionState) -> torch.Tensor:
        for c in self.controllers:
            if c.wants_probs(site, state):
                probs = c(probs, site, state)
        return probs

    def shares_source_self_attention(self, site: AttentionSite, state: AttentionState) -> bool:
        return any(c.shares_source_self_attention(site, state) for c in self.controllers)

    def step_end(self, latents: torch.Tensor, state: AttentionState) -> torch.Tensor:
        for c in self.controllers:
            latents = c.step_end(latents, state)
        return latents

    def reset(self) -> None:
        for c in self.controllers:
            c.reset()


class DeviceTables:
    """Small constant tensors, copied once per (device, dtype) instead of on every layer call."""

    def __init__(self, **tables: torch.Tensor) -> None:
        self._cpu = tables
        self._cache: dict[tuple[torch.device, torch.dtype], dict[str, torch.Tensor]] = {}

    def on(self, like: torch.Tensor) -> dict[str, torch.Tensor]:
        key = (like.device, like.dtype)
        if key not in self._cache:
            self._cache[key] = {k: (v.to(like.device, like.dtype) if v.is_floating_point() else v.to(like.device))
                                for k, v in self._cpu.items()}
        return self._cache[key]
