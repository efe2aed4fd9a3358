"""Step windows: which denoising steps a control acts on (no torch import; the plan checks them).

``[start, end)`` fractions of ``T`` steps become step indices, step 0 being the noisiest, by prompt-to-prompt's two
truncations: its cross-attention alpha table (``get_time_words_attention_alpha``) has ``T + 1`` rows, so a cross
window is ``[int(start * (T + 1)), int(end * (T + 1)))``; its self-attention window, and MMI's step range, are
``[int(start * T), int(end * T))``. They differ by one step in about half of the (T, f) pairs (T 10, f 0.75: 8 steps
vs 7) and agree at the defaults (f 0.8 at T 25 or 50).
"""

from __future__ import annotations

from typing import Union

from attentionflow.errors import ConfigError

StepWindow = Union[float, tuple[float, float]]
"""A fraction ``f`` of the steps (``[0, f)``) or a ``(start, end)`` pair of fractions."""


def step_window(start: float, end: float, num_steps: int, cross: bool = False) -> tuple[int, int]:
    """``[start, end)`` fractions of ``num_steps`` -> step indices ``(lo, hi)``; step ``i`` is inside when
    ``lo <= i < hi``. ``cross``: prompt-to-prompt's cross-attention rule (``T + 1`` rows, clipped to ``T``);
    otherwise its self-attention rule, which MMI's step range uses too."""
    rows = num_steps + 1 if cross else num_steps
    return min(int(start * rows), num_steps), min(int(end * rows), num_steps)


def parse_window(value: StepWindow, num_steps: int, what: str, cross: bool = False) -> tuple[int, int]:
    """A fraction or ``(start, end)`` pair -> step indices (:func:`step_window`); ConfigError naming ``what``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        lo, hi = 0.0, float(value)
    elif isinstance(value, (tuple, list)) and len(value) == 2:
        lo, hi = float(value[0]), float(value[1])
    else:
        raise ConfigError(f"{what} = {value!r} is not a fraction of the steps; use a number in [0, 1] "
                          f"or a (start, end) pair")
    if not 0.0 <= lo <= hi <= 1.0:
        raise ConfigError(f"{what} = {value!r} is out of range; fractions must satisfy 0 <= start <= end <= 1")
    return step_window(lo, hi, num_steps, cross)
