"""Data-safety helpers for tests: a folder's content as hashes, to assert that not a byte changed."""

from __future__ import annotations

import hashlib
from pathlib import Path


def tree_hashes(folder: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``folder``."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}
