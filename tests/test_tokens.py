"""Word -> token positions and the prompt-to-prompt token mappers, on the real CLIP tokenizer."""

from __future__ import annotations

import pytest
import torch

from attentionflow.attention.tokens import (
    check_prompt_length,
    choose_edit_mode,
    content_token_mask,
    prompt_words,
    refine_mapper,
    replace_mapper,
    reweight_vector,
    word_token_indices,
)
from attentionflow.errors import PromptError


def test_multi_token_word_positions_count_the_start_token(clip_tokenizer):
    prompt = "a blackswan is swimming on the water"
    # tokens: <start> a black swan</w> is swimming on the water <end>
    assert word_token_indices(prompt, "blackswan", clip_tokenizer) == [2, 3]
    assert word_token_indices(prompt, "a", clip_tokenizer) == [1]  # not 0 (start token), the reference's off-by-one
    assert word_token_indices(prompt, "swimming", clip_tokenizer) == [5]
    ids = clip_tokenizer(prompt).input_ids
    assert clip_tokenizer.convert_ids_to_tokens(ids[5]) == "swimming</w>"


def test_phrases_punctuation_case_and_repeats(clip_tokenizer):
    assert word_token_indices("a jeep car is moving on the desert", "jeep car", clip_tokenizer) == [2, 3]
    assert word_token_indices("a blackswan is swimming on the water.", "water", clip_tokenizer) == [8]
    assert word_token_indices("A Car, is moving!", "car", clip_tokenizer) == [2]
    assert word_token_indices("a car follows a red car", "car", clip_tokenizer) == [2, 6]
    assert word_token_indices("a car is moving", "CAR", clip_tokenizer) == [2]
    # "swan" is only the end of "blackswan": no match inside a word
    with pytest.raises(PromptError):
        word_token_indices("a blackswan is swimming", "swan", clip_tokenizer)


def test_missing_word_error_lists_the_words(clip_tokenizer):
    with pytest.raises(PromptError) as err:
        word_token_indices("a car is moving on the road", "running", clip_tokenizer)
    msg = str(err.value)
    assert "'running'" in msg and "'a car is moving on the road'" in msg
    assert "a, car, is, moving, on, the, road" in msg
    assert "\n" not in msg


def test_prompt_words_and_content_mask(clip_tokenizer):
    assert prompt_words("a blackswan is swimming on the water.", clip_tokenizer) == [
        "a", "blackswan", "is", "swimming", "on", "the", "water", "."]
    mask = content_token_mask("a blackswan is swimming", clip_tokenizer)
    assert mask.shape == (77,) and mask.dtype == torch.bool
    assert mask.nonzero().flatten().tolist() == [1, 2, 3, 4, 5]


def test_too_long_prompt(clip_tokenizer):
    check_prompt_length("a car is moving on the road", clip_tokenizer)
    long_prompt = " ".join(["car"] * 80)
    with pytest.raises(PromptError, match=r"82 tokens .*limit is 77"):
        check_prompt_length(long_prompt, clip_tokenizer)


def test_replace_mapper_identity_and_word_swap(clip_tokenizer):
    p = "a car is moving on the road"
    torch.testing.assert_close(replace_mapper(p, p, clip_tokenizer), torch.eye(77))
    m = replace_mapper(p, "a car is moving on the snow", clip_tokenizer)
    # one-token word for one-token word: the snow token (7) takes the road token's map (7)
    assert m[7, 7] == 1 and m[7].sum() == 1 and m[:, 7].sum() == 1
    source_maps = torch.rand(3, 77)
    torch.testing.assert_close(source_maps @ m, source_maps)


def test_replace_mapper_words_of_different_token_lengths(clip_tokenizer):
    source, target = "a blackswan near a duck", "a duck near a blackswan"
    # source: <s>0 a1 black2 swan3 near4 a5 duck6 <e>7 ; target: <s>0 a1 duck2 near3 a4 black5 swan6 <e>7
    m = replace_mapper(source, target, clip_tokenizer)
    maps = torch.rand(4, 77)
    mapped = maps @ m
    torch.testing.assert_close(mapped[:, 2], maps[:, 2] + maps[:, 3])  # duck <- (black + swan) / 1
    torch.testing.assert_close(mapped[:, 5], maps[:, 6] / 2)  # black <- duck / 2
    torch.testing.assert_close(mapped[:, 6], maps[:, 6] / 2)  # swan <- duck / 2
    torch.testing.assert_close(mapped[:, 3], maps[:, 4])  # near <- near (shifted by one)
    torch.testing.assert_close(mapped[:, 4], maps[:, 5])  # a <- a (shifted by one)
    torch.testing.assert_close(mapped[:, [0, 7, 40]], maps[:, [0, 7, 40]])  # start, end, padding


def test_replace_needs_equal_token_counts(clip_tokenizer):
    with pytest.raises(PromptError, match=r"same number of tokens.*has 7.*has 8; use refine"):
        replace_mapper("a car is moving on the road", "a jeep car is moving on the road", clip_tokenizer)
    assert choose_edit_mode("a car is moving on the road", "a car is moving on the snow", clip_tokenizer) == "replace"
    assert choose_edit_mode("a car is moving on the road", "a jeep car is moving on the desert",
                            clip_tokenizer) == "refine"


def test_refine_mapper_alignment(clip_tokenizer):
    mapper, alphas = refine_mapper("a car is moving on the road", "a jeep car is moving on the desert",
                                   clip_tokenizer)
    assert mapper.shape == (77,) and alphas.shape == (77,) and mapper.dtype == torch.long
    # target: <s>0 a1 jeep2 car3 is4 moving5 on6 the7 desert8 <e>9 ; source: <s>0 a1 car2 is3 moving4 on5 the6 road7
    # <e>8
    aligned = {0: 0, 1: 1, 3: 2, 4: 3, 5: 4, 6: 5, 7: 6, 9: 8}
    for j, i in aligned.items():
        assert mapper[j] == i and alphas[j] == 1, j
    assert alphas[2] == 0  # "jeep" is new: keeps its own map
    assert alphas[8] == 0  # "desert" vs "road": P2P's scoring (gap 0 < mismatch -1) leaves it unaligned
    assert torch.all(alphas[10:] == 1)


@pytest.mark.parametrize("source, target, end", [
    ("a car is moving on the road", "a jeep car is moving on the desert", 10),  # target longer
    ("a boat on the lake at sunset", "a boat on the lake", 7),  # target shorter: the case, 7:9 -> [7, 8]
    ("a boat on the lake", "a boat on the lake", 7),
])
def test_refine_mapper_maps_target_padding_to_the_same_position(clip_tokenizer, source, target, end):
    # prompt-to-prompt's get_mapper: position j past the target prompt (<bos> words <eos>) takes source position j
    mapper, alphas = refine_mapper(source, target, clip_tokenizer)
    assert mapper[end:].tolist() == list(range(end, 77))
    assert torch.all(alphas[end:] == 1)


def test_reweight_vector(clip_tokenizer):
    eq = reweight_vector("a blackswan is swimming", {"blackswan": 2.0, "swimming": 0.5}, clip_tokenizer)
    expected = torch.ones(77)
    expected[[2, 3]] = 2.0
    expected[5] = 0.5
    torch.testing.assert_close(eq, expected)
    with pytest.raises(PromptError, match="'duck' is not in the prompt"):
        reweight_vector("a blackswan is swimming", {"duck": 2.0}, clip_tokenizer)
