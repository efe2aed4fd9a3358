"""Prompt-to-prompt controllers on hand-made attention probabilities (no UNet)."""

from __future__ import annotations

import pytest
import torch

from attentionflow.attention.base import (
    AttentionSite,
    AttentionState,
    as_token_major,
    head_sum,
    index_span,
    is_token_major,
    token_rows,
)
from attentionflow.attention.blend import LocalBlend
from attentionflow.attention.p2p import P2PEdit
from attentionflow.attention.store import AttentionStore
from attentionflow.attention.tables import p2p_tables
from attentionflow.config import P2PConfig, config_from_dict
from attentionflow.errors import ConfigError, PromptError
from attentionflow.plan import EditPlan

CROSS = AttentionSite(name="down_blocks.0.attentions.0.transformer_blocks.0.attn2", is_cross=True,
                      place="down", block_index=0)
SELF = AttentionSite(name="down_blocks.0.attentions.0.transformer_blocks.0.attn1", is_cross=False,
                     place="down", block_index=0)
ROAD = "a car is moving on the road"
SNOW = "a car is moving on the snow"
HEADS = 2


def _p2p(tokenizer, prompts, num_steps, local_blend=None, self_max_queries=32 * 32, **kw) -> P2PEdit:
    """A P2PEdit from the resolved tables (what EditPlan.build keeps), as the pipeline makes it."""
    return P2PEdit(p2p_tables(tokenizer, prompts, num_steps, **kw), local_blend=local_blend,
                   self_max_queries=self_max_queries)


def _blend(tokenizer, prompts, words, **kw) -> LocalBlend:
    tables = p2p_tables(tokenizer, prompts, 1, blend_words=words)
    return LocalBlend(tables.blend_positions, tables.num_tokens, **kw)


def _state(branches: int = 2, frames: int = 2, step: int = 0, steps: int = 10, cfg: bool = True) -> AttentionState:
    return AttentionState(num_frames=frames, num_branches=branches, cfg=cfg, step=step, num_steps=steps,
                          latent_size=(8, 8), resolutions={64: (8, 8), 16: (4, 4)})


#: Memory layouts of the probabilities: the processor makes them token-major (a transposed view of (Bt, heads, K, Q));
#: the controllers must give the same results in either.
LAYOUTS = ["query-major", "token-major"]


def _probs(state: AttentionState, queries: int, keys: int = 77, seed: int = 0,
           layout: str = "query-major") -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    bt = state.groups * state.num_branches * state.num_frames
    probs = torch.randn(bt, HEADS, queries, keys, generator=g).softmax(-1)  # (Bt, heads, Q, K)
    if layout == "token-major":
        probs = as_token_major(probs)
        assert is_token_major(probs)
    return probs


def _halves(probs: torch.Tensor, state: AttentionState) -> torch.Tensor:
    """(G, B, F, heads, Q, K) view."""
    return probs.view(state.groups, state.num_branches, state.num_frames, *probs.shape[1:])


@pytest.mark.parametrize("layout", LAYOUTS)
def test_replace_copies_source_maps_only_in_the_replace_steps(clip_tokenizer, layout):
    ctrl = _p2p(clip_tokenizer, [ROAD, SNOW], num_steps=10, cross_replace_steps=0.5, self_replace_steps=0.0)
    assert ctrl.modes == ["replace"]
    for step in range(10):
        state = _state(step=step)
        original = _probs(state, queries=4, seed=step, layout=layout)
        active = ctrl.wants_probs(CROSS, state)
        assert active == (step < 5)
        out = _halves(ctrl(original.clone(), CROSS, state), state)
        before = _halves(original, state)
        torch.testing.assert_close(out[0], before[0])  # unconditional half untouched
        torch.testing.assert_close(out[1, 0], before[1, 0])  # source untouched
        if step < 5:
            torch.testing.assert_close(out[1, 1], before[1, 0])  # road -> snow: one-to-one mapper
        else:
            torch.testing.assert_close(out[1, 1], before[1, 1])


@pytest.mark.parametrize("layout", LAYOUTS)
def test_replace_maps_through_the_token_mapper(clip_tokenizer, layout):
    source, target = "a blackswan near a duck", "a duck near a blackswan"
    ctrl = _p2p(clip_tokenizer, [source, target], num_steps=4, cross_replace_steps=1.0, self_replace_steps=0.0)
    state = _state()
    before = _halves(_probs(state, queries=4, layout=layout), state)[1]  # (B, F, heads, Q, K)
    out = _halves(ctrl(_probs(state, queries=4, layout=layout), CROSS, state), state)[1]
    src = before[0]
    torch.testing.assert_close(out[1, ..., 2], src[..., 2] + src[..., 3])  # duck <- black + swan
    torch.testing.assert_close(out[1, ..., 5], src[..., 6] / 2)  # black <- duck / 2
    torch.testing.assert_close(out[1, ..., 3], src[..., 4])  # near <- near


@pytest.mark.parametrize("layout", LAYOUTS)
def test_refine_keeps_new_tokens_own_maps(clip_tokenizer, layout):
    target = "a jeep car is moving on the desert"
    ctrl = _p2p(clip_tokenizer, [ROAD, target], num_steps=10, cross_replace_steps=0.8, self_replace_steps=0.0)
    assert ctrl.modes == ["refine"]
    state = _state(step=3)
    before = _halves(_probs(state, queries=4, seed=3, layout=layout), state)[1]
    out = _halves(ctrl(_probs(state, queries=4, seed=3, layout=layout), CROSS, state), state)[1]
    torch.testing.assert_close(out[1, ..., 2], before[1, ..., 2])  # "jeep": new, its own map
    torch.testing.assert_close(out[1, ..., 8], before[1, ..., 8])  # "desert": unaligned, its own map
    torch.testing.assert_close(out[1, ..., 3], before[0, ..., 2])  # "car" <- source "car"
    torch.testing.assert_close(out[1, ..., 5], before[0, ..., 4])  # "moving" <- source "moving"


def test_forced_replace_on_different_token_counts_fails(clip_tokenizer):
    with pytest.raises(PromptError, match="use refine"):
        _p2p(clip_tokenizer, [ROAD, "a jeep car is moving on the road"], num_steps=10, mode="replace")
    with pytest.raises(ConfigError):  # the one step-window parser (attention/windows.py), shared with EditPlan.build
        _p2p(clip_tokenizer, [ROAD, SNOW], num_steps=10, cross_replace_steps=1.5)
    with pytest.raises(ValueError):  # a programming-error guard; users meet EditPlan.build's ConfigError (below)
        _p2p(clip_tokenizer, [ROAD, SNOW], num_steps=10, mode="swap")
    with pytest.raises(ConfigError, match="cross_replace_steps"):
        EditPlan.from_prompts(clip_tokenizer, ROAD, [SNOW], p2p=P2PConfig(cross_replace_steps=1.5))
    with pytest.raises(ConfigError, match="'swap'"):
        EditPlan.build(config_from_dict({"input_data": {"prompt": ROAD}, "validation_data": {"prompts": [SNOW]},
                                         "p2p": {"mode": "swap"}}), clip_tokenizer)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_per_word_cross_replace_window(clip_tokenizer, layout):
    ctrl = _p2p(clip_tokenizer, [ROAD, SNOW], num_steps=10,
                   cross_replace_steps={"default_": 0.8, "snow": 0.2}, self_replace_steps=0.0)
    state = _state(step=3)  # inside the default window, after the "snow" window
    before = _halves(_probs(state, queries=4, layout=layout), state)[1]
    out = _halves(ctrl(_probs(state, queries=4, layout=layout), CROSS, state), state)[1]
    torch.testing.assert_close(out[1, ..., 7], before[1, ..., 7])  # snow keeps its own map
    torch.testing.assert_close(out[1, ..., 4], before[0, ..., 4])  # moving replaced
    with pytest.raises(PromptError, match="'tiger'"):
        _p2p(clip_tokenizer, [ROAD, SNOW], num_steps=10, cross_replace_steps={"tiger": 0.5})


@pytest.mark.parametrize("num_steps, fraction, replaced", [
    (10, 0.75, 8),  # prompt-to-prompt's alpha table has T + 1 rows: int(0.75 * 11) = 8 steps (int(0.75 * 10) = 7)
    (7, 0.5, 4),  # int(0.5 * 8)
    (25, 0.8, 20),  # the defaults: both truncations agree
    (50, 0.8, 40),
    (4, 1.0, 4),  # int(1.0 * 5) = 5, clipped to the 4 steps there are
])
def test_cross_window_ends_where_prompt_to_prompts_alpha_table_ends(clip_tokenizer, num_steps, fraction, replaced):
    ctrl = _p2p(clip_tokenizer, [ROAD, SNOW], num_steps=num_steps, cross_replace_steps=fraction,
                   self_replace_steps=fraction)
    cross = [s for s in range(num_steps) if ctrl.wants_probs(CROSS, _state(step=s, steps=num_steps))]
    assert cross == list(range(replaced))
    # the self window keeps prompt-to-prompt's int(f * T)
    self_steps = [s for s in range(num_steps) if ctrl.wants_probs(SELF, _state(step=s, steps=num_steps))]
    assert self_steps == list(range(int(fraction * num_steps)))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_reweight_acts_inside_each_words_own_cross_window(clip_tokenizer, layout):
    # google's AttentionReweight scales the replaced maps, and the word's time alpha blends them in: outside the
    # word's own window the edit keeps its own map, unscaled, even inside the default window
    ctrl = _p2p(clip_tokenizer, [ROAD, SNOW], num_steps=10, cross_replace_steps={"default_": 0.8, "snow": 0.3},
                   self_replace_steps=0.0, reweight={"snow": 2.0})
    for step in range(10):
        state = _state(step=step)
        before = _halves(_probs(state, queries=4, layout=layout), state)[1]
        out = _halves(ctrl(_probs(state, queries=4, layout=layout), CROSS, state), state)[1]
        if step < 3:  # int(0.3 * 11): "snow" replaced by the source's "road" and doubled
            torch.testing.assert_close(out[1, ..., 7], 2.0 * before[0, ..., 7])
        else:  # its own map, not scaled (the old rule doubled it at steps 3-7)
            torch.testing.assert_close(out[1, ..., 7], before[1, ..., 7])
        if step < 8:  # int(0.8 * 11): "moving" replaced, factor 1
            torch.testing.assert_close(out[1, ..., 4], before[0, ..., 4])
        else:
            torch.testing.assert_close(out[1, ..., 4], before[1, ..., 4])


@pytest.mark.parametrize("layout", LAYOUTS)
def test_reweight_scales_a_new_word_of_a_refine_edit(clip_tokenizer, layout):
    # refine keeps a new token's own map (alpha 0), and the equalizer scales it inside the cross window
    ctrl = _p2p(clip_tokenizer, [ROAD, "a red car is moving on the road"], num_steps=10, cross_replace_steps=0.5,
                   self_replace_steps=0.0, reweight={"red": 3.0})
    state = _state(step=1)
    before = _halves(_probs(state, queries=4, layout=layout), state)[1]
    out = _halves(ctrl(_probs(state, queries=4, layout=layout), CROSS, state), state)[1]
    torch.testing.assert_close(out[1, ..., 2], 3.0 * before[1, ..., 2])  # "red": its own map, tripled
    torch.testing.assert_close(out[1, ..., 3], before[0, ..., 2])  # "car" <- source "car"


@pytest.mark.parametrize("layout", LAYOUTS)
def test_reweight_scales_the_chosen_word(clip_tokenizer, layout):
    ctrl = _p2p(clip_tokenizer, [ROAD, ROAD], num_steps=10, cross_replace_steps=0.5, self_replace_steps=0.0,
                   reweight={"moving": 3.0})
    state = _state(step=1)
    before = _halves(_probs(state, queries=4, layout=layout), state)[1]
    out = _halves(ctrl(_probs(state, queries=4, layout=layout), CROSS, state), state)[1]
    torch.testing.assert_close(out[1, ..., 4], 3.0 * before[0, ..., 4])
    torch.testing.assert_close(out[1, ..., 6], before[0, ..., 6])
    assert not ctrl.wants_probs(CROSS, _state(step=7))  # reweight lives in the replace window by default

    late = _p2p(clip_tokenizer, [ROAD, ROAD], num_steps=10, cross_replace_steps=0.5, self_replace_steps=0.0,
                   reweight={"moving": 3.0}, reweight_steps=1.0)
    state = _state(step=7)
    assert late.wants_probs(CROSS, state)
    before = _halves(_probs(state, queries=4, layout=layout), state)[1]
    out = _halves(late(_probs(state, queries=4, layout=layout), CROSS, state), state)[1]
    torch.testing.assert_close(out[1, ..., 4], 3.0 * before[1, ..., 4])  # edit's own map, scaled
    torch.testing.assert_close(out[1, ..., 6], before[1, ..., 6])
    with pytest.raises(PromptError, match="'tiger'"):
        _p2p(clip_tokenizer, [ROAD, SNOW], num_steps=10, reweight={"tiger": 2.0})


def test_self_replace_only_small_maps_and_first_steps(clip_tokenizer):
    ctrl = _p2p(clip_tokenizer, [ROAD, SNOW], num_steps=10, cross_replace_steps=0.0, self_replace_steps=0.4,
                   self_max_queries=16)
    small = AttentionSite(name="s", is_cross=False, place="down", block_index=1, level=1)  # 4x4 = 16 queries
    large = AttentionSite(name="l", is_cross=False, place="down", block_index=0, level=0)  # 8x8 = 64 queries
    # Sites of known size: replacement by sharing the source's attention pattern, no probabilities.
    assert ctrl.shares_source_self_attention(small, _state(step=3))
    assert not ctrl.wants_probs(small, _state(step=3))
    assert not ctrl.shares_source_self_attention(large, _state(step=3))
    assert not ctrl.shares_source_self_attention(small, _state(step=4))
    assert not ctrl.shares_source_self_attention(CROSS, _state(step=3))
    assert not ctrl.wants_probs(CROSS, _state(step=0))  # cross replacement is off
    # Sites of unknown size fall back to explicit probabilities, filtered by query count.
    assert ctrl.wants_probs(SELF, _state(step=3)) and not ctrl.wants_probs(SELF, _state(step=4))

    state = _state(step=2)
    before = _halves(_probs(state, queries=16, keys=32), state)
    out = _halves(ctrl(_probs(state, queries=16, keys=32), SELF, state), state)
    torch.testing.assert_close(out[1, 1], before[1, 0])  # edit := source, frame by frame
    torch.testing.assert_close(out[0], before[0])  # unconditional half untouched
    big = _probs(state, queries=64, keys=128)
    torch.testing.assert_close(ctrl(big.clone(), SELF, state), big)  # above the query limit: untouched
    late = _state(step=5)
    p = _probs(late, queries=16, keys=32)
    torch.testing.assert_close(ctrl(p.clone(), SELF, late), p)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_three_branches_without_cfg(clip_tokenizer, layout):
    ctrl = _p2p(clip_tokenizer, [ROAD, SNOW, "a jeep car is moving on the desert"], num_steps=10,
                   cross_replace_steps=0.5, self_replace_steps=0.0)
    assert ctrl.modes == ["replace", "refine"]
    state = _state(branches=3, cfg=False)
    before = _halves(_probs(state, queries=4, layout=layout), state)[0]
    out = _halves(ctrl(_probs(state, queries=4, layout=layout), CROSS, state), state)[0]
    torch.testing.assert_close(out[1], before[0])
    torch.testing.assert_close(out[2, ..., 3], before[0, ..., 2])
    torch.testing.assert_close(out[2, ..., 2], before[2, ..., 2])
    with pytest.raises(ValueError, match="num_branches"):
        ctrl.wants_probs(CROSS, _state(branches=2))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("tokens", [None, (1, 4)], ids=["all-tokens", "tokens-1-3"])
@pytest.mark.parametrize("keep_step", [True, False], ids=["run-and-step", "run-only"])
def test_attention_store_averages_conditional_maps(keep_step, tokens, layout):
    store = AttentionStore(resolution=(2, 2), keep_step=keep_step, tokens=tokens)
    state = _state(branches=2, frames=2, step=0)
    p1 = _probs(state, queries=4, keys=5, seed=1, layout=layout)
    p2 = _probs(state, queries=4, keys=5, seed=2, layout=layout)
    _halves(p1, state)[0] += 100.0  # the unconditional half must not leak into the maps
    assert store.wants_probs(CROSS, state) and not store.wants_probs(SELF, state)
    store(p1, CROSS, state)
    store(_probs(state, queries=16, keys=5, layout=layout), CROSS, state)  # another resolution: ignored
    state.step = 1
    store(p2, CROSS, state)
    kept = torch.zeros(5, dtype=torch.bool)
    kept[slice(*tokens) if tokens else slice(None)] = True  # the stored tokens; the others read 0

    def expect(maps: torch.Tensor) -> torch.Tensor:  # (B, F, Q, K) -> (B, F, h, w, K), 0 at tokens not kept
        return (maps * kept).view(2, 2, 2, 2, 5)

    expected_total = (_halves(p1, state)[1].mean(dim=2) + _halves(p2, state)[1].mean(dim=2)) / 2  # (B, F, Q, K)
    torch.testing.assert_close(store.maps((2, 2)), expect(expected_total))
    if keep_step:
        torch.testing.assert_close(store.step_maps((2, 2)), expect(_halves(p2, state)[1].mean(dim=2)))
    else:  # a figure's store: nothing reads its step maps, so it keeps none
        assert not store.has_maps((2, 2), step=True)
        with pytest.raises(KeyError):
            store.step_maps((2, 2))
    with pytest.raises(KeyError):
        store.maps((4, 4))
    store.reset()
    assert not store.has_maps((2, 2))


def test_attention_store_that_keeps_nothing_is_an_error():
    with pytest.raises(ValueError, match="neither"):
        AttentionStore(keep_total=False, keep_step=False)


@pytest.mark.parametrize("tokens", [(3, 3), (4, 2), (-1, 2)], ids=["empty", "reversed", "negative"])
def test_attention_store_rejects_an_invalid_token_span(tokens):
    with pytest.raises(ValueError, match="stored tokens"):
        AttentionStore(tokens=tokens)


def test_attention_store_rejects_a_token_span_beyond_the_keys():
    store = AttentionStore(resolution=(2, 2), tokens=(2, 9))
    state = _state()
    with pytest.raises(ValueError, match="outside the 5 keys"):
        store(_probs(state, queries=4, keys=5), CROSS, state)


def test_attention_store_never_keeps_large_self_attention():
    store = AttentionStore(store_self=True, max_self_queries=16)
    state = _state()
    big = AttentionSite(name="l", is_cross=False, place="down", block_index=0, level=0)  # 64 queries
    small = AttentionSite(name="s", is_cross=False, place="down", block_index=1, level=1)  # 16 queries
    assert not store.wants_probs(big, state) and store.wants_probs(small, state)
    store(_probs(state, queries=64, keys=128), SELF, state)
    assert store.sizes == []
    store(_probs(state, queries=16, keys=32), SELF, state)
    assert store.maps((4, 4), cross=False).shape == (2, 2, 4, 4, 32)


def _blend_probs(state: AttentionState, word_cells: list[list[dict[tuple[int, int], float]]], token: int,
                 size: tuple[int, int]) -> torch.Tensor:
    """Cross-attention probs where ``token`` gets weight w at the given cells (rest on token 0)."""
    h, w = size
    probs = torch.zeros(state.groups, state.num_branches, state.num_frames, HEADS, h * w, 77)
    probs[..., 0] = 1.0
    for b, frames in enumerate(word_cells):
        for f, cells in enumerate(frames):
            for (y, x), weight in cells.items():
                probs[:, b, f, :, y * w + x, token] = weight
                probs[:, b, f, :, y * w + x, 0] = 1.0 - weight
    return probs.view(-1, HEADS, h * w, 77)


def test_local_blend_mask_and_latents(clip_tokenizer):
    prompts = ["a cat on the grass", "a dog on the grass"]
    blend = _blend(clip_tokenizer, prompts, ["cat", "dog"], threshold=0.3)
    state = _state(branches=2, frames=2, step=2)  # latents 8x8 -> blend maps 4x4; int(0.2 * 10): blending is on
    assert blend.target_size(state) == (4, 4)
    cells = [
        [{(0, 0): 0.9, (3, 0): 0.2}, {(3, 3): 0.9}],  # source "cat": frame 0 top-left (+ a weak cell), frame 1 corner
        [{(0, 1): 0.9}, {(0, 3): 0.5}],  # edit "dog"
    ]
    blend(_blend_probs(state, cells, token=2, size=(4, 4)), CROSS, state)
    everywhere = [[{(y, x): 0.9 for y in range(8) for x in range(8)}] * 2] * 2
    blend(_blend_probs(state, everywhere, token=2, size=(8, 8)), CROSS, state)  # other resolution: ignored

    c = 3
    latents = torch.cat([torch.zeros(2, c, 8, 8), torch.ones(2, c, 8, 8)])  # (B*F, C, h, w): source 0, edit 1
    out = blend.step_end(latents, state).view(2, 2, c, 8, 8)
    expected = torch.zeros(2, 8, 8)
    expected[0, 0:4, 0:6] = 1.0  # union of 3x3-pooled cells (0,0) and (0,1) on 4x4, upsampled x2; weak cell out
    expected[1, :, 4:8] = 1.0  # pooled (3,3) (source) covers rows 2-3, pooled (0,3) (edit) rows 0-1; cols 2-3
    torch.testing.assert_close(out[0], torch.zeros(2, c, 8, 8))  # source unchanged
    torch.testing.assert_close(out[1], expected[:, None].expand(2, c, 8, 8))

    with pytest.raises(PromptError, match="'tiger'"):
        _blend(clip_tokenizer, prompts, ["cat", "tiger"])
    with pytest.raises(PromptError):
        _blend(clip_tokenizer, prompts, ["cat"])


@pytest.mark.parametrize("num_steps, first", [(10, 2), (50, 10), (7, 1), (4, 0)])
def test_local_blend_starts_after_a_fifth_of_the_steps(clip_tokenizer, num_steps, first):
    # prompt-to-prompt's LocalBlend counts its calls and blends once the count exceeds int(0.2 * T)
    prompts = ["a cat on the grass", "a dog on the grass"]
    blend = _blend(clip_tokenizer, prompts, ["cat", "dog"])
    cells = [[{(0, 0): 0.9}, {(0, 0): 0.9}], [{(0, 0): 0.9}, {(0, 0): 0.9}]]
    latents = torch.cat([torch.zeros(2, 1, 8, 8), torch.ones(2, 1, 8, 8)])
    blended = []
    for step in range(num_steps):
        state = _state(step=step, steps=num_steps)
        blend(_blend_probs(state, cells, token=2, size=(4, 4)), CROSS, state)
        blended.append(not torch.equal(blend.step_end(latents, state), latents))
    assert blended == [step >= first for step in range(num_steps)]


def test_local_blend_mask_comes_from_every_step_so_far(clip_tokenizer):
    # prompt-to-prompt's mask reads the running attention store (all steps so far), not the current step alone
    prompts = ["a cat on the grass", "a dog on the grass"]
    blend = _blend(clip_tokenizer, prompts, ["cat", "dog"], threshold=0.3, start_blend=0.0)
    latents = torch.cat([torch.zeros(2, 1, 8, 8), torch.ones(2, 1, 8, 8)])
    early = [[{(0, 0): 0.9}] * 2] * 2  # both words top-left at step 0
    late = [[{(3, 3): 0.9}] * 2] * 2  # bottom-right at step 1
    for step, cells in enumerate([early, late]):
        state = _state(step=step)
        blend(_blend_probs(state, cells, token=2, size=(4, 4)), CROSS, state)
        out = blend.step_end(latents, state).view(2, 2, 8, 8)[1]
    # after step 1 both places hold half the accumulated mass: both pass the threshold (0.5 of the max each)
    assert out[:, :4, :4].eq(1).all() and out[:, 4:, 4:].eq(1).all()
    assert out[:, :4, 4:].eq(0).all() and out[:, 4:, :4].eq(0).all()


def test_p2p_edit_drives_local_blend(clip_tokenizer):
    prompts = ["a cat on the grass", "a dog on the grass"]
    blend = _blend(clip_tokenizer, prompts, ["cat", "dog"])
    ctrl = _p2p(clip_tokenizer, prompts, num_steps=10, cross_replace_steps=0.2, self_replace_steps=0.0,
                   local_blend=blend)
    state = _state(step=5)  # after cross replacement, blend still needs the maps
    assert ctrl.wants_probs(CROSS, state)
    cells = [[{(0, 0): 0.9}, {(0, 0): 0.9}], [{(0, 0): 0.9}, {(0, 0): 0.9}]]
    ctrl(_blend_probs(state, cells, token=2, size=(4, 4)), CROSS, state)
    latents = torch.cat([torch.zeros(2, 1, 8, 8), torch.ones(2, 1, 8, 8)])
    out = ctrl.step_end(latents, state).view(2, 2, 8, 8)
    assert out[1, :, :4, :4].eq(1).all() and out[1, :, 4:, :].eq(0).all() and out[0].eq(0).all()


def test_p2p_in_a_unet_leaves_source_and_uncond_alone(tiny):
    """Wired through the real processors (cross-frame, CFG): only the edit branch's output changes."""
    from attentionflow.attention.processors import AttentionRuntime, attention_resolutions, install_attention

    unet, tok = tiny.unet, tiny.tokenizer
    b, f = 2, 3
    ctrl = _p2p(tok, [ROAD, SNOW], num_steps=4, cross_replace_steps=1.0, self_replace_steps=1.0,
                   self_max_queries=64)
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(b * f, 4, 8, 8, generator=g).repeat(2, 1, 1, 1)  # (G*B*F, C, h, w)
    text = torch.randn(2 * b * f, 77, 32, generator=g)
    state = AttentionState(num_frames=f, num_branches=b, cfg=True, step=0, num_steps=4, latent_size=(8, 8))
    runtime = AttentionRuntime(state=state)
    with install_attention(unet, runtime) as sites, torch.no_grad():
        state.resolutions = attention_resolutions(sites, (8, 8))
        plain = unet(latents, 10, encoder_hidden_states=text).sample.view(2, b, f, 4, 8, 8)
        runtime.controller = ctrl
        edited = unet(latents, 10, encoder_hidden_states=text).sample.view(2, b, f, 4, 8, 8)
    torch.testing.assert_close(edited[0], plain[0], atol=1e-5, rtol=0)  # unconditional half
    torch.testing.assert_close(edited[1, 0], plain[1, 0], atol=1e-5, rtol=0)  # source branch
    assert (edited[1, 1] - plain[1, 1]).abs().max() > 1e-4  # the edit branch follows the source's attention


@pytest.mark.parametrize("indices, span", [([4, 1, 2], (1, 5)), ([7], (7, 8)), ([], None)],
                         ids=["several", "one", "none"])
def test_index_span_is_the_smallest_range_holding_every_index(indices, span):
    assert index_span(indices) == span


@pytest.mark.parametrize("heads", [1, 3])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_token_rows_and_head_sum_read_the_span_of_every_head(heads, layout):
    probs = torch.rand(2, heads, 6, 5)  # (Bt, heads, Q, K)
    if layout == "token-major":
        probs = as_token_major(probs)
    sums = head_sum(token_rows(probs, (1, 4)), 1)  # (Bt, K', Q)
    torch.testing.assert_close(sums, probs.sum(dim=1)[..., 1:4].transpose(-1, -2))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("groups, skip_uncond", [(1, False), (2, False), (2, True)],
                         ids=["no-guidance", "guidance", "guidance-without-source-uncond"])
@pytest.mark.parametrize("tokens", [(0, 5), (1, 4), (3, 4), (2, 2)], ids=["all", "span", "one", "empty"])
def test_cond_rows_is_the_conditional_halfs_token_rows(layout, groups, skip_uncond, tokens):
    """One as_strided view gives what cond_view + token_rows give, on either layout and any batch, and writes
    through to the probabilities."""
    b, f, heads = 3, 2, 2
    rows = (groups * b - int(skip_uncond)) * f
    probs = torch.rand(rows, heads, 6, 5)  # (Bt, heads, Q, K)
    if layout == "token-major":
        probs = as_token_major(probs)
    state = AttentionState(num_frames=f, num_branches=b, cfg=groups == 2)
    got = state.cond_rows(probs, tokens)  # (B, F, heads, K', Q)
    want = token_rows(probs[rows - b * f:].reshape(b, f, heads, 6, 5), tokens)
    assert got.shape == (b, f, heads, tokens[1] - tokens[0], 6)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    if tokens[1] > tokens[0]:
        got[1, 1, 0, 0, 2] = -1.0  # branch 1, frame 1, head 0, first token of the span, query 2
        assert probs[rows - b * f + 1 * f + 1, 0, 2, tokens[0]] == -1.0


@pytest.mark.parametrize("rows, tokens", [(5, (0, 2)), (6, (2, 6)), (6, (3, 2)), (6, (-1, 2))],
                         ids=["too-few-rows", "beyond-the-keys", "reversed", "negative"])
def test_cond_rows_rejects_impossible_requests(rows, tokens):
    state = AttentionState(num_frames=2, num_branches=3)
    with pytest.raises(ValueError, match="conditional half"):
        state.cond_rows(torch.rand(rows, 1, 4, 5), tokens)


def test_the_plan_holds_the_resolved_tables_and_copies_of_the_sections(clip_tokenizer):
    import dataclasses
    import inspect

    config = config_from_dict({"input_data": {"prompt": ROAD}, "validation_data": {"prompts": [SNOW]},
                               "p2p": {"cross_replace_steps": {"default_": 0.8, "snow": 0.3},
                                       "reweight": {"snow": 2.0}}})
    plan = EditPlan.build(config, clip_tokenizer)
    assert plan.p2p is not config.p2p and plan.mmi is not config.mmi  # copies, never aliases
    config.p2p.reweight["snow"] = 5.0
    config.mmi.strength = 0.5
    assert plan.p2p.reweight == {"snow": 2.0} and plan.mmi.strength != 0.5
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.p2p_tables = None  # type: ignore[misc]
    tables = plan.p2p_tables
    steps = config.validation_data.num_inference_steps  # 50: cross windows end at int(f * 51)
    assert tables.modes == ("replace",) and plan.edit_modes == ("replace",)
    assert tables.cross_windows[0][7] == (0, int(0.3 * (steps + 1)))  # "snow"
    assert tables.cross_windows[0][4] == (0, int(0.8 * (steps + 1)))  # "moving": the default window
    assert tables.self_window == (0, int(0.4 * steps))
    assert tables.reweight == (((7, 2.0),),)
    # the controllers are built from these tables: none of them takes a tokenizer
    for cls in (P2PEdit, LocalBlend):
        assert "tokenizer" not in inspect.signature(cls).parameters
