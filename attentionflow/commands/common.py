"""What every report-writing command does last: print the report, then write its ``--json`` file."""

from __future__ import annotations

import sys
from pathlib import Path


def print_and_save_report(text: str, json_path: Path | None, kind: str, overwrite: bool, payload: str,
                          quiet: bool = True) -> None:
    """Print ``text`` (the markdown report) to stdout and, when ``json_path`` is given, write ``payload`` there
    atomically after checking the target again (a file may have appeared while the work ran)."""
    from attentionflow.io.reports import check_report_target, write_report

    print(text)
    if json_path is None:
        return
    check_report_target(json_path, kind, overwrite)
    write_report(json_path, payload)
    if not quiet:
        print(f"wrote {json_path}", file=sys.stderr)
