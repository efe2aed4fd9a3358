"""End-to-end tiny pipeline: shapes, determinism, processors restored, MMI on/off, frame counts, sizes."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest
import torch

from attentionflow.config import AttentionSettings, InversionSettings, MMIConfig, P2PConfig
from attentionflow.errors import InputError, PromptError
from attentionflow.mmi.similarity import similarity
from attentionflow.pipeline import AttentionFlowPipeline

SRC = "a square is moving on the road"
TGT = ["a square is moving on the snow", "a red square is moving on the road"]


@pytest.fixture()
def pipe(tiny):
    pipe = AttentionFlowPipeline.from_components(tiny, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    return pipe


_INV = {f.name for f in dataclasses.fields(InversionSettings)}
_ATT = {f.name for f in dataclasses.fields(AttentionSettings)}


def _settings(kw: dict) -> tuple[InversionSettings, AttentionSettings]:
    """Pop the inversion and attention settings out of keyword arguments (3 steps unless given; ``method`` is the
    inversion method, since ``inversion=`` is the Inversion that edit() takes)."""
    kw.setdefault("num_inference_steps", 3)
    inv = InversionSettings.default(**{k: kw.pop(k) for k in list(kw) if k in _INV - {"inversion"}},
                                    **({"inversion": kw.pop("method")} if "method" in kw else {}))
    return inv, AttentionSettings.default(**{k: kw.pop(k) for k in list(kw) if k in _ATT})


def _edit(pipe, frames, **kw):
    settings, attention = _settings(kw)
    run = {k: kw.pop(k) for k in ("inversion", "callback") if k in kw}
    plan = pipe.plan(kw.pop("source", SRC), kw.pop("targets", TGT), settings, attention, **kw)
    return pipe.edit(frames, plan, **run)


def _invert(pipe, frames, source, **kw):
    settings, attention = _settings(kw)
    return pipe.invert(frames, source, settings, attention, **kw)


def test_edit_shapes_modes_and_processors_restored(pipe, square_video):
    frames, _ = square_video
    before = dict(pipe.unet.attn_processors)
    out = _edit(pipe, frames, mmi=MMIConfig(motion_words=["moving"]), method="null-text")
    assert out.reconstruction.shape == frames.shape and out.reconstruction.dtype == np.uint8
    assert len(out.edits) == 2 and all(e.shape == frames.shape for e in out.edits)
    assert out.edit_modes == ["replace", "refine"]
    assert out.motion is not None and out.motion.maps.shape == frames.shape[:3]
    after = pipe.unet.attn_processors
    assert all(after[k] is before[k] for k in before)
    assert {"inversion", "null_text", "editing", "decode", "motion_maps"} <= set(out.timings)


def test_edit_is_bitwise_deterministic(pipe, square_video):
    frames, _ = square_video
    a = _edit(pipe, frames, mmi=MMIConfig(motion_words=["moving"]), seed=5)
    b = _edit(pipe, frames, mmi=MMIConfig(motion_words=["moving"]), seed=5)
    assert np.array_equal(a.reconstruction, b.reconstruction)
    assert all(np.array_equal(x, y) for x, y in zip(a.edits, b.edits))


def test_mmi_changes_result_and_motion_word_attention_follows_motion(pipe, square_video):
    frames, _ = square_video
    on = _edit(pipe, frames, mmi=MMIConfig(motion_words=["moving"]))
    off = _edit(pipe, frames, mmi=MMIConfig(enabled=False))
    assert not all(np.array_equal(x, y) for x, y in zip(on.edits, off.edits))
    att = on.attention
    assert att is not None and att.with_mmi is not None and att.motion is not None
    h, w = att.size
    for b, prompt in enumerate([SRC, *TGT]):
        (k,) = dict(att.words[b])["moving"]  # one token
        stored = att.with_mmi[b, :, :, :, k].reshape(len(frames), 1, h * w)  # (F, 1, Q)
        ncc = similarity(stored, att.motion.reshape(len(frames), h * w), "ncc")  # (F, 1) in [0, 1]
        rho = 2 * ncc - 1
        assert float(rho.min()) > 0.9, f"branch {b}: motion word map does not follow the motion (rho={rho})"
    assert off.attention.with_mmi is None and off.motion is None


def test_mmi_writes_the_raw_maps_before_prompt_to_prompt(pipe, square_video, monkeypatch):
    # the MMI reference injects into the maps the UNet made, and prompt-to-prompt edits them after that
    from attentionflow.attention.p2p import P2PEdit
    from attentionflow.mmi.inject import MotionInjector

    calls: list[tuple[str, str, int]] = []
    for name, cls in (("mmi", MotionInjector), ("p2p", P2PEdit)):
        def recording(self, probs, site, state, _call=cls.__call__, _name=name):
            calls.append((_name, site.name, state.step))
            return _call(self, probs, site, state)

        monkeypatch.setattr(cls, "__call__", recording)
    frames, _ = square_video
    _edit(pipe, frames, mmi=MMIConfig(motion_words=["moving"]), p2p=P2PConfig(cross_replace_steps=1.0))
    both = {(site, step) for name, site, step in calls if name == "mmi"} & \
        {(site, step) for name, site, step in calls if name == "p2p"}
    assert both, "MMI and prompt-to-prompt never acted on the same layer call"
    for site, step in both:
        order = [name for name, s, t in calls if (s, t) == (site, step)]
        assert order.index("mmi") < order.index("p2p"), (site, step, order)


def test_static_video_gives_zero_maps_and_still_edits(pipe):
    frames = np.repeat(np.random.default_rng(0).integers(0, 255, (1, 16, 24, 3), dtype=np.uint8), 3, axis=0)
    out = _edit(pipe, frames, mmi=MMIConfig(motion_words=["moving"]))
    assert np.all(out.motion.maps == 0) and np.isfinite(out.motion.maps).all()
    assert all(np.isfinite(e.astype(float)).all() and e.shape == frames.shape for e in out.edits)


@pytest.mark.parametrize("n, h, w", [(2, 16, 16), (3, 16, 24), (8, 24, 16), (16, 16, 16)])
def test_any_frame_count_and_non_square_sizes(pipe, n, h, w):
    frames = np.random.default_rng(n).integers(0, 255, (n, h, w, 3), dtype=np.uint8)
    out = _edit(pipe, frames, num_inference_steps=2, method="ddim", targets=TGT[:1],
                mmi=MMIConfig(motion_words=["moving"]))
    assert out.reconstruction.shape == (n, h, w, 3) and out.edits[0].shape == (n, h, w, 3)


def test_auto_motion_word_is_reported(pipe, square_video):
    frames, _ = square_video
    out = _edit(pipe, frames, num_inference_steps=4, mmi=MMIConfig(motion_words="auto", auto_steps=2))
    words = [w for w, _ in out.motion_ranking]
    assert set(words) == {"square", "moving", "road"}
    scores = [s for _, s in out.motion_ranking]
    assert scores == sorted(scores, reverse=True)
    assert out.motion_words == [words[0]]


def test_bad_prompts_fail_before_compute(pipe, square_video, monkeypatch):
    frames, _ = square_video

    def boom(*a, **k):
        raise AssertionError("heavy compute started")

    monkeypatch.setattr(pipe, "encode_frames", boom)
    with pytest.raises(PromptError, match="moving"):
        _edit(pipe, frames, source="a square on the road", mmi=MMIConfig(motion_words=["moving"]))
    with pytest.raises(PromptError):
        _edit(pipe, frames, targets=["a big red square is moving on the road"], p2p=P2PConfig(mode="replace"))
    with pytest.raises(PromptError):
        _edit(pipe, frames, source=" ".join(["car"] * 80))
    with pytest.raises(InputError, match="2 frames"):
        _edit(pipe, frames[:1], mmi=MMIConfig(motion_words=["moving"]))


def test_null_text_inversion_reconstructs_better_than_plain_ddim_under_guidance(pipe, square_video):
    """With guidance, plain DDIM inversion drifts; null-text pulls the source branch back (random weights
    do not reconstruct perfectly, so only the ordering is asserted)."""
    frames, _ = square_video
    plain = _edit(pipe, frames, num_inference_steps=4, method="ddim", targets=TGT[:1])
    null = _edit(pipe, frames, num_inference_steps=4, method="null-text", null_inner_steps=20, null_base_lr=0.05,
                 null_uncond_ratio=1.0, targets=TGT[:1])
    latents = pipe.encode_frames(frames)
    ref = pipe.decode_latents(latents).astype(float)
    err_plain = np.abs(plain.reconstruction.astype(float) - ref).mean()
    err_null = np.abs(null.reconstruction.astype(float) - ref).mean()
    assert err_null < err_plain


def _count_unet_calls(pipe):
    calls = []
    handle = pipe.unet.register_forward_hook(lambda *_: calls.append(1))
    return calls, handle


def test_given_inversion_is_reused_and_gives_the_same_edit(pipe, square_video):
    frames, _ = square_video
    mmi = MMIConfig(motion_words=["moving"])
    fresh = _edit(pipe, frames, mmi=mmi, seed=5, method="null-text")
    inv = _invert(pipe, frames, SRC, num_inference_steps=3, seed=5, method="null-text")
    assert inv.x_t.shape[0] == len(frames) and inv.null_embeddings is not None and len(inv.null_embeddings) == 3
    calls, handle = _count_unet_calls(pipe)
    try:
        reused = _edit(pipe, frames, mmi=mmi, seed=5, inversion=inv, method="null-text")
    finally:
        handle.remove()
    assert len(calls) == 3  # sampling only: one batched (CFG) UNet call per step, no inversion
    assert reused.inversion_reused and not fresh.inversion_reused
    assert "inversion" not in reused.timings and "null_text" not in reused.timings
    assert np.array_equal(fresh.reconstruction, reused.reconstruction)
    assert all(np.array_equal(x, y) for x, y in zip(fresh.edits, reused.edits))


@pytest.mark.parametrize("change, field", [
    ({"num_inference_steps": 4}, "num_inference_steps"),
    ({"source": "a square is moving on the snow"}, "source_prompt"),
    ({"null_base_lr": 0.05}, "null_base_lr"),
    ({"use_st_attn": False}, "use_st_attn"),
    ({"method": "direct"}, "inversion"),
    ({"method": "negative-prompt"}, "inversion"),
    ({"inversion_prompt": "empty"}, "inversion_prompt"),
])
def test_mismatched_inversion_is_refused_naming_the_setting(pipe, square_video, change, field):
    frames, _ = square_video
    inv = _invert(pipe, frames, SRC, num_inference_steps=3, method="null-text")
    with pytest.raises(InputError, match=rf"other settings \({field}[:,] "):
        _edit(pipe, frames, inversion=inv, **{"method": "null-text", **change})


def test_inversion_of_other_frames_is_refused(pipe, square_video):
    frames, _ = square_video
    inv = _invert(pipe, frames, SRC, num_inference_steps=2, method="ddim")
    other = frames.copy()
    other[0, 0, 0, 0] ^= 1  # one value of one pixel differs
    with pytest.raises(InputError, match=r"\(frames: "):
        _edit(pipe, other, num_inference_steps=2, method="ddim", inversion=inv)


def test_null_text_settings_do_not_matter_without_null_text(pipe, square_video):
    frames, _ = square_video
    inv = _invert(pipe, frames, SRC, num_inference_steps=2, method="ddim")
    assert inv.null_embeddings is None
    out = _edit(pipe, frames, num_inference_steps=2, method="ddim", null_base_lr=0.5, guidance_scale=3.0,
                inversion=inv)
    assert out.inversion_reused


def test_inversion_cache_reuses_for_new_targets_only(pipe, square_video):
    frames, _ = square_video
    pipe.inversion_cache_size = 1
    first = _edit(pipe, frames, targets=TGT[:1])
    calls, handle = _count_unet_calls(pipe)
    try:
        second = _edit(pipe, frames, targets=TGT[1:])
        assert second.inversion_reused and len(calls) == 3
        other = _edit(pipe, frames, source="a square is moving on the snow", targets=TGT[1:])
        assert not other.inversion_reused and len(calls) > 6
        again = _edit(pipe, frames, targets=TGT[:1])  # evicted by the other source prompt (cache size 1)
        assert not again.inversion_reused
    finally:
        handle.remove()
    assert not first.inversion_reused and len(pipe._inversions) == 1
    assert np.array_equal(first.edits[0], again.edits[0])


def test_step_callback_reports_stage_step_total_and_latents(pipe, square_video):
    """One progress hook: callback(stage, step, total, latents) after every step of every stage."""
    frames, _ = square_video
    calls = []
    _edit(pipe, frames, num_inference_steps=3, targets=TGT[:1], method="null-text",
          callback=lambda stage, step, total, latents: calls.append((stage, step, total, tuple(latents.shape))))
    f, c = len(frames), pipe.unet.config.in_channels
    h = w = frames.shape[1] // pipe.vae_scale_factor
    by_stage = {}
    for stage, step, total, shape in calls:
        by_stage.setdefault(stage, []).append((step, total, shape))
    assert list(by_stage) == ["inversion", "null-text", "editing"]
    assert [s for s, *_ in by_stage["inversion"]] == [1, 2, 3] and all(total == 3 for _, _, total, _ in calls)
    assert {shape for *_, shape in by_stage["inversion"] + by_stage["null-text"]} == {(f, c, h, w)}
    assert {shape for *_, shape in by_stage["editing"]} == {(2 * f, c, h, w)}  # source + one edit branch


def test_direct_inversion_reconstructs_the_vae_round_trip_and_still_edits(pipe, square_video):
    """Direct inversion: the source branch ends on the inverted trajectory's x_0 (the frames' VAE latents) exactly,
    so the reconstruction is the VAE round trip; the edit branch is something else."""
    frames, _ = square_video
    last = {}
    out = _edit(pipe, frames, num_inference_steps=4, method="direct", targets=TGT[:1],
                mmi=MMIConfig(motion_words=["moving"]),
                callback=lambda stage, step, total, latents: last.__setitem__(stage, latents.clone()))
    x0 = pipe.encode_frames(frames)  # (F, C, h, w): the trajectory's x_0
    assert torch.equal(last["editing"][: len(frames)], x0)
    vae_only = pipe.decode_latents(x0)
    assert np.abs(out.reconstruction.astype(int) - vae_only.astype(int)).max() <= 1  # decoding in a bigger batch
    assert np.abs(out.edits[0].astype(float) - out.reconstruction.astype(float)).mean() > 1.0
    assert out.inversion_method == "direct" and out.inversion_carries.startswith("the inversion trajectory")
    plain = _edit(pipe, frames, num_inference_steps=4, method="ddim", targets=TGT[:1],
                  mmi=MMIConfig(motion_words=["moving"]))
    assert np.abs(plain.reconstruction.astype(int) - vae_only.astype(int)).max() > 1  # random UNet: DDIM drifts


@pytest.mark.parametrize("method, direct_targets", [("direct", False), ("direct", True), ("negative-prompt", False),
                                                    ("null-text", False), ("ddim", False)])
def test_reused_inversion_equals_a_fresh_edit_for_every_method(pipe, square_video, method, direct_targets):
    frames, _ = square_video
    kw = dict(method=method, direct_targets=direct_targets, mmi=MMIConfig(motion_words=["moving"]))
    fresh = _edit(pipe, frames, **kw)
    inv = _invert(pipe, frames, SRC, num_inference_steps=3, method=method)
    assert inv.method == method and (inv.trajectory is not None) == (method == "direct")
    assert (inv.null_embeddings is not None) == (method == "null-text")
    reused = _edit(pipe, frames, inversion=inv, **kw)
    assert reused.inversion_reused
    assert np.array_equal(fresh.reconstruction, reused.reconstruction)
    assert all(np.array_equal(x, y) for x, y in zip(fresh.edits, reused.edits))


def test_the_inversion_cache_keeps_methods_apart(pipe, square_video):
    frames, _ = square_video
    pipe.inversion_cache_size = 4
    first = _edit(pipe, frames, method="direct", targets=TGT[:1])
    again = _edit(pipe, frames, method="direct", targets=TGT[1:])
    other = _edit(pipe, frames, method="negative-prompt", targets=TGT[:1])
    assert not first.inversion_reused and again.inversion_reused and not other.inversion_reused
    assert other.inversion_method == "negative-prompt"


@pytest.mark.parametrize("use_st_attn", [True, False])
def test_direct_edit_leaves_out_the_source_uncond_pass_without_changing_the_edit(pipe, square_video, monkeypatch,
                                                                                use_st_attn):
    """Direct inversion: the UNet batch is [uncond edits, cond all] ((2B-1)*F rows); P2P (self-attention sharing,
    cross-attention replacement), local blend and MMI read the conditional half as before, so the edit equals the
    full-batch computation."""
    import attentionflow.pipeline as pipeline_module

    frames, _ = square_video
    kw = dict(method="direct", use_st_attn=use_st_attn, p2p=P2PConfig(blend_words=["square"]),
              mmi=MMIConfig(motion_words=["moving"]))
    batches: list[int] = []
    handle = pipe.unet.register_forward_pre_hook(lambda module, args: batches.append(args[0].shape[0]))
    try:
        lean = _edit(pipe, frames, **kw)
        lean_batches, batches[:] = list(batches), []
        monkeypatch.setattr(pipeline_module, "skips_source_uncond", lambda *a: False)
        full = _edit(pipe, frames, **kw)
    finally:
        handle.remove()
    f, b = len(frames), 1 + len(TGT)
    assert lean_batches[-3:] == [(2 * b - 1) * f] * 3 and batches[-3:] == [2 * b * f] * 3  # the 3 sampling calls
    assert np.array_equal(lean.reconstruction, full.reconstruction)
    for x, y in zip(lean.edits, full.edits):
        assert np.abs(x.astype(int) - y.astype(int)).max() <= 1  # the same maths in another batch size


@pytest.mark.parametrize("method", ["direct", "ddim"])
def test_a_p2p_mmi_region_edit_obeys_the_methods_identities(pipe, square_video, method):
    """The composed edit (P2P + MMI + edit region) against what the methods say it must equal: MMI at strength 0
    injects nothing (the edit without MMI); outside the moving region every edit is the reconstruction; after a DDIM
    inversion, a target that is the source prompt, with every step's attention replaced by the source's, is the
    reconstruction."""
    frames, _ = square_video
    p2p = P2PConfig(edit_region="moving", cross_replace_steps=0.6, self_replace_steps=0.3)
    kw = dict(method=method, num_inference_steps=4, seed=7)
    with_mmi = _edit(pipe, frames, mmi=MMIConfig(motion_words=["moving"], strength=0.5), p2p=p2p, **kw)
    zero = _edit(pipe, frames, mmi=MMIConfig(motion_words=["moving"], strength=0.0), p2p=p2p, **kw)
    off = _edit(pipe, frames, mmi=MMIConfig(enabled=False), p2p=p2p, **kw)
    for a, b in zip(zero.edits, off.edits):
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
    assert any(np.abs(a.astype(int) - b.astype(int)).max() > 4 for a, b in zip(with_mmi.edits, off.edits))
    # the region is every latent pixel a moving pixel touches, grown by region_dilation latent pixels: farther than
    # that (a square of (dilation + 1) latent pixels a side, in frame pixels) the edit is the reconstruction exactly
    reach = (p2p.region_dilation + 1) * pipe.vae_scale_factor
    kernel = np.ones((2 * reach + 1, 2 * reach + 1), np.uint8)
    outside = ~np.stack([cv2.dilate(m.astype(np.uint8), kernel).astype(bool) for m in with_mmi.region])
    assert outside.mean() > 0.3
    for edit in with_mmi.edits:
        assert np.array_equal(edit[outside], with_mmi.reconstruction[outside])
    if method == "direct":  # direct inversion pins the source branch to the inversion's path: no target follows it
        return
    same = _edit(pipe, frames, targets=[SRC], mmi=MMIConfig(motion_words=["moving"], strength=0.5),
                 p2p=dataclasses.replace(p2p, mode="replace", cross_replace_steps=1.0, self_replace_steps=1.0), **kw)
    assert np.abs(same.edits[0].astype(int) - same.reconstruction.astype(int)).max() <= 1
