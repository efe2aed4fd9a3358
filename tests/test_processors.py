"""Cross-frame attention processors: equivalence with diffusers, reference computations, install/restore."""

from __future__ import annotations

import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from attentionflow.attention.base import AttentionController, AttentionSite, AttentionState
from attentionflow.attention.processors import (
    TOKEN_MAJOR_MIN_QUERIES,
    AttentionRuntime,
    FrameAttnProcessor,
    attention_resolutions,
    attention_sites,
    install_attention,
)


class Identity(AttentionController):
    """Wants probabilities everywhere, returns them unchanged, records what it saw."""

    def __init__(self) -> None:
        self.seen: dict[str, tuple[int, ...]] = {}
        self.row_sums_ok = True

    def wants_probs(self, site: AttentionSite, state: AttentionState) -> bool:
        return True

    def __call__(self, probs: torch.Tensor, site: AttentionSite, state: AttentionState) -> torch.Tensor:
        self.seen[site.name] = tuple(probs.shape)
        self.row_sums_ok &= bool(torch.allclose(probs.sum(-1), torch.ones(()), atol=1e-5))
        return probs


def _unet_inputs(num_videos: int, num_frames: int, size: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    n = num_videos * num_frames
    latents = torch.randn(n, 4, size, size, generator=g)
    text = torch.randn(n, 77, 32, generator=g)
    return latents, text


def _run(unet, latents, text):
    with torch.no_grad():
        return unet(latents, 10, encoder_hidden_states=text).sample


def test_per_frame_matches_stock_processor_with_and_without_probs(tiny):
    unet = tiny.unet
    latents, text = _unet_inputs(num_videos=2, num_frames=3)
    reference = _run(unet, latents, text)
    assert all(isinstance(p, AttnProcessor2_0) for p in unet.attn_processors.values())

    state = AttentionState(num_frames=3, num_branches=2, frame_mode="per_frame")
    runtime = AttentionRuntime(state=state)
    with install_attention(unet, runtime) as sites:
        sdpa = _run(unet, latents, text)
        runtime.controller = Identity()
        explicit = _run(unet, latents, text)
    torch.testing.assert_close(sdpa, reference, atol=1e-5, rtol=0)
    torch.testing.assert_close(explicit, reference, atol=1e-5, rtol=0)
    # the explicit path really ran at every site, with row-normalised probabilities
    assert set(runtime.controller.seen) == {s.name for s in sites.values()}
    assert runtime.controller.row_sums_ok


def test_cross_frame_explicit_probs_equal_sdpa_and_differ_from_per_frame(tiny):
    unet = tiny.unet
    f = 4
    latents, text = _unet_inputs(num_videos=2, num_frames=f, seed=1)
    state = AttentionState(num_frames=f, num_branches=2, frame_mode="cross_frame")
    runtime = AttentionRuntime(state=state)
    with install_attention(unet, runtime) as sites:
        sdpa = _run(unet, latents, text)
        runtime.controller = Identity()
        explicit = _run(unet, latents, text)
        seen = runtime.controller.seen
        runtime.controller = None
        state.frame_mode = "per_frame"
        per_frame = _run(unet, latents, text)
    torch.testing.assert_close(explicit, sdpa, atol=1e-5, rtol=0)
    assert (sdpa - per_frame).abs().max() > 1e-3
    # key counts seen by controllers: 2N for sparse-causal, F*N for dense, 77 for cross-attention
    for site in sites.values():
        _, _, q, k = seen[site.name]
        expected = 77 if site.is_cross else (f * q if site.dense else 2 * q)
        assert k == expected, site.name


def test_no_sc_no_st_cross_frame_is_per_frame(tiny):
    unet = tiny.unet
    latents, text = _unet_inputs(num_videos=1, num_frames=3, seed=2)
    reference = _run(unet, latents, text)
    runtime = AttentionRuntime(state=AttentionState(num_frames=3, frame_mode="cross_frame"))
    with install_attention(unet, runtime, use_sc=False, use_st=False) as sites:
        out = _run(unet, latents, text)
    assert not any(s.dense for s in sites.values())
    torch.testing.assert_close(out, reference, atol=1e-5, rtol=0)


def test_processors_restored_on_exit_and_on_exception(tiny):
    unet = tiny.unet
    original = dict(unet.attn_processors)
    runtime = AttentionRuntime(state=AttentionState())
    with install_attention(unet, runtime):
        assert all(isinstance(p, FrameAttnProcessor) for p in unet.attn_processors.values())
    assert all(unet.attn_processors[k] is v for k, v in original.items())
    with pytest.raises(RuntimeError, match="boom"):
        with install_attention(unet, runtime):
            raise RuntimeError("boom")
    after = unet.attn_processors
    assert set(after) == set(original)
    assert all(after[k] is v for k, v in original.items())


def test_attention_sites_on_tiny_unet(tiny):
    unet = tiny.unet
    sites = attention_sites(unet, st_attn_idx=0)
    assert set(sites) == set(unet.attn_processors)
    assert sum(s.is_cross for s in sites.values()) == 7
    assert sum(not s.is_cross for s in sites.values()) == 7
    dense = {s.name for s in sites.values() if s.dense}
    assert dense == {
        "down_blocks.0.attentions.0.transformer_blocks.0.attn1",
        "up_blocks.1.attentions.0.transformer_blocks.0.attn1",
        "mid_block.attentions.0.transformer_blocks.0.attn1",
    }
    site = sites["up_blocks.1.attentions.1.transformer_blocks.0.attn2.processor"]
    assert (site.place, site.block_index, site.is_cross, site.dense) == ("up", 1, True, False)
    assert sites["mid_block.attentions.0.transformer_blocks.0.attn1.processor"].place == "mid"
    # st_attn_idx=1: down block 1 and the mid block; the UNet has no up block 2 (skipped)
    dense1 = {s.name for s in attention_sites(unet, st_attn_idx=1).values() if s.dense}
    assert dense1 == {"down_blocks.1.attentions.0.transformer_blocks.0.attn1",
                      "mid_block.attentions.0.transformer_blocks.0.attn1"}
    assert not any(s.dense for s in attention_sites(unet, use_st=False).values())


def test_site_map_size_matches_observed_queries(tiny):
    """The static level of each site predicts the query count the layer actually sees (odd size too)."""
    unet = tiny.unet
    latents = torch.randn(2, 4, 7, 9)
    text = torch.randn(2, 77, 32)
    state = AttentionState(num_frames=2, frame_mode="per_frame", latent_size=(7, 9))
    runtime = AttentionRuntime(state=state, controller=Identity())
    with install_attention(unet, runtime) as sites:
        _run(unet, latents, text)
    seen = runtime.controller.seen
    for site in sites.values():
        h, w = state.site_size(site)
        assert seen[site.name][2] == h * w, site.name
    assert attention_resolutions(sites, (7, 9)) == {63: (7, 9), 20: (4, 5)}


# ---- single attention module against straightforward references -----------------------------------


def _module(seed: int = 0) -> Attention:
    torch.manual_seed(seed)
    return Attention(query_dim=12, heads=3, dim_head=4).eval()


def _attend(attn: Attention, x: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
    """Reference attention of queries from ``x`` (N, C) over keys/values from ``ctx`` (M, C)."""
    h = attn.heads
    q = attn.to_q(x).view(x.shape[0], h, -1).transpose(0, 1)  # (h, N, d)
    k = attn.to_k(ctx).view(ctx.shape[0], h, -1).transpose(0, 1)  # (h, M, d)
    v = attn.to_v(ctx).view(ctx.shape[0], h, -1).transpose(0, 1)
    p = torch.softmax(q @ k.transpose(1, 2) * attn.scale, dim=-1)
    out = (p @ v).transpose(0, 1).reshape(x.shape[0], -1)
    return attn.to_out[0](out)


def _reference(attn: Attention, x: torch.Tensor, num_frames: int, dense: bool) -> torch.Tensor:
    videos = x.view(-1, num_frames, *x.shape[1:])
    out = torch.empty_like(videos)
    for v in range(videos.shape[0]):
        for i in range(num_frames):
            if dense:
                ctx = videos[v].reshape(-1, x.shape[-1])
            else:
                ctx = torch.cat([videos[v, 0], videos[v, max(i - 1, 0)]])
            out[v, i] = _attend(attn, videos[v, i], ctx)
    return out.view_as(x)


def _apply(attn: Attention, x: torch.Tensor, num_frames: int, dense: bool, mode: str = "cross_frame",
           controller: AttentionController | None = None) -> torch.Tensor:
    site = AttentionSite(name="attn1", is_cross=False, place="down", block_index=0, dense=dense)
    runtime = AttentionRuntime(state=AttentionState(num_frames=num_frames, frame_mode=mode), controller=controller)
    attn.set_processor(FrameAttnProcessor(site, runtime))
    with torch.no_grad():
        return attn(x)


@pytest.mark.parametrize("dense", [False, True])
@pytest.mark.parametrize("explicit", [False, True])
def test_single_module_matches_reference(dense, explicit):
    attn = _module()
    f = 5
    x = torch.randn(2 * f, 6, 12)  # two videos of five frames, 6 tokens each
    out = _apply(attn, x, f, dense, controller=Identity() if explicit else None)
    with torch.no_grad():
        ref = _reference(attn, x, f, dense)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def test_sparse_causal_properties():
    attn = _module(1)
    f = 6
    x = torch.randn(f, 5, 12)
    out = _apply(attn, x, f, dense=False)
    per_frame = _apply(attn, x, f, dense=False, mode="per_frame")
    torch.testing.assert_close(out[0], per_frame[0], atol=1e-5, rtol=0)
    assert (out[1:] - per_frame[1:]).abs().max() > 1e-4

    y = x.clone()
    y[3] += torch.randn(5, 12)
    out2 = _apply(attn, y, f, dense=False)
    assert (out2[4] - out[4]).abs().max() > 1e-4  # frame 4 attends to frame 3
    for i in (0, 1, 2, 5):  # nobody else looks at frame 3
        torch.testing.assert_close(out2[i], out[i], atol=1e-6, rtol=0)


class _SelfReplace(AttentionController):
    """Replaces the conditional edit branches' self-attention by the source's, either way."""

    def __init__(self, explicit: bool) -> None:
        self.explicit = explicit

    def wants_probs(self, site, state):
        return self.explicit and not site.is_cross

    def __call__(self, probs, site, state):
        cond = state.cond_view(probs)  # (B, F, heads, Q, K)
        cond[1:] = cond[:1]
        return probs

    def shares_source_self_attention(self, site, state):
        return not self.explicit and not site.is_cross


@pytest.mark.parametrize("st", [False, True])
def test_shared_source_pattern_equals_explicit_replacement(tiny, st):
    """SDPA with the source's queries/keys == materialised probabilities replaced by the source's."""
    torch.manual_seed(0)
    frames, branches = 3, 2
    x = torch.randn(2 * branches * frames, 4, 8, 8)
    emb = torch.randn(2 * branches * frames, 77, 32)
    outs = []
    for explicit in (True, False):
        state = AttentionState(num_frames=frames, num_branches=branches, cfg=True, frame_mode="cross_frame",
                               latent_size=(8, 8))
        runtime = AttentionRuntime(state=state, controller=_SelfReplace(explicit))
        with install_attention(tiny.unet, runtime, use_st=st), torch.no_grad():
            outs.append(tiny.unet(x, 10, encoder_hidden_states=emb).sample)
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=1e-4)
    with torch.no_grad():  # and it differs from no replacement at all
        plain_state = AttentionState(num_frames=frames, num_branches=branches, cfg=True, frame_mode="cross_frame")
        with install_attention(tiny.unet, AttentionRuntime(state=plain_state), use_st=st):
            plain = tiny.unet(x, 10, encoder_hidden_states=emb).sample
    assert not torch.allclose(plain.view(2, branches, frames, -1)[1, 1], outs[1].view(2, branches, frames, -1)[1, 1])
    torch.testing.assert_close(plain.view(2, branches, frames, -1)[0], outs[1].view(2, branches, frames, -1)[0])


@pytest.mark.parametrize("queries", [TOKEN_MAJOR_MIN_QUERIES - 1, TOKEN_MAJOR_MIN_QUERIES, 40])
@pytest.mark.parametrize("mask", ["none", "bool", "additive"])
@pytest.mark.parametrize("upcast", [False, True])
def test_explicit_probabilities_are_the_softmax(queries, mask, upcast):
    """``_probs`` is softmax(q k^T * scale + mask) over the keys (computed here the textbook way), on either side of
    the query count where the processor changes its memory layout; ``_apply`` multiplies them by the values into the
    layer's (Bt, Q, heads*d)."""
    attn = Attention(query_dim=8, heads=2, dim_head=4, upcast_attention=upcast, upcast_softmax=upcast)
    g = torch.Generator().manual_seed(3)
    bt, heads, nq, nk, d = 3, 2, queries, 5, 4
    q = torch.randn(bt, heads, nq, d, generator=g)
    k = torch.randn(bt, heads, nk, d, generator=g)
    v = torch.randn(bt, heads, nk, d, generator=g)
    scores = q @ k.transpose(-1, -2) * attn.scale  # (Bt, heads, Q, K)
    m = None
    if mask == "bool":
        m = torch.rand(bt, 1, nq, nk, generator=g) > 0.3
        m[..., 0] = True  # every query keeps a key
        scores = scores.masked_fill(~m, float("-inf"))
    elif mask == "additive":
        m = torch.randn(bt, heads, 1, nk, generator=g)
        scores = scores + m
    probs = FrameAttnProcessor._probs(attn, q, k, m)
    assert probs.shape == (bt, heads, nq, nk)
    expected = scores.softmax(dim=-1)
    torch.testing.assert_close(probs, expected, atol=1e-6, rtol=0)
    if mask == "bool":
        assert torch.all(probs[~m.expand_as(probs)] == 0)
    out = FrameAttnProcessor._apply(probs, v)  # (Bt, Q, heads*d)
    expected_out = torch.einsum("bhqk,bhkd->bqhd", expected, v).reshape(bt, nq, heads * d)
    torch.testing.assert_close(out, expected_out, atol=1e-5, rtol=0)
