"""Single-file reports (``--json``): written atomically, and never over a file this tool did not write.

A report carries its own mark: the JSON key ``"report"`` names the command that wrote it (a markdown report: its
own first line). An existing file is
replaced only when it carries the same mark and the user said ``--overwrite``; anything else (a video, a user's
notes, another command's report, a symlink) is refused with one line, before any work is done.
"""

from __future__ import annotations

import json
from pathlib import Path

from attentionflow.errors import ConfigError
from attentionflow.io.outputs import atomic_file, small_text

__all__ = ["check_report_target", "write_report"]


def _is_ours(path: Path, kind: str, header: str | None) -> bool:
    text = small_text(path)
    if text is None:
        return False
    if header is not None:
        return text.startswith(header)
    try:
        data = json.loads(text)
    except ValueError:
        return False
    return isinstance(data, dict) and data.get("report") == kind


def check_report_target(path: str | Path, kind: str, overwrite: bool, flag: str = "--json",
                        header: str | None = None) -> Path:
    """Raise a one-line :class:`ConfigError` unless a report of ``kind`` may be written to ``path``: a new file in an
    existing folder, or (with ``overwrite``) an earlier report of the same ``kind`` (a JSON report by its ``report``
    key; a text report, ``header`` given, by its first characters). Returns the path."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{flag} {path} is a folder; give a file name such as report.json")
    if path.exists() or path.is_symlink():
        if not _is_ours(path, kind, header):
            raise ConfigError(f"{flag} {path} exists and is not a report of '{kind}'; it is left alone, give "
                              "another file name")
        if not overwrite:
            raise ConfigError(f"{flag} {path} exists (an earlier report); add --overwrite to replace it")
    if not path.parent.is_dir():
        raise ConfigError(f"{flag} {path}: folder {path.parent} does not exist")
    return path


def write_report(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (:func:`attentionflow.io.outputs.atomic_file`)."""
    with atomic_file(Path(path)) as tmp:
        tmp.write_text(text, encoding="utf-8")
