"""Diffusers attention processors for video: per-frame, sparse-causal and dense spatial-temporal.

Frames are folded into the batch of a 2D UNet (``Bt = G * B * F`` in ``(g, b, f)`` order, see
:mod:`attentionflow.attention.base`). One :class:`FrameAttnProcessor` is installed per attention
module; all of them share one :class:`AttentionRuntime` (the mutable :class:`AttentionState` plus the
current controller), which the pipeline updates between steps.

Self-attention modes (``state.frame_mode``):

* ``per_frame``: plain attention inside each frame (identical to diffusers' ``AttnProcessor2_0``);
  used for inversion.
* ``cross_frame``: at *dense* sites every frame attends to the tokens of all ``F`` frames of its
  video; elsewhere *sparse-causal* attention: frame ``i`` attends to frame 0 and frame ``i-1``
  (frame 0 attends to frame 0 twice, as vid2vid-zero does).

Frame chunks (``chunk_frames``): a call may hold only frames ``s .. s + n - 1`` of the video
(``state.frame_start``, ``state.num_frames``, ``state.total_frames``); the chunks of one step run in frame order.
Each self-attention layer then keeps, in :attr:`AttentionRuntime.anchors`, the keys and values of frame 0 and of
the last frame of the chunk it has just processed (``(G*B, heads, N, d)`` each, per layer: bounded, whatever the
number of frames).

* Sparse-causal attention stays exact: frame ``s`` takes frame ``s - 1`` from the kept last frame, and every
  frame of the chunk takes frame 0 from the kept first one.
* Dense spatial-temporal attention cannot be split exactly; the scheme is: every frame of a chunk attends to the
  frames of its chunk, to frame 0 and to frame ``s - 1`` (the frame before the chunk), in frame order. A chunk that
  holds the whole video gives the unchunked dense attention exactly; docs/long_videos.md measures the difference.

Probabilities are only materialised where the controller asks for them
(:meth:`AttentionController.wants_probs`); everywhere else ``F.scaled_dot_product_attention`` runs. Materialised
probabilities are token-major in memory from :data:`TOKEN_MAJOR_MIN_QUERIES` queries on (see
:meth:`FrameAttnProcessor._probs`).
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, Literal

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention

from attentionflow.attention.base import AttentionController, AttentionSite, AttentionState, is_token_major

__all__ = [
    "AttentionRuntime",
    "FrameAnchors",
    "FrameAttnProcessor",
    "TOKEN_MAJOR_MIN_QUERIES",
    "attention_resolutions",
    "attention_sites",
    "install_attention",
]

_KeyMode = Literal["self", "sparse", "dense"]

#: Explicit probabilities of layers with at least this many queries are made token-major
#: (:meth:`FrameAttnProcessor._probs`). Measured on this project's CPU (scores, softmax and the product with the
#: values,
#: 1 and 2 threads): token-major 0.87-0.98x the query-major time from 16 queries up to 4096, but 1.4-1.8x at 4 and 8
#: queries (each token's row then holds only 4-8 floats).
TOKEN_MAJOR_MIN_QUERIES = 16
_BLOCK_RE = re.compile(r"^(down_blocks|up_blocks)\.(\d+)\.|^(mid_block)\.")


def attention_resolutions(sites: dict[str, AttentionSite], latent_size: tuple[int, int]) -> dict[int, tuple[int, int]]:
    """Query count -> (h, w) map size for every attention resolution (for ``AttentionState.resolutions``)."""
    state = AttentionState(latent_size=latent_size)
    out: dict[int, tuple[int, int]] = {}
    for site in sites.values():
        size = state.site_size(site)
        if size is not None:
            out[size[0] * size[1]] = size
    return dict(sorted(out.items()))


@dataclass
class FrameAnchors:
    """Keys and values an earlier chunk of the same step left for the next one at one self-attention layer.

    Each tensor is ``(G*B, heads, N, d)``: one row per video of the batch (guidance half x branch).
    """

    first_key: torch.Tensor
    """Frame 0's keys."""
    first_value: torch.Tensor
    """Frame 0's values."""
    last_key: torch.Tensor
    """The keys of the last frame processed (frame ``last_index``)."""
    last_value: torch.Tensor
    """Its values."""
    last_index: int
    """Index in the video of that last frame."""


@dataclass
class AttentionRuntime:
    """What all processors of one UNet share: the mutable state, the current controller and, when frames are
    processed in chunks, each self-attention layer's :class:`FrameAnchors` (keyed by the layer's name)."""

    state: AttentionState
    controller: AttentionController | None = None
    anchors: dict[str, FrameAnchors] = field(default_factory=dict)


def _frame_keys(x: torch.Tensor, num_frames: int, mode: _KeyMode,
                before: list[torch.Tensor] | None = None) -> torch.Tensor:
    """Gather the key/value tokens each frame attends to.

    ``x``: ``(Bt, heads, N, d)`` per-frame tokens (``Bt = G*B*F``); returns ``(Bt, heads, K, d)`` with
    ``K = 2N`` (sparse-causal: frame 0 then frame ``i-1``) or ``K = (A + F) * N`` (dense: the ``A`` frames of
    ``before``, then all frames of ``x``). Also used for attention masks ``(Bt, heads, q, N)`` with the token axis
    last (see caller).

    ``before``: for a chunk that does not start at frame 0, ``[frame 0, frame s-1]`` tokens ``(G*B, heads, N, d)``
    from earlier chunks (dense: the anchor frames of the scheme, see the module docstring); None for the first
    chunk or the whole video.
    """
    bt, heads, n, d = x.shape
    x5 = x.view(bt // num_frames, num_frames, heads, n, d)  # (GB, F, heads, N, d)
    if mode == "sparse":
        if before is None:
            prev = (torch.arange(num_frames, device=x.device) - 1).clamp_min(0)  # frame i -> i-1, 0 -> 0
            first = x5[:, :1].expand_as(x5)  # (GB, F, heads, N, d): frame 0 for every frame
            previous = x5.index_select(1, prev)
        else:
            first = before[0][:, None].expand_as(x5)  # frame 0 of the video
            previous = torch.cat([before[-1][:, None], x5[:, :-1]], dim=1)  # frame s-1, then the chunk's i-1
        out = torch.cat([first, previous], dim=3)  # (GB, F, heads, 2N, d)
        return out.reshape(bt, heads, 2 * n, d)
    # dense: every frame sees the anchor frames and all frames of the call, in frame order
    if before:
        x5 = torch.cat([torch.stack(before, dim=1), x5], dim=1)  # (GB, A + F, heads, N, d)
    total = x5.shape[1]
    allf = x5.permute(0, 2, 1, 3, 4).reshape(bt // num_frames, 1, heads, total * n, d)  # (GB, 1, heads, K, d)
    return allf.expand(-1, num_frames, -1, -1, -1).reshape(bt, heads, total * n, d)


def _frame_mask(mask: torch.Tensor, num_frames: int, mode: _KeyMode) -> torch.Tensor:
    """Key mask for cross-frame keys: ``(Bt, heads, q, N)`` -> ``(Bt, heads, q, K)`` (K as in :func:`_frame_keys`)."""
    moved = mask.transpose(-1, -2)  # (Bt, heads, N, q): tokens on the gathered axis
    return _frame_keys(moved.contiguous(), num_frames, mode).transpose(-1, -2)


class FrameAttnProcessor:
    """Attention processor for frames folded into the batch (see the module docstring).

    Callable like diffusers' ``AttnProcessor2_0``. Between calls it keeps tensors only when frames are processed in
    chunks: its layer's :class:`FrameAnchors` in the shared runtime.

    Args:
        site: static description of the layer this processor is installed on.
        runtime: shared state + controller.
        sparse_causal: if False, non-dense self-attention stays per-frame in ``cross_frame`` mode.
    """

    def __init__(self, site: AttentionSite, runtime: AttentionRuntime, *, sparse_causal: bool = True) -> None:
        self.site = site
        self.runtime = runtime
        self.sparse_causal = sparse_causal

    def _key_mode(self, is_self: bool) -> _KeyMode:
        if not is_self or self.site.is_cross or self.runtime.state.frame_mode != "cross_frame":
            return "self"
        if self.site.dense:
            return "dense"
        return "sparse" if self.sparse_causal else "self"

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> torch.Tensor:
        """``hidden_states``: ``(Bt, N, C)`` or ``(Bt, C, h, w)``; returns the same shape."""
        state = self.runtime.state
        controller = self.runtime.controller
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)

        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)  # (Bt, N, C)

        is_self = encoder_hidden_states is None
        batch_size, sequence_length, _ = hidden_states.shape if is_self else encoder_hidden_states.shape

        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            # (Bt, heads, q, K)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])

        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)  # (Bt, N, heads*d)
        if is_self:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)  # (Bt, Nk, heads*d)
        value = attn.to_v(encoder_hidden_states)

        num_frames = state.num_frames
        mode = self._key_mode(is_self)
        if mode != "self" and batch_size % num_frames:
            raise ValueError(f"batch of {batch_size} is not a multiple of num_frames={num_frames} "
                             f"at {self.site.name}")
        heads = attn.heads
        head_dim = key.shape[-1] // heads
        explicit = controller is not None and controller.wants_probs(self.site, state)
        share = (is_self and not explicit and controller is not None and state.num_branches > 1
                 and controller.shares_source_self_attention(self.site, state))

        if mode != "self" and state.chunked and attention_mask is not None:
            raise ValueError(f"self-attention masks are not supported with frame chunks (at {self.site.name}); "
                             f"use chunk_frames of at least the number of frames")
        groups = batch_size // num_frames
        before_k, before_v = self._anchors(state, mode, groups)

        if mode == "dense" and not explicit and attention_mask is None:
            # All frames of a video share their keys: fold frames into the query axis (no copies).
            # (GB, heads, F*N, d)
            q = query.view(groups, num_frames * sequence_length, heads, head_dim).transpose(1, 2)
            k = key.view(groups, num_frames * sequence_length, heads, head_dim).transpose(1, 2)
            v = value.view(groups, num_frames * sequence_length, heads, head_dim).transpose(1, 2)
            if attn.norm_q is not None:
                q = attn.norm_q(q)
            if attn.norm_k is not None:
                k = attn.norm_k(k)
            if share:
                q, k = state.share_source(q, frames_folded=True), state.share_source(k, frames_folded=True)
            if state.chunked:
                shape = (groups, heads, num_frames, sequence_length, head_dim)
                self._keep(state, k.view(shape).transpose(1, 2), v.view(shape).transpose(1, 2))  # (GB, F, heads, N, d)
                if before_k is not None:
                    k = torch.cat([*before_k, k], dim=2)  # (GB, heads, (A + F) * N, d): anchors first, frame order
                    v = torch.cat([*before_v, v], dim=2)
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=0.0, is_causal=False, scale=attn.scale)
            out = out.transpose(1, 2).reshape(batch_size, -1, heads * head_dim)  # (Bt, N, heads*d)
        else:
            q = query.view(batch_size, -1, heads, head_dim).transpose(1, 2)  # (Bt, heads, Q, d)
            k = key.view(batch_size, -1, heads, head_dim).transpose(1, 2)  # (Bt, heads, Nk, d)
            v = value.view(batch_size, -1, heads, head_dim).transpose(1, 2)
            if attn.norm_q is not None:
                q = attn.norm_q(q)
            if attn.norm_k is not None:
                k = attn.norm_k(k)
            if share:  # edit branches attend with the source's pattern (P2P self-attention replacement)
                q, k = state.share_source(q), state.share_source(k)
            if mode != "self":
                if state.chunked:
                    shape = (groups, num_frames, heads, k.shape[2], head_dim)
                    self._keep(state, k.view(shape), v.view(shape))  # (GB, F, heads, N, d)
                k = _frame_keys(k, num_frames, mode, before_k)  # (Bt, heads, K, d)
                v = _frame_keys(v, num_frames, mode, before_v)
                if attention_mask is not None:
                    attention_mask = _frame_mask(attention_mask, num_frames, mode)
            if explicit:
                assert controller is not None
                probs = self._probs(attn, q, k, attention_mask)  # (Bt, heads, Q, K)
                probs = controller(probs, self.site, state)
                out = self._apply(probs, v)  # (Bt, Q, heads*d)
            else:
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask, dropout_p=0.0,
                                                     is_causal=False, scale=attn.scale)
                out = out.transpose(1, 2).reshape(batch_size, -1, heads * head_dim)  # (Bt, Q, heads*d)
        out = out.to(query.dtype)

        out = attn.to_out[0](out)
        out = attn.to_out[1](out)
        if input_ndim == 4:
            out = out.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor

    def _anchors(self, state: AttentionState, mode: _KeyMode,
                 groups: int) -> tuple[list[torch.Tensor] | None, list[torch.Tensor] | None]:
        """Keys and values ``(G*B, heads, N, d)`` of earlier chunks that this chunk's frames attend to (see the module
        docstring): ``[frame 0, frame s-1]`` (dense: frame 0 alone when ``s == 1``); None, None without chunks or for
        the first chunk."""
        if mode == "self" or not state.chunked or state.frame_start == 0:
            return None, None
        kept = self.runtime.anchors.get(self.site.name)
        if kept is None or kept.last_index != state.frame_start - 1 or kept.first_key.shape[0] != groups:
            raise ValueError(f"frame chunk starting at frame {state.frame_start} at {self.site.name}: the chunk "
                             f"before it did not run in this step (chunks of a step must run in frame order)")
        if mode == "dense" and state.frame_start == 1:
            return [kept.first_key], [kept.first_value]
        return [kept.first_key, kept.last_key], [kept.first_value, kept.last_value]

    def _keep(self, state: AttentionState, k5: torch.Tensor, v5: torch.Tensor) -> None:
        """Keep frame 0's and the chunk's last frame's keys/values for the next chunk; ``k5``/``v5``:
        ``(G*B, F, heads, N, d)``. Copies (a view would keep the whole chunk's tensor alive)."""
        name = self.site.name
        if state.frame_start == 0:
            first_k, first_v = k5[:, 0].detach().clone(), v5[:, 0].detach().clone()
        else:
            first_k, first_v = self.runtime.anchors[name].first_key, self.runtime.anchors[name].first_value
        self.runtime.anchors[name] = FrameAnchors(
            first_key=first_k, first_value=first_v, last_key=k5[:, -1].detach().clone(),
            last_value=v5[:, -1].detach().clone(), last_index=state.frame_start + state.num_frames - 1)

    @staticmethod
    def _probs(attn: Attention, q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """softmax(q k^T * scale [+ mask]) over the keys: ``(Bt, heads, Q, d)`` x ``(Bt, heads, K, d)`` ->
        ``(Bt, heads, Q, K)``.

        From :data:`TOKEN_MAJOR_MIN_QUERIES` queries on, the result is laid out **token-major**: the transposed view
        of a contiguous ``(Bt, heads, K, Q)`` tensor, each key token's map over the queries one contiguous row.
        Controllers see the same logical tensor either way; the layout makes what they read per token (MMI's
        similarity, fusion and swap, the stores' maps) a contiguous block instead of a few floats in every query's
        row. ``benchmarks/bench_similarity.py`` measures both layouts where the probabilities are made and used.
        """
        dtype = q.dtype
        if attn.upcast_attention:
            q, k = q.float(), k.float()
        token_major = q.shape[-2] >= TOKEN_MAJOR_MIN_QUERIES
        if token_major:
            scores = torch.matmul(k, q.transpose(-1, -2)).mul_(attn.scale)  # (Bt, heads, K, Q)
            mask = None if mask is None else mask.transpose(-1, -2)  # (Bt, heads, K, q) like the scores
        else:
            scores = torch.matmul(q, k.transpose(-1, -2)).mul_(attn.scale)  # (Bt, heads, Q, K)
        if mask is not None:
            if mask.dtype == torch.bool:
                scores = scores.masked_fill(~mask, float("-inf"))
            else:
                scores = scores + mask.to(scores.dtype)
        if attn.upcast_softmax:
            scores = scores.float()
        if token_major:
            return scores.softmax(dim=-2).to(dtype).transpose(-1, -2)  # (Bt, heads, Q, K) view
        return scores.softmax(dim=-1).to(dtype)  # (Bt, heads, Q, K)

    @staticmethod
    def _apply(probs: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``probs @ v``: ``(Bt, heads, Q, K)`` x ``(Bt, heads, K, d)`` -> ``(Bt, Q, heads*d)``, the layer's
        layout. Token-major probabilities are multiplied as ``(v^T p^T)^T``, which reads both in memory order."""
        bt, heads, _, d = v.shape
        probs = probs.to(v.dtype)
        if is_token_major(probs):
            out_t = torch.matmul(v.transpose(-1, -2), probs.transpose(-1, -2))  # (Bt, heads, d, Q)
            return out_t.permute(0, 3, 1, 2).reshape(bt, -1, heads * d)  # (Bt, Q, heads*d)
        out = torch.matmul(probs, v)  # (Bt, heads, Q, d)
        return out.transpose(1, 2).reshape(bt, -1, heads * d)  # (Bt, Q, heads*d)


def _block_of(name: str) -> tuple[str, int] | None:
    """``down_blocks.2.attentions...`` -> ("down", 2); ``mid_block...`` -> ("mid", 0); else None."""
    m = _BLOCK_RE.match(name)
    if m is None:
        return None
    if m.group(3):
        return "mid", 0
    return ("down" if m.group(1) == "down_blocks" else "up"), int(m.group(2))


def _levels(unet: torch.nn.Module) -> dict[tuple[str, int], int]:
    """(place, block index) -> number of 2x downsamplings above the latents at that block."""
    levels: dict[tuple[str, int], int] = {}
    level = 0
    for i, block in enumerate(getattr(unet, "down_blocks", [])):
        levels[("down", i)] = level
        if getattr(block, "downsamplers", None) is not None:
            level += 1
    levels[("mid", 0)] = level
    for i, block in enumerate(getattr(unet, "up_blocks", [])):
        levels[("up", i)] = level
        if getattr(block, "upsamplers", None) is not None:
            level -= 1
    return levels


def attention_sites(
    unet: torch.nn.Module, st_attn_idx: int | None = 0, use_st: bool = True
) -> dict[str, AttentionSite]:
    """Describe every attention module of ``unet``, keyed like ``unet.attn_processors``.

    Dense (spatial-temporal) self-attention goes to the first self-attention module of down block
    ``k``, of up block ``k + 1`` and of the mid block (``k = st_attn_idx``) when ``use_st``; parts the
    UNet lacks are skipped. Returns :class:`AttentionSite` values (with their ``level``).
    """
    levels = _levels(unet)
    dense_blocks: set[tuple[str, int]] = set()
    if use_st and st_attn_idx is not None:
        dense_blocks = {("down", st_attn_idx), ("up", st_attn_idx + 1), ("mid", 0)}
    seen_self: set[tuple[str, int]] = set()
    sites: dict[str, AttentionSite] = {}
    for name, module in unet.named_modules():
        if not isinstance(module, Attention):
            continue
        block = _block_of(name)
        place, index = block if block is not None else ("mid", 0)
        is_cross = bool(module.is_cross_attention)
        dense = False
        if not is_cross and block is not None and block not in seen_self:
            seen_self.add(block)
            dense = block in dense_blocks
        sites[f"{name}.processor"] = AttentionSite(
            name=name, is_cross=is_cross, place=place, block_index=index, dense=dense,
            level=levels.get((place, index), 0),
        )
    return sites


@contextmanager
def install_attention(unet: Any, runtime: AttentionRuntime, *, use_sc: bool = True, use_st: bool = True,
                      st_attn_idx: int = 0) -> Iterator[dict[str, AttentionSite]]:
    """Install a :class:`FrameAttnProcessor` on every attention module of ``unet`` for the ``with`` block.

    ``use_sc=False``: ``cross_frame`` self-attention stays per-frame except at dense sites;
    ``use_st=False``: no dense sites. The original processors (the same objects) are restored on
    exit, also after an exception. Yields the sites keyed like ``unet.attn_processors``.
    """
    original = dict(unet.attn_processors)
    sites = attention_sites(unet, st_attn_idx=st_attn_idx, use_st=use_st)
    missing = set(original) - set(sites)
    if missing:  # pragma: no cover - attention modules diffusers knows but we could not classify
        raise ValueError(f"attention processors without a site: {sorted(missing)[:3]}")
    unet.set_attn_processor({key: FrameAttnProcessor(sites[key], runtime, sparse_causal=use_sc) for key in original})
    try:
        yield sites
    finally:
        unet.set_attn_processor(dict(original))
