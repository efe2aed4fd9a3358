"""Step windows: which denoising steps a control acts on (no torch import; the plan checks them).

One convention for every control (prompt-to-prompt's truncation): ``[start, end)`` fractions of ``T``
steps are the step indices ``[int(start * T), int(end * T))``, step 0 being the noisiest.
"""

from __future__ import annotations

from typing import Union

from attentionflow.errors import ConfigError

StepWindow = Union[float, tuple[float, float]]
"""A fraction ``f`` of the steps (``[0, f)``) or a ``(start, end)`` pair of fractions."""


def step_window(start: float, end: float, num_steps: int) -> tuple[int, int]:
    """``[start, end)`` fractions of ``num_steps`` -> step indices ``(lo, hi)``; step ``i`` is inside when
    ``lo <= i < hi``. P2P's replace windows and MMI's step range both use it."""
    return int(start * num_steps), int(end * num_steps)


def parse_window(value: StepWindow, num_steps: int, what: str) -> tuple[int, int]:
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
    return step_window(lo, hi, num_steps)
