"""MotionInjector on hand-made attention tensors, against explicit per-branch/frame/token loops."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from attentionflow.attention.base import AttentionSite, AttentionState, as_token_major, is_token_major
from attentionflow.errors import ConfigError
from attentionflow.mmi.inject import InjectionSettings, MotionInjector

F, HEADS, H, W, K = 3, 2, 4, 5, 8  # non-square map on purpose
Q = H * W
LAM = 0.09

# Prompt layouts (index 0 = start token):
#   source "a car is moving":      BOS a car is moving EOS pad pad   -> motion word at 4
#   edit   "a red car is moving":  BOS a red car is moving EOS pad   -> motion word at 5
CONTENT = torch.tensor([[False, True, True, True, True, False, False, False],
                        [False, True, True, True, True, True, False, False]])
MOTION_TOKENS = [[4], [5]]

CROSS = AttentionSite(name="down_blocks.0.attentions.0.transformer_blocks.0.attn2", is_cross=True,
                      place="down", block_index=0)
SELF = AttentionSite(name="down_blocks.0.attentions.0.transformer_blocks.0.attn1", is_cross=False,
                     place="down", block_index=0)


def _state(step: int = 1, num_steps: int = 10, branches: int = 2, cfg: bool = True) -> AttentionState:
    return AttentionState(num_frames=F, num_branches=branches, cfg=cfg, step=step, num_steps=num_steps,
                          resolutions={Q: (H, W), 4: (2, 2)})


def _motion(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    m = torch.rand(F, H, W, generator=g)  # (F, h, w)
    return m / m.amax(dim=(1, 2), keepdim=True)


def _probs(state: AttentionState, seed: int = 1, q: int = Q) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(state.groups * state.num_branches * F, HEADS, q, K, generator=g)
    return p.softmax(dim=-1)  # (G*B*F, heads, Q, K)


def _injector(motion: torch.Tensor, **kw) -> MotionInjector:
    fields = {f.name for f in dataclasses.fields(InjectionSettings)}
    settings = InjectionSettings(**{"strength": LAM, **{k: kw.pop(k) for k in list(kw) if k in fields}})
    args = dict(motion_maps={(H, W): motion}, motion_tokens=MOTION_TOKENS, content_tokens=CONTENT, settings=settings)
    args.update(kw)
    return MotionInjector(**args)


def _expected(probs: torch.Tensor, state: AttentionState, motion: torch.Tensor, *,
              branches=(0, 1), motion_tokens=MOTION_TOKENS, fusion=True, swap=True) -> np.ndarray:
    """Straight loop over branches / frames / tokens (numpy, float64 similarity)."""
    g, b_n = state.groups, state.num_branches
    src = probs.numpy().reshape(g, b_n, F, HEADS, Q, K)
    out = src.copy()
    m = motion.numpy().reshape(F, Q)
    t = state.step
    for b in branches:
        for f in range(F):
            for k in range(K):
                a = src[g - 1, b, f, :, :, k].mean(axis=0).astype(np.float64)  # (Q,)
                c = (np.corrcoef(a, m[f].astype(np.float64))[0, 1] + 1) / 2
                if fusion and CONTENT[b, k] and t >= 1:
                    out[g - 1, b, f, :, :, k] += LAM * c * m[f] / t
            if swap:
                for j in motion_tokens[b]:
                    out[g - 1, b, f, :, :, j] = LAM * m[f]
    return out.reshape(probs.shape)


def test_fusion_and_swap_match_explicit_loop():
    motion = _motion()
    state = _state(step=2)
    probs = _probs(state)
    before = probs.clone()
    inj = _injector(motion)
    assert inj.wants_probs(CROSS, state)
    out = inj(probs, CROSS, state)
    np.testing.assert_allclose(out.numpy(), _expected(before, state, motion), atol=1e-6)

    view_in = before.view(2, 2, F, HEADS, Q, K)
    view_out = out.view(2, 2, F, HEADS, Q, K)
    m = motion.reshape(F, 1, Q)
    # swap hits the motion word's own index in each branch (regression: not the token before)
    torch.testing.assert_close(view_out[1, 0, ..., 4], (LAM * m).expand(F, HEADS, Q))
    torch.testing.assert_close(view_out[1, 1, ..., 5], (LAM * m).expand(F, HEADS, Q))
    for b, j in ((0, 4), (1, 5)):
        prev = view_out[1, b, ..., j - 1] - view_in[1, b, ..., j - 1]  # fusion only: >= 0, not a swap
        assert torch.all(prev >= 0) and not torch.allclose(view_out[1, b, ..., j - 1], LAM * m)
    # start / end / padding untouched, uncond half untouched
    torch.testing.assert_close(view_out[1, 0, ..., [0, 5, 6, 7]], view_in[1, 0, ..., [0, 5, 6, 7]])
    torch.testing.assert_close(view_out[1, 1, ..., [0, 6, 7]], view_in[1, 1, ..., [0, 6, 7]])
    torch.testing.assert_close(view_out[0], view_in[0])


@pytest.mark.parametrize("layout", ["query-major", "token-major"])
def test_fusion_and_swap_match_explicit_loop_in_either_memory_layout(layout):
    """The processor hands over token-major probabilities (a transposed view of a (.., K, Q) tensor); the injector
    must give the explicit loop's result, in place, whatever the layout."""
    motion = _motion(seed=4)
    state = _state(step=3)
    values = _probs(state, seed=5)  # (G*B*F, heads, Q, K) contiguous
    probs = values.clone() if layout == "query-major" else as_token_major(values)
    assert is_token_major(probs) == (layout == "token-major")
    out = _injector(motion)(probs, CROSS, state)
    assert out.data_ptr() == probs.data_ptr()  # edited in place, layout kept
    np.testing.assert_allclose(out.numpy(), _expected(values, state, motion), atol=1e-6)


def test_fusion_schedule_one_over_t():
    motion = _motion()
    inj = _injector(motion, swap=False)
    deltas = {}
    for t in (0, 1, 2):
        state = _state(step=t)
        probs = _probs(state)
        deltas[t] = inj(probs.clone(), CROSS, state) - probs
    assert torch.count_nonzero(deltas[0]) == 0  # no fusion at the noisiest step
    assert torch.count_nonzero(deltas[1]) > 0
    torch.testing.assert_close(deltas[2], deltas[1] / 2, atol=1e-7, rtol=1e-5)


def test_swap_applies_at_step_zero():
    motion = _motion()
    state = _state(step=0)
    probs = _probs(state)
    out = _injector(motion)(probs.clone(), CROSS, state)
    np.testing.assert_allclose(out.numpy(), _expected(probs, state, motion), atol=1e-6)


@pytest.mark.parametrize("branches, edited", [("source", (0,)), ("edits", (1,)), ("all", (0, 1))])
def test_branches_option(branches, edited):
    motion = _motion()
    state = _state(step=1)
    probs = _probs(state)
    out = _injector(motion, branches=branches)(probs.clone(), CROSS, state)
    np.testing.assert_allclose(out.numpy(), _expected(probs, state, motion, branches=edited), atol=1e-6)
    untouched = [b for b in (0, 1) if b not in edited]
    for b in untouched:
        torch.testing.assert_close(out.view(2, 2, F, HEADS, Q, K)[:, b],
                                   probs.view(2, 2, F, HEADS, Q, K)[:, b])


def test_step_range():
    motion = _motion()
    inj = _injector(motion, step_range=(0.5, 0.8))
    for step, active in ((2, False), (5, True), (7, True), (8, False)):
        state = _state(step=step, num_steps=10)
        probs = _probs(state)
        assert inj.wants_probs(CROSS, state) is active
        out = inj(probs.clone(), CROSS, state)
        assert torch.equal(out, probs) is not active


def test_places_sizes_self_attention_and_zero_strength():
    motion = _motion()
    state = _state(step=1)
    up_site = AttentionSite(name="up_blocks.1.attentions.0.transformer_blocks.0.attn2", is_cross=True,
                            place="up", block_index=1)
    inj_up = _injector(motion, places=("up",))
    assert not inj_up.wants_probs(CROSS, state) and inj_up.wants_probs(up_site, state)
    probs = _probs(state)
    assert torch.equal(inj_up(probs.clone(), CROSS, state), probs)
    assert not torch.equal(inj_up(probs.clone(), up_site, state), probs)

    # resolution filter: only (2, 2) maps are edited, so the (4, 5) layer is left alone
    inj_small = _injector(motion, sizes=[(2, 2)])
    assert torch.equal(inj_small(probs.clone(), CROSS, state), probs)

    inj = _injector(motion)
    assert not inj.wants_probs(SELF, state)
    self_probs = torch.rand(2 * 2 * F, HEADS, Q, Q)
    assert torch.equal(inj(self_probs.clone(), SELF, state), self_probs)

    assert not _injector(motion, strength=0.0).wants_probs(CROSS, state)


def test_without_guidance_batch():
    motion = _motion()
    state = _state(step=3, cfg=False)
    probs = _probs(state)
    out = _injector(motion)(probs.clone(), CROSS, state)
    np.testing.assert_allclose(out.numpy(), _expected(probs, state, motion), atol=1e-6)


def test_multi_token_and_several_motion_words():
    motion = _motion()
    state = _state(step=1)
    probs = _probs(state)
    tokens = [[2, 3, 4], [5]]  # e.g. a two-token word plus a second motion word in the source
    out = _injector(motion, motion_tokens=tokens)(probs.clone(), CROSS, state)
    np.testing.assert_allclose(out.numpy(), _expected(probs, state, motion, motion_tokens=tokens), atol=1e-6)


CONTENT3 = torch.tensor([[False, True, True, True, True, True, True, False]] * 3)


@pytest.mark.parametrize("tokens, branches", [
    ([[4], [4], [4]], "all"),  # the motion word at one position in every prompt
    ([[4, 5], [4, 5], [4, 5]], "all"),  # a two-token word
    ([[4], [5], [4]], "all"),  # equal tokens in branches 0 and 2 only
    ([[4], [4], [5]], "all"),
    ([[2, 4], [2, 4], [6]], "all"),  # two words apart
    ([[4, 4, 3], [3, 4], []], "all"),  # repeats and order do not matter; a branch without the word
    ([[4], [5], [5]], "edits"),  # the source is not selected
    ([[4], [5], [6]], "source"),
], ids=["same", "two-token", "apart", "last-differs", "runs", "repeats-empty", "edits", "source"])
def test_swap_writes_exactly_the_motion_tokens(tokens, branches):
    """The swap replaces, in every head and frame, the maps of the selected branches' motion tokens by strength x M
    and leaves everything else as the fusion left it, however the tokens sit in the prompts."""
    motion = _motion(seed=2)
    state = _state(step=2, branches=3)
    g = torch.Generator().manual_seed(3)
    probs = torch.rand(state.groups * 3 * F, HEADS, Q, K, generator=g).softmax(dim=-1)
    kw = dict(motion_tokens=tokens, content_tokens=CONTENT3, branches=branches)
    inj = _injector(motion, **kw)
    out = inj(probs.clone(), CROSS, state).view(2, 3, F, HEADS, Q, K)
    fused = _injector(motion, swap=False, **kw)(probs.clone(), CROSS, state).view(2, 3, F, HEADS, Q, K)
    selected = {"all": (0, 1, 2), "edits": (1, 2), "source": (0,)}[branches]
    swapped = {(b, k) for b in selected for k in tokens[b]}
    m = (LAM * motion.reshape(F, 1, Q)).expand(F, HEADS, Q)
    for b in range(3):
        for k in range(K):
            want = m if (b, k) in swapped else fused[1, b, ..., k]
            torch.testing.assert_close(out[1, b, ..., k], want, rtol=0, atol=0, msg=f"branch {b} token {k}")
    torch.testing.assert_close(out[0], fused[0], rtol=0, atol=0)  # the unconditional half untouched


def test_empty_motion_tokens_for_a_branch():
    motion = _motion()
    state = _state(step=1)
    probs = _probs(state)
    tokens = [[4], []]  # the edit prompt lacks the motion word
    out = _injector(motion, motion_tokens=tokens)(probs.clone(), CROSS, state)
    np.testing.assert_allclose(out.numpy(), _expected(probs, state, motion, motion_tokens=tokens), atol=1e-6)


def test_static_video_gives_finite_values_no_fusion_zero_swap():
    motion = torch.zeros(F, H, W)
    inj = _injector(motion)
    for step in (0, 1, 4):
        state = _state(step=step)
        probs = _probs(state)
        out = inj(probs.clone(), CROSS, state)
        assert torch.isfinite(out).all()
        v_in, v_out = probs.view(2, 2, F, HEADS, Q, K), out.view(2, 2, F, HEADS, Q, K)
        assert torch.all(v_out[1, 0, ..., 4] == 0) and torch.all(v_out[1, 1, ..., 5] == 0)
        keep = torch.ones(K, dtype=torch.bool)
        keep[4] = False
        torch.testing.assert_close(v_out[:, 0][..., keep], v_in[:, 0][..., keep], atol=0, rtol=0)
    assert torch.isfinite(inj.token_similarity()).all()


def test_auto_mode_picks_the_word_matching_motion_then_swaps():
    motion = _motion(3)
    m = motion.reshape(F, 1, Q)
    cands = [{"car": [2], "is": [3], "moving": [4]},
             {"red": [2], "car": [3], "is": [4], "moving": [5]}]
    inj = MotionInjector(motion_maps={(H, W): motion}, motion_tokens=None, content_tokens=CONTENT,
                         auto_candidates=cands, settings=InjectionSettings(strength=LAM, auto_steps=3))
    for step in range(5):
        state = _state(step=step)
        probs = _probs(state, seed=10 + step)
        cond = state.cond_view(probs)  # (B, F, heads, Q, K)
        cond[0, ..., 4] = m  # source "moving" attends exactly where the motion is
        cond[1, ..., 2] = m  # distractor: the edit's "red" (index of the source's "car") matches too;
        # ranking must use the source branch only
        before = probs.clone()
        out = inj(probs, CROSS, state)
        v_out, v_in = out.view(2, 2, F, HEADS, Q, K), before.view(2, 2, F, HEADS, Q, K)
        if step < 3:
            assert inj.chosen_word is None
            # fusion only, no swap yet
            np.testing.assert_allclose(out.numpy(), _expected(before, state, motion, swap=False), atol=1e-6)
        else:
            assert inj.chosen_word == "moving"
            assert [w for w, _ in inj.ranking][0] == "moving"
            scores = [s for _, s in inj.ranking]
            assert scores == sorted(scores, reverse=True) and len(scores) == 3
            torch.testing.assert_close(v_out[1, 0, ..., 4], (LAM * m).expand(F, HEADS, Q))
            torch.testing.assert_close(v_out[1, 1, ..., 5], (LAM * m).expand(F, HEADS, Q))
            assert inj.motion_tokens == [[4], [5]]
        torch.testing.assert_close(v_out[0], v_in[0])
    inj.reset()
    assert inj.chosen_word is None and inj.motion_tokens is None and inj.ranking == []


def test_token_similarity_report():
    motion = _motion()
    inj = _injector(motion, swap=False, fusion=False)
    assert torch.count_nonzero(inj.token_similarity()) == 0
    state = _state(step=1)
    probs = _probs(state)
    cond = state.cond_view(probs)
    cond[1, ..., 3] = motion.reshape(F, 1, Q)  # edit branch token 3 equals the motion map
    out = inj(probs.clone(), CROSS, state)
    assert torch.equal(out, probs)  # fusion and swap off: nothing edited
    sim = inj.token_similarity()
    assert sim.shape == (2, K)
    assert sim[1, 3] == pytest.approx(1.0, abs=1e-5) and sim[1, 3] == sim.max()
    assert inj.last_similarity.shape == (2, F, K)


def test_token_similarity_is_the_mean_over_calls_and_frames_across_folds(monkeypatch):
    """The injector keeps each call's similarity and sums it in batches (every _FOLD_CALLS calls, and when read):
    the report is the plain mean over all calls and frames whatever the batch size."""
    import attentionflow.mmi.inject as inject

    monkeypatch.setattr(inject, "_FOLD_CALLS", 2)
    motion = _motion()
    inj = _injector(motion, swap=False, fusion=False)
    state = _state(step=1)
    seen = []
    for seed in range(5):  # folds after calls 2 and 4, the fifth is summed when read
        inj(_probs(state, seed=seed), CROSS, state)
        seen.append(inj.last_similarity)  # (B, F, K)
    expected = torch.stack(seen).mean(dim=(0, 2))  # (B, K): mean over calls and frames
    torch.testing.assert_close(inj.token_similarity(), expected, atol=1e-6, rtol=0)


def test_requires_grad_input_is_not_edited_in_place():
    motion = _motion()
    state = _state(step=1)
    logits = torch.randn(2 * 2 * F, HEADS, Q, K, requires_grad=True)
    probs = logits.softmax(dim=-1)
    snapshot = probs.detach().clone()
    out = _injector(motion)(probs, CROSS, state)
    out.sum().backward()  # would fail if softmax's output had been modified in place
    assert torch.equal(probs.detach(), snapshot) and logits.grad is not None


@pytest.mark.parametrize("over, match", [
    ({"similarity": "foo"}, "unknown similarity 'foo'"),
    ({"branches": "both"}, "branches 'both'"),
    ({"places": ("middle",)}, "places"),
    ({"step_range": (0.8, 0.2)}, "step range"),
    ({"step_range": (0.5, 0.5)}, "step range"),  # the config's rule: start < end
    ({"strength": -1.0}, "strength"),
])
def test_option_guards_are_value_errors(over, match):
    """The controller guards programming errors only (ValueError); user input is checked by EditPlan.build."""
    with pytest.raises(ValueError, match=match):
        _injector(_motion(), **over)


@pytest.mark.parametrize("mmi, match", [
    ({"similarity": "foo"}, "unknown similarity 'foo'"),
    ({"branches": "both"}, "branches"),
    ({"places": ["middle"]}, "places"),
    ({"step_start": 0.8, "step_end": 0.2}, "step_start"),
    ({"step_start": 0.5, "step_end": 0.5}, "step_start"),
    ({"strength": -1.0}, "strength"),
    ({"auto_steps": 0}, "auto_steps"),
])
def test_option_errors_come_from_the_one_validator(clip_tokenizer, mmi, match):
    from attentionflow.config import MMIConfig
    from attentionflow.plan import EditPlan

    with pytest.raises(ConfigError, match=match):
        EditPlan.from_prompts(clip_tokenizer, "a car is moving on the road", ["a car is moving on the snow"],
                              mmi=MMIConfig(**mmi))


def test_option_errors():
    motion = _motion()
    with pytest.raises(ValueError, match="auto_candidates"):
        _injector(motion, motion_tokens=None)
    with pytest.raises(ValueError, match="branches"):
        _injector(motion, motion_tokens=[[4]])
    with pytest.raises(ValueError, match="outside"):
        _injector(motion, motion_tokens=[[4], [K]])


@pytest.mark.parametrize("num_steps,start,end", [(50, 0.0, 0.33), (50, 0.1, 0.9), (7, 0.3, 0.7), (25, 0.0, 0.8)])
def test_mmi_and_p2p_share_one_step_window_convention(num_steps, start, end):
    """MMI's step range and P2P's replace windows select the same steps (they disagreed by one at T=50, 0.33)."""
    from attentionflow.attention.windows import parse_window

    motion = _motion()
    inj = _injector(motion, step_range=(start, end))
    mmi_steps = [i for i in range(num_steps) if inj._in_range(_state(step=i, num_steps=num_steps))]
    lo, hi = parse_window((start, end), num_steps, "test")
    assert mmi_steps == list(range(lo, hi))
    assert len(mmi_steps) == int(end * num_steps) - int(start * num_steps)


@pytest.mark.parametrize("heads", [HEADS, 3], ids=["2-heads", "3-heads"])  # 1/3 is not exact in binary
@pytest.mark.parametrize("method", ["ncc", "zncc", "cc", "ssd", "mi"])
@pytest.mark.parametrize("content, motion_tokens, candidates", [
    (CONTENT, MOTION_TOKENS, None),  # the span is tokens 1..5
    (torch.tensor([[False, False, True, True, False, False, False, False]] * 2), [[3], [3]], None),  # 2..3
    (CONTENT, None, [{"car": [2], "moving": [6]}, {"car": [3], "moving": [6]}]),  # a candidate beyond the content
])
def test_similarity_on_the_gathered_tokens_equals_the_full_computation(content, motion_tokens, candidates, method,
                                                                         heads):
    """Only the span of content / motion / candidate tokens is scored; there it equals the all-token computation
    (head **average** of every token, then the measure, through the public ``similarity``; the injector scores the
    heads' sum with the motion side prepared once), and outside it the similarity reads 0 (never used)."""
    from attentionflow.mmi.similarity import similarity

    motion = _motion()
    state = _state(step=1)
    g = torch.Generator().manual_seed(1)
    probs = torch.rand(state.groups * state.num_branches * F, heads, Q, K, generator=g).softmax(dim=-1)
    probs[-1, :, :, 2] = 1.0 / K  # a constant map (last branch, last frame, token 2): Pearson 0
    inj = _injector(motion, content_tokens=content, motion_tokens=motion_tokens, auto_candidates=candidates,
                    fusion=False, swap=False, similarity=method)
    inj(probs.clone(), CROSS, state)
    full = similarity(state.cond_view(probs).mean(dim=2).transpose(-1, -2), motion.reshape(F, Q), method)  # (B, F, K)
    needed = set(content.nonzero()[:, 1].tolist()) | {k for idx in motion_tokens or [] for k in idx} | \
        {k for c in candidates or [] for idx in c.values() for k in idx}
    lo, hi = min(needed), max(needed) + 1
    torch.testing.assert_close(inj.last_similarity[..., lo:hi], full[..., lo:hi], atol=1e-6, rtol=0)
    assert torch.count_nonzero(inj.last_similarity[..., :lo]) == 0
    assert torch.count_nonzero(inj.last_similarity[..., hi:]) == 0
