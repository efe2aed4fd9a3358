"""`attentionflow demo` runs end to end on the embedded model (fewer steps than the README run)."""

from __future__ import annotations

import json

from attentionflow.cli import DEMO_TARGETS, main
from attentionflow.io.video import read_frames


def test_demo_end_to_end_and_rerun(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--steps", "2", "--quiet"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["command"] == "demo" and manifest["model"]["embedded"] is True
    assert [e["prompt"] for e in manifest["edits"]] == list(DEMO_TARGETS)
    assert manifest["mmi"]["enabled"] and manifest["mmi"]["motion_words"] == ["moving"]
    grid = read_frames(out / "grid.gif")
    assert grid.shape[0] == 8 and grid.shape[2] >= 4 * 64
    assert len(list((out / "frames" / "input").glob("*.png"))) == 8
    # A second run replaces the previous demo output without --overwrite ...
    assert main(["demo", "--out", str(out), "--steps", "2", "--quiet"]) == 0
    # ... but a folder holding something else is refused.
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep")
    assert main(["demo", "--out", str(other), "--steps", "2", "--quiet"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (other / "notes.txt").read_text() == "keep"
