"""User-facing errors.

Every problem caused by user input (a bad path, an impossible option, a prompt that does not contain
a word) raises :class:`AttentionFlowError` with a one-line message that names the offending value and
what would be valid. The CLI turns it into that line on stderr and exit code 2, with no traceback.
"""

from __future__ import annotations

import reprlib
from typing import Any


def one_line(text: object) -> str:
    """``text`` with every run of white space (newlines included) folded into one space."""
    return " ".join(str(text).split())


def shown(value: Any, limit: int = 80) -> str:
    """``repr(value)`` for a one-line message: bounded in size whatever the value (a YAML alias tree shares its
    branches, so a plain repr could be gigabytes), control characters escaped, cut at ``limit`` characters."""
    short = reprlib.Repr()
    short.maxlevel, short.maxstring, short.maxother = 3, limit, limit
    short.maxlist = short.maxtuple = short.maxdict = short.maxset = 6
    text = short.repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def escape_controls(text: str) -> str:
    """``text`` with every control character written as an escape (``\\x1b``, ``\\n``): a prompt or a file name
    echoed in a message can neither clear the terminal nor split the line."""
    return "".join(ch.encode("unicode_escape").decode("ascii") if not ch.isprintable() and ch != " " else ch
                   for ch in text)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty)."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


class AttentionFlowError(Exception):
    """A user-input error: the message is one line, names the bad value and what would be valid."""


class ConfigError(AttentionFlowError):
    """Invalid configuration (unknown key, wrong type, out-of-range value)."""


class InputError(AttentionFlowError):
    """Invalid input media (missing/unreadable video, too few frames, bad size)."""


class ModelError(AttentionFlowError):
    """Model folder missing, incomplete, or not available offline."""


class PromptError(AttentionFlowError):
    """A prompt or word problem (too long, word not in prompt, incompatible prompts)."""
