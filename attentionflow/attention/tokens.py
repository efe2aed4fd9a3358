"""Words -> token positions, and the prompt-to-prompt token mappers (Replace, Refine).

Every position is an index into the padded text-encoder sequence (``tokenizer.model_max_length``,
77 for CLIP) where index 0 is the start token: the first word of a prompt starts at index 1.
Words are found on the tokenizer's own tokens, never by splitting the prompt on spaces, so
multi-token words ("blackswan" -> ``black``, ``swan</w>``), several-word phrases ("jeep car"),
punctuation ("water." -> ``water</w>``, ``.</w>``) and repeated words all resolve correctly.

A *word* of a prompt is a run of tokens ending with a token that carries CLIP's end-of-word marker
``</w>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Sequence

from attentionflow.errors import PromptError, one_line

if TYPE_CHECKING:  # the word checks need no torch; only the tensor builders import it
    import torch

__all__ = [
    "check_prompt_length",
    "check_replace",
    "choose_edit_mode",
    "content_positions",
    "content_token_mask",
    "edit_positions",
    "max_length",
    "prompt_token_ids",
    "prompt_words",
    "refine_mapper",
    "replace_mapper",
    "reweight_vector",
    "TokenMap",
    "token_map",
    "word_positions",
    "word_token_indices",
]

EditMode = Literal["replace", "refine"]
_EOW = "</w>"
_DEFAULT_MAX_LENGTH = 77

#: Prompt-to-prompt's global-alignment scores (``seq_aligner.ScoreParams(gap=0, match=1, mismatch=-1)``).
_GAP, _MATCH, _MISMATCH = 0, 1, -1


def max_length(tokenizer: Any) -> int:
    """The text encoder's sequence length (``model_max_length``; 77 when the tokenizer has none)."""
    n = int(getattr(tokenizer, "model_max_length", _DEFAULT_MAX_LENGTH) or _DEFAULT_MAX_LENGTH)
    return n if n < 100_000 else _DEFAULT_MAX_LENGTH


def prompt_token_ids(prompt: str, tokenizer: Any) -> list[int]:
    """Token ids of ``prompt`` with the start and end tokens, unpadded; checks the length limit."""
    ids = list(tokenizer(prompt, add_special_tokens=True, truncation=False).input_ids)
    limit = max_length(tokenizer)
    if len(ids) > limit:
        raise PromptError(f"prompt '{one_line(prompt)}' has {len(ids)} tokens (with start/end tokens); "
                          f"the limit is {limit}: shorten it")
    return ids


def check_prompt_length(prompt: str, tokenizer: Any) -> None:
    """Raise :class:`PromptError` if ``prompt`` needs more tokens than the text encoder takes."""
    prompt_token_ids(prompt, tokenizer)


def _content_tokens(prompt: str, tokenizer: Any) -> list[str]:
    """Token strings of the prompt without start/end tokens (position p here is index p+1)."""
    ids = prompt_token_ids(prompt, tokenizer)
    return list(tokenizer.convert_ids_to_tokens(ids[1:-1]))


def _word_spans(tokens: list[str]) -> list[list[int]]:
    """Group content tokens into words: lists of positions in the padded sequence (start token = 0)."""
    spans: list[list[int]] = []
    current: list[int] = []
    for i, tok in enumerate(tokens):
        current.append(i + 1)
        if tok.endswith(_EOW):
            spans.append(current)
            current = []
    if current:
        spans.append(current)
    return spans


def word_spans(prompt: str, tokenizer: Any) -> list[tuple[str, list[int]]]:
    """The prompt's words in order, each with its token positions in the padded sequence (start token = 0)."""
    ids = prompt_token_ids(prompt, tokenizer)[1:-1]
    spans = _word_spans(list(tokenizer.convert_ids_to_tokens(ids)))
    return [(tokenizer.decode([ids[p - 1] for p in span]).strip(), span) for span in spans]


def prompt_words(prompt: str, tokenizer: Any) -> list[str]:
    """The prompt's words as the tokenizer sees them (lower-cased, punctuation as separate words)."""
    return [word for word, _ in word_spans(prompt, tokenizer)]


def content_positions(prompt: str, tokenizer: Any) -> list[int]:
    """Positions of the prompt's own tokens in the padded sequence (not the start/end tokens nor padding)."""
    return list(range(1, len(prompt_token_ids(prompt, tokenizer)) - 1))


def edit_positions(word: str, edits: Sequence[str], tokenizer: Any, what: str) -> list[list[int]]:
    """Token positions of ``word`` in each edit prompt; a :class:`PromptError` if it is in none of them."""
    hits = [word_positions(t, word, tokenizer) for t in edits]
    if not any(hits):
        raise PromptError(f"{what} '{one_line(word)}' is in none of the edit prompts; words of "
                          f"'{one_line(edits[0]) if edits else ''}': "
                          f"{', '.join(prompt_words(edits[0], tokenizer)) if edits else ''}")
    return hits


def content_token_mask(prompt: str, tokenizer: Any) -> torch.Tensor:
    """``(L,)`` bool, True at the prompt's own tokens (not the start/end tokens nor padding)."""
    import torch

    n = len(prompt_token_ids(prompt, tokenizer)) - 2
    mask = torch.zeros(max_length(tokenizer), dtype=torch.bool)
    mask[1 : 1 + n] = True
    return mask


def _find(tokens: list[str], word_tokens: list[str]) -> list[int]:
    """Positions (padded sequence) of every occurrence of ``word_tokens`` that starts a word."""
    n, m = len(tokens), len(word_tokens)
    at_word_start = word_tokens[-1].endswith(_EOW)  # CLIP-style vocabulary: require word boundaries
    out: list[int] = []
    for p in range(n - m + 1):
        if tokens[p : p + m] != word_tokens:
            continue
        if at_word_start and p > 0 and not tokens[p - 1].endswith(_EOW):
            continue
        out.extend(range(p + 1, p + m + 1))
    return out


def word_positions(prompt: str, word: str, tokenizer: Any) -> list[int]:
    """Like :func:`word_token_indices` but returns [] when the word is absent."""
    if not str(word).strip():
        raise PromptError(f"empty word {word!r}: give a word of the prompt '{one_line(prompt)}'")
    tokens = [t.lower() for t in _content_tokens(prompt, tokenizer)]
    word_ids = tokenizer(str(word).strip(), add_special_tokens=False).input_ids
    word_tokens = [t.lower() for t in tokenizer.convert_ids_to_tokens(word_ids)]
    if not word_tokens:
        return []
    return _find(tokens, word_tokens)


def word_token_indices(prompt: str, word: str, tokenizer: Any) -> list[int]:
    """Positions of every token of every occurrence of ``word`` in ``prompt`` (start token = 0).

    ``word`` may be one word of several tokens or several words; matching is case-insensitive and
    only at word starts ("swan" does not match inside "blackswan").
    """
    positions = word_positions(prompt, word, tokenizer)
    if not positions:
        raise PromptError(f"word '{one_line(word)}' is not in the prompt '{one_line(prompt)}'; "
                          f"its words are: {', '.join(prompt_words(prompt, tokenizer))}")
    return positions


def choose_edit_mode(source: str, target: str, tokenizer: Any) -> EditMode:
    """``replace`` when both prompts have the same token count, else ``refine``."""
    same = len(prompt_token_ids(source, tokenizer)) == len(prompt_token_ids(target, tokenizer))
    return "replace" if same else "refine"


def check_replace(source: str, target: str, tokenizer: Any) -> None:
    """Raise :class:`PromptError` unless Replace can map ``source`` onto ``target`` (same token count)."""
    n_src, n_tgt = len(_content_tokens(source, tokenizer)), len(_content_tokens(target, tokenizer))
    if n_src != n_tgt:
        raise PromptError(f"replace needs prompts with the same number of tokens: '{one_line(source)}' has "
                          f"{n_src}, '{one_line(target)}' has {n_tgt}; use refine")


def _replace_pairs(source: str, target: str, tokenizer: Any) -> list[tuple[int, int, float]]:
    """Prompt-to-prompt Replace as ``(source position i, target position j, weight)`` triples (:func:`replace_mapper`
    has the rule)."""
    check_replace(source, target, tokenizer)
    src_tokens = _content_tokens(source, tokenizer)
    tgt_tokens = _content_tokens(target, tokenizer)
    size = max_length(tokenizer)
    n = len(src_tokens)
    pairs = [(0, 0, 1.0)] + [(k, k, 1.0) for k in range(n + 1, size)]  # start token; end token and padding
    src_words, tgt_words = _word_spans(src_tokens), _word_spans(tgt_tokens)
    if len(src_words) != len(tgt_words):
        return pairs + [(k, k, 1.0) for k in range(1, n + 1)]  # token by token, by position
    for s_span, t_span in zip(src_words, tgt_words):
        if len(s_span) == len(t_span):
            pairs += [(i, j, 1.0) for i, j in zip(s_span, t_span)]  # one to one
        else:
            pairs += [(i, j, 1.0 / len(t_span)) for i in s_span for j in t_span]
    return pairs


def replace_mapper(source: str, target: str, tokenizer: Any) -> torch.Tensor:
    """Prompt-to-prompt Replace mapper ``M`` ``(L, L)``: ``target_maps = source_maps @ M``.

    ``M[i, j]`` is the weight of source token ``i`` in target token ``j``. Equal words map one to
    one. When both prompts have the same number of words, a changed word maps to its counterpart
    (one to one if both have as many tokens; otherwise every target token gets the source word's
    tokens times ``1 / len(target word)``, as P2P's ``get_replacement_mapper``); with different
    word counts tokens map by position. Start, end and padding positions map to themselves.
    """
    return token_map(source, target, "replace", tokenizer).matrix()


def _global_align(x: list[int], y: list[int]) -> list[int]:
    """Needleman-Wunsch as P2P's ``seq_aligner``: for each y position the aligned x position or -1."""
    n, m = len(x), len(y)
    score = [[0] * (m + 1) for _ in range(n + 1)]
    trace = [[0] * (m + 1) for _ in range(n + 1)]
    for j in range(1, m + 1):
        score[0][j], trace[0][j] = j * _GAP, 1
    for i in range(1, n + 1):
        score[i][0], trace[i][0] = i * _GAP, 2
    trace[0][0] = 4
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            left = score[i][j - 1] + _GAP
            up = score[i - 1][j] + _GAP
            diag = score[i - 1][j - 1] + (_MATCH if x[i - 1] == y[j - 1] else _MISMATCH)
            best = max(left, up, diag)
            score[i][j] = best
            trace[i][j] = 1 if best == left else 2 if best == up else 3
    y_to_x = [-1] * m
    i, j = n, m
    while i > 0 or j > 0:
        t = trace[i][j]
        if t == 3:
            i, j = i - 1, j - 1
            y_to_x[j] = i
        elif t == 1:
            j -= 1
        elif t == 2:
            i -= 1
        else:
            break
    return y_to_x


def _refine_pairs(source: str, target: str, tokenizer: Any) -> tuple[list[tuple[int, int, float]], list[float]]:
    """Prompt-to-prompt Refine as ``(source i, target j, 1.0)`` triples, one per target position, and the alphas
    (:func:`refine_mapper` has the rule)."""
    x = prompt_token_ids(source, tokenizer)
    y = prompt_token_ids(target, tokenizer)
    size = max_length(tokenizer)
    y_to_x = _global_align(x, y)
    pairs = [(max(i, 0), j, 1.0) for j, i in enumerate(y_to_x)] + [(j, j, 1.0) for j in range(len(y), size)]
    alphas = [1.0 if i >= 0 else 0.0 for i in y_to_x] + [1.0] * (size - len(y))
    return pairs, alphas


def refine_mapper(source: str, target: str, tokenizer: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompt-to-prompt Refine mapper from a global alignment of the two token sequences.

    Returns ``(mapper, alphas)``, both ``(L,)``: ``mapper[j]`` is the source position aligned to
    target position ``j`` (0 where ``j`` is unaligned), ``alphas[j]`` is 1 where aligned, 0 for new
    target tokens (which keep the edit's own attention). A target position ``j`` past the prompt maps to source
    position ``j``, as prompt-to-prompt's ``get_mapper`` does (not to the source's own padding).
    """
    import torch

    pairs, alphas = _refine_pairs(source, target, tokenizer)
    return torch.tensor([i for i, _, _ in pairs], dtype=torch.long), torch.tensor(alphas)


@dataclass(frozen=True)
class TokenMap:
    """How one edit prompt's tokens take the source's cross-attention, resolved (torch-free).

    ``pairs``: ``(source position i, target position j, weight)``: target token ``j``'s map is the weighted sum of
    the source maps ``i``; ``alphas`` ``(L,)``: 1 where target token ``j`` takes that map, 0 where it keeps its own
    (Refine's new tokens).
    """

    mode: EditMode
    pairs: tuple[tuple[int, int, float], ...]
    alphas: tuple[float, ...]

    def matrix(self) -> torch.Tensor:
        """The ``(L, L)`` mapper ``M``: ``target_maps = source_maps @ M``."""
        import torch

        size = len(self.alphas)
        m = torch.zeros(size, size)
        for i, j, w in self.pairs:
            m[i, j] = w
        return m


def token_map(source: str, target: str, mode: EditMode, tokenizer: Any) -> TokenMap:
    """The :class:`TokenMap` of ``target`` against ``source`` for ``mode`` ``replace`` or ``refine``."""
    if mode == "replace":
        pairs = _replace_pairs(source, target, tokenizer)
        return TokenMap("replace", tuple(pairs), (1.0,) * max_length(tokenizer))
    pairs, alphas = _refine_pairs(source, target, tokenizer)
    return TokenMap("refine", tuple(pairs), tuple(alphas))


def reweight_vector(prompt: str, words: dict[str, float], tokenizer: Any) -> torch.Tensor:
    """Equalizer ``(L,)``: 1 everywhere, ``words[w]`` at the tokens of word ``w`` of ``prompt``."""
    import torch

    eq = torch.ones(max_length(tokenizer))
    for word, factor in words.items():
        eq[word_token_indices(prompt, word, tokenizer)] = float(factor)
    return eq
