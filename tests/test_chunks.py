"""Frame chunks (``chunk_frames``): exact sparse-causal attention across chunks, the documented dense scheme,
bounded UNet batches for long videos, and the chunk size a run chose."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from attentionflow.attention.base import AttentionController, AttentionState
from attentionflow.attention.processors import AttentionRuntime, attention_sites, install_attention
from attentionflow.config import AttentionSettings, InversionSettings, MMIConfig, P2PConfig
from attentionflow.figures import figure_frames
from attentionflow.flow.regions import motion_for_edit
from attentionflow.inversion import frame_chunks
from attentionflow.pipeline import AttentionFlowPipeline

SRC = "a square is moving on the road"
TGT = ["a square is moving on the snow", "a red square is moving on the road"]


@pytest.fixture()
def pipe(tiny):
    """The tiny pipeline in float64: chunks change the batch sizes of the convolutions and matrix products, and so
    their float32 rounding (about 1e-5 of the latents after guidance amplifies it); in float64 that is 1e-13, and any
    difference above the tolerances is the chunking's own."""
    pipe = AttentionFlowPipeline.from_components(tiny, device="cpu", dtype=torch.float64)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _final_latents(pipe, frames, chunk, *, method="direct", region=None, st=False, targets=TGT):
    """The latents after the last sampling step, and the edit's output. ``region``: (F, H, W) bool masks of the
    mover for ``edit_region: moving`` (the square's true masks), or None."""
    settings = InversionSettings.default(num_inference_steps=3, inversion=method)
    attention = AttentionSettings.default(use_st_attn=st, chunk_frames=chunk)
    mmi = MMIConfig(motion_words=["moving"])
    plan = pipe.plan(SRC, targets, settings, attention, mmi=mmi,
                     p2p=P2PConfig(blend_words=["square"], edit_region="all" if region is None else "moving"))
    seen = {}

    def callback(stage, step, total, latents):
        if stage == "editing" and step == total:
            seen["final"] = latents.clone()

    motion, _ = motion_for_edit(frames, mmi.motion_options(), mmi=True, region="all")
    out = pipe.edit(frames, plan, callback=callback, motion=(motion, region))
    return seen["final"], out


@pytest.mark.parametrize(("chunk", "method", "region"), [
    (1, "direct", False), (3, "direct", False), (4, "direct", False), (8, "direct", False),
    (3, "null-text", False), (3, "ddim", True), (5, "negative-prompt", False),
])
def test_chunked_edit_equals_the_unchunked_edit(pipe, square_video, chunk, method, region):
    """Sparse-causal attention, dense ST off, P2P + local blend + MMI on (+ the edit region): every chunk size gives
    the same latents."""
    frames, masks = square_video  # 8 frames: 3 and 5 do not divide it
    region = masks if region else None
    whole, ref = _final_latents(pipe, frames, len(frames), method=method, region=region)
    part, out = _final_latents(pipe, frames, chunk, method=method, region=region)
    assert ref.chunk_frames == len(frames) and out.chunk_frames == chunk
    torch.testing.assert_close(part, whole, atol=1e-5, rtol=0)
    assert out.attention is not None and ref.attention is not None
    torch.testing.assert_close(out.attention.with_mmi, ref.attention.with_mmi, atol=1e-5, rtol=1e-4)
    assert out.motion_words == ref.motion_words


def test_auto_uses_every_frame_when_they_fit(pipe, square_video):
    """auto on a machine with room is the unchunked path (the same bits), and the output says so."""
    frames, _ = square_video
    auto, out = _final_latents(pipe, frames, "auto")
    whole, _ = _final_latents(pipe, frames, len(frames))
    assert out.chunk_frames == len(frames)
    assert torch.equal(auto, whole)


def test_auto_picks_the_largest_chunk_that_fits(pipe, monkeypatch):
    from attentionflow.resources import AUTO_CHUNK_MEMORY_SHARE, unet_activation_bytes

    per_row = unet_activation_bytes(pipe.unet.config.block_out_channels, (16, 16), 8)
    assert per_row == 32 * 8 * (16 * 16 * 32 + 8 * 8 * 64)  # the tiny UNet: 32 and 64 channels; float64
    rows = 3
    monkeypatch.setattr(pipe, "free_memory", lambda: int(5.5 * rows * per_row / AUTO_CHUNK_MEMORY_SHARE))
    assert pipe.chunk_size("auto", 40, (16, 16), rows) == 5
    assert pipe.chunk_size("auto", 4, (16, 16), rows) == 4  # all frames fit
    monkeypatch.setattr(pipe, "free_memory", lambda: 1)
    assert pipe.chunk_size("auto", 40, (16, 16), rows) == 1  # never less than one frame
    assert pipe.chunk_size(7, 40, (16, 16), rows) == 7 and pipe.chunk_size(70, 40, (16, 16), rows) == 40


@pytest.mark.parametrize("fits", [1, 6, 40])
def test_auto_chunks_on_cuda_fit_the_memory_estimate_in_the_gpus_free_memory(pipe, monkeypatch, fits):
    """On CUDA, ``auto`` asks the GPU (``torch.cuda.mem_get_info``, faked here) and sizes the chunk by the same
    estimate the memory benchmark checks (:meth:`memory_estimate`): the chunk's UNet activations fit in the share of
    the free memory, one frame more would not."""
    from attentionflow.resources import AUTO_CHUNK_MEMORY_SHARE

    rows, latent = 3, (16, 16)
    frame = (latent[0] * pipe.vae_scale_factor, latent[1] * pipe.vae_scale_factor)

    def unet(chunk: int) -> int:
        return pipe.memory_estimate(40, frame, 2, rows, chunk).unet

    free = int((unet(fits) + unet(1) // 2) / AUTO_CHUNK_MEMORY_SHARE)  # room for `fits` frames and a half
    asked = []
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (asked.append(device), (free, 80 << 30))[1])
    monkeypatch.setattr(pipe, "device", torch.device("cuda", 0))
    chunk = pipe.chunk_size("auto", 40, latent, rows)
    assert asked == [torch.device("cuda", 0)]  # the GPU's free memory, not the host's
    assert chunk == fits
    room = AUTO_CHUNK_MEMORY_SHARE * free
    assert unet(chunk) <= room and (chunk == 40 or unet(chunk + 1) > room)


class _Identity(AttentionController):
    """Wants explicit probabilities at every self-attention site (the materialised path), changes nothing."""

    def wants_probs(self, site, state):
        return not site.is_cross


class _SchemeReference:
    """Attention processor that builds the documented chunk scheme explicitly for the whole video in one call.

    Frame ``i`` of the chunk ``[s, e)`` attends (self-attention, cross-frame mode) to
    - at sparse-causal sites: frame 0 and frame ``max(i - 1, 0)`` (exact: chunks do not matter);
    - at dense sites: frames ``{0, s - 1} | [s, e)`` (frame order), the frames of its chunk when ``s == 0``.
    """

    def __init__(self, dense: bool, num_frames: int, chunk: int) -> None:
        self.dense, self.num_frames, self.chunk = dense, num_frames, chunk

    def key_frames(self, i: int) -> list[int]:
        if not self.dense:
            return [0, max(i - 1, 0)]
        s = (i // self.chunk) * self.chunk
        e = min(s + self.chunk, self.num_frames)
        return sorted(({0, s - 1} if s > 0 else set()) | set(range(s, e)))

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        assert hidden_states.ndim == 3 and attn.group_norm is None and attn.spatial_norm is None
        is_self = encoder_hidden_states is None
        context = hidden_states if is_self else encoder_hidden_states
        q, k, v = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)
        bt, n, _ = q.shape
        heads = attn.heads
        split = lambda x: x.view(x.shape[0], x.shape[1], heads, -1).transpose(1, 2)  # noqa: E731 (Bt, heads, N, d)
        q, k, v = split(q), split(k), split(v)
        if is_self:
            f = self.num_frames
            k5 = k.view(bt // f, f, *k.shape[1:])  # (GB, F, heads, N, d)
            v5 = v.view(bt // f, f, *v.shape[1:])
            ks, vs = [], []
            for i in range(f):
                idx = self.key_frames(i)
                ks.append(torch.cat([k5[:, j] for j in idx], dim=2))  # (GB, heads, |idx| * N, d)
                vs.append(torch.cat([v5[:, j] for j in idx], dim=2))
            q5 = q.view(bt // f, f, *q.shape[1:])
            out = torch.stack([torch.softmax(q5[:, i] @ ks[i].transpose(-1, -2) * attn.scale, dim=-1) @ vs[i]
                               for i in range(f)], dim=1).view(bt, heads, n, -1)
        else:
            out = torch.softmax(q @ k.transpose(-1, -2) * attn.scale, dim=-1) @ v
        out = out.transpose(1, 2).reshape(bt, n, -1)
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor


@pytest.mark.parametrize("explicit", [False, True], ids=["sdpa", "explicit-probs"])
@pytest.mark.parametrize(("st", "chunk"), [(True, 3), (True, 2), (True, 7), (False, 3)],
                         ids=["dense-chunk3", "dense-chunk2", "dense-whole", "sparse-chunk3"])
def test_chunked_attention_is_the_documented_scheme(tiny, st, chunk, explicit):
    """Chunk by chunk through our processors == the scheme built explicitly over the whole video (7 frames, guidance
    halves x 2 branches)."""
    torch.manual_seed(0)
    num_frames, blocks = 7, 4
    x = torch.randn(blocks * num_frames, 4, 8, 8)
    emb = torch.randn(blocks * num_frames, 77, 32)
    state = AttentionState(num_frames=num_frames, total_frames=num_frames, num_branches=2, cfg=True,
                           frame_mode="cross_frame", latent_size=(8, 8))
    runtime = AttentionRuntime(state=state, controller=_Identity() if explicit else None)
    out = torch.empty(blocks, num_frames, 4, 8, 8)
    with install_attention(tiny.unet, runtime, use_st=st), torch.no_grad():
        for frames in frame_chunks(num_frames, chunk):
            state.set_chunk(frames)
            rows = x.view(blocks, num_frames, 4, 8, 8)[:, frames].reshape(-1, 4, 8, 8)
            cond = emb.view(blocks, num_frames, 77, 32)[:, frames].reshape(-1, 77, 32)
            out[:, frames] = tiny.unet(rows, 10, encoder_hidden_states=cond).sample.view(blocks, -1, 4, 8, 8)
    sites = attention_sites(tiny.unet, st_attn_idx=0, use_st=st)
    assert any(s.dense for s in sites.values()) == st
    original = dict(tiny.unet.attn_processors)
    tiny.unet.set_attn_processor({key: _SchemeReference(sites[key].dense, num_frames, chunk) for key in original})
    try:
        with torch.no_grad():
            reference = tiny.unet(x, 10, encoder_hidden_states=emb).sample.view(blocks, num_frames, 4, 8, 8)
    finally:
        tiny.unet.set_attn_processor(original)
    torch.testing.assert_close(out, reference, atol=1e-5, rtol=1e-4)


def test_dense_chunks_are_an_approximation_of_dense_attention_over_the_whole_video(pipe, square_video):
    """The dense scheme differs from dense attention over every frame (docs/long_videos.md measures by how much);
    sparse-causal chunks are exact (test above)."""
    frames, _ = square_video
    dense_whole, _ = _final_latents(pipe, frames, len(frames), st=True)
    dense_chunks, _ = _final_latents(pipe, frames, 3, st=True)
    assert not torch.allclose(dense_whole, dense_chunks, atol=1e-5)


def test_a_64_frame_edit_never_puts_every_frame_in_one_model_call(pipe):
    """Long video, tiny sizes: the largest UNet and VAE batches are bounded by the chunk, not by the frame count."""
    from tests.synthetic import MovingSquare, make_video

    frames, _ = make_video(size=16, n_frames=64, squares=(MovingSquare(2, 5, 4, 1, 0),), seed=1)
    unet_batches, vae_batches = [], []
    hooks = [pipe.unet.register_forward_pre_hook(lambda m, args: unet_batches.append(args[0].shape[0])),
             pipe.vae.encoder.register_forward_pre_hook(lambda m, args: vae_batches.append(args[0].shape[0])),
             pipe.vae.decoder.register_forward_pre_hook(lambda m, args: vae_batches.append(args[0].shape[0]))]
    try:
        settings = InversionSettings.default(num_inference_steps=2)
        plan = pipe.plan(SRC, TGT[:1], settings, AttentionSettings.default(chunk_frames=8),
                         mmi=MMIConfig(motion_words=["moving"]))
        out = pipe.edit(frames, plan)
    finally:
        for h in hooks:
            h.remove()
    rows = 2 * 2 - 1  # direct inversion: [uncond edit, cond source, cond edit] per frame
    assert max(unet_batches) == rows * 8 < len(frames)
    assert max(vae_batches) == 8
    assert out.chunk_frames == 8 and out.edits[0].shape == frames.shape
    assert out.attention is not None and out.attention.frames == figure_frames(64)
    assert out.attention.without_mmi.shape[1] == 8 and out.attention.total_frames == 64


def test_attention_maps_keep_only_the_figure_frames(pipe, square_video):
    """The stored maps of the kept frames equal the same frames of an edit that keeps every frame."""
    import attentionflow.pipeline as pipeline_module

    frames, _ = square_video
    _, every = _final_latents(pipe, frames, 3)
    original = pipeline_module.figure_frames
    pipeline_module.figure_frames = lambda n: [0, 5, 7]
    try:
        _, few = _final_latents(pipe, frames, 3)
    finally:
        pipeline_module.figure_frames = original
    assert few.attention.frames == [0, 5, 7] and every.attention.frames == list(range(8))
    torch.testing.assert_close(few.attention.without_mmi, every.attention.without_mmi[:, [0, 5, 7]])
    torch.testing.assert_close(few.attention.motion, every.attention.motion[[0, 5, 7]])


def test_null_text_chunks_accumulate_the_same_gradient(pipe, square_video):
    """Per-frame attention (null_normal_infer): the chunked null-text embeddings are the unchunked ones."""
    frames, _ = square_video
    settings = InversionSettings.default(num_inference_steps=3, inversion="null-text", null_inner_steps=3)
    whole = pipe.invert(frames, SRC, settings, AttentionSettings.default(chunk_frames=8))
    parts = pipe.invert(frames, SRC, settings, AttentionSettings.default(chunk_frames=3))
    for a, b in zip(whole.null_embeddings, parts.null_embeddings):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    assert not all(torch.equal(a, whole.null_embeddings[0]) for a in whole.null_embeddings[1:])  # it did optimise


def test_an_inversion_is_reused_across_chunk_sizes_only_when_they_cannot_matter(pipe, square_video):
    frames, _ = square_video
    settings = InversionSettings.default(num_inference_steps=2)
    inv = pipe.invert(frames, SRC, settings, AttentionSettings.default(chunk_frames=8))
    plan = pipe.plan(SRC, TGT[:1], settings, AttentionSettings.default(chunk_frames=3))
    out = pipe.edit(frames, plan, inversion=inv)  # direct: per-frame inversion, the chunks do not change it
    assert out.inversion_reused and out.chunk_frames == 3
    cross = dataclasses.replace(settings, inversion="null-text", null_normal_infer=False)
    inv = pipe.invert(frames, SRC, cross, AttentionSettings.default(chunk_frames=8))
    from attentionflow.errors import InputError

    with pytest.raises(InputError, match="chunk_frames"):
        pipe.edit(frames, pipe.plan(SRC, TGT[:1], cross, AttentionSettings.default(chunk_frames=3)), inversion=inv)


@pytest.mark.parametrize("value", [0, -2, 2.5, "eight", True])
def test_bad_chunk_frames_is_a_config_error(value):
    from attentionflow.config import EditConfig
    from attentionflow.errors import ConfigError

    config = EditConfig()
    config.input_data.prompt, config.validation_data.prompts = SRC, TGT
    config.chunk_frames = value
    with pytest.raises(ConfigError, match=r"chunk_frames must be auto or a whole number of frames >= 1, got "):
        config.validate()


def test_frame_chunks_cover_the_video_in_order():
    assert frame_chunks(8, 3) == [slice(0, 3), slice(3, 6), slice(6, 8)]
    assert frame_chunks(4, 9) == [slice(0, 4)]
    with pytest.raises(ValueError):
        frame_chunks(4, 0)


def test_the_vae_batch_follows_the_chunk_and_auto_fits_the_frames_in_memory(pipe, monkeypatch):
    from attentionflow.resources import AUTO_CHUNK_MEMORY_SHARE

    assert pipe.vae_batch(4, 4, (512, 512)) == 4  # a number given: the chunk, whatever the memory
    per_frame = 6 * 512 * 512 * pipe.vae.config.block_out_channels[0] * 8  # float64
    monkeypatch.setattr(pipe, "free_memory", lambda: int(3.5 * per_frame / AUTO_CHUNK_MEMORY_SHARE))
    assert pipe.vae_batch("auto", 16, (512, 512)) == 3
    assert pipe.vae_batch("auto", 2, (512, 512)) == 2
    monkeypatch.setattr(pipe, "free_memory", lambda: None)
    assert pipe.vae_batch("auto", 16, (512, 512)) == 8  # never more than before chunks existed
