"""Issue 28, section 1: no command deletes or overwrites a byte the tool did not write, whatever the flags.

Every scenario snapshots the hashes of the whole working folder before and after the run: a refused run changes
nothing at all. A run that may replace an earlier output changes only that output's own files.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from attentionflow.commands.cli import main
from attentionflow.io.outputs import foreign_entry, own_manifest, seal_output
from attentionflow.models.paths import embedded_model_path
from tests.safety import SRC, TGT, toy_work, tree_hashes


@pytest.fixture(scope="module")
def earlier_output(tmp_path_factory) -> Path:
    """A real output folder of `edit` (made once; each test copies it)."""
    base = toy_work(tmp_path_factory.mktemp("earlier"), 4)
    assert main(edit_args(base / "frames", base / "out")) == 0
    return base / "out"


@pytest.fixture()
def work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return toy_work(tmp_path, 4, "clips/clip.mp4")


def edit_args(video, out, *extra):
    return ["edit", str(video), "--source", SRC, "--target", TGT, "--model", "embedded", "--size", "64",
            "--steps", "2", "--frames", "4", "--device", "cpu", "--out", str(out), "--quiet", *extra]


def _foreign_tool_folder(work: Path, earlier: Path) -> list[str]:
    proj = work / "proj"
    (proj / "sub").mkdir(parents=True)
    (proj / "manifest.json").write_text('{"name": "my-extension", "version": "1.0"}')
    (proj / "background.js").write_text("chrome.runtime.onInstalled.addListener(() => {});")
    (proj / "sub" / "icon.svg").write_text("<svg/>")
    return edit_args(work / "frames", proj, "--overwrite")


def _copy_earlier(work: Path, earlier: Path) -> Path:
    out = work / "out"
    shutil.copytree(earlier, out)
    return out


def _earlier_output_with_user_files(work: Path, earlier: Path) -> list[str]:
    out = _copy_earlier(work, earlier)
    (out / "my_notes.txt").write_text("the blue one is better")
    (out / "comparison").mkdir()
    (out / "comparison" / "side_by_side.png").write_bytes(b"\x89PNG mine")
    return edit_args(work / "frames", out, "--overwrite")


def _earlier_output_with_a_changed_file(work: Path, earlier: Path) -> list[str]:
    out = _copy_earlier(work, earlier)
    video = next(out.glob("edit_01_*.mp4"))
    video.write_bytes(video.read_bytes() + b"trimmed by hand")
    return edit_args(work / "frames", out, "--overwrite")


def _earlier_output_with_an_empty_user_folder(work: Path, earlier: Path) -> list[str]:
    out = _copy_earlier(work, earlier)
    (out / "to_sort").mkdir()
    return edit_args(work / "frames", out, "--overwrite")


def _earlier_output_with_a_symlink(work: Path, earlier: Path) -> list[str]:
    out = _copy_earlier(work, earlier)
    (out / "clip.mp4").symlink_to(work / "clips" / "clip.mp4")
    return edit_args(work / "frames", out, "--overwrite")


def _model_folder_as_output(work: Path, earlier: Path) -> list[str]:
    model = work / "mymodel"
    shutil.copytree(embedded_model_path(), model)
    (model / "manifest.json").write_text('{"command": "edit"}')
    args = edit_args(work / "frames", model, "--overwrite")
    args[args.index("--model") + 1] = str(model)
    return args


def _model_folder_holding_a_sealed_output(work: Path, earlier: Path) -> list[str]:
    """Even a folder whose manifest is this tool's may not be replaced when it is the model."""
    args = _model_folder_as_output(work, earlier)
    seal_output(work / "mymodel", {"command": "edit"})
    return args


def _config_inside_output(work: Path, earlier: Path) -> list[str]:
    d = work / "d"
    d.mkdir()
    (d / "job.yaml").write_text(_job_yaml(work / "frames", "."))
    (d / "manifest.json").write_text('{"command": "edit"}')
    return ["edit", "--config", str(d / "job.yaml"), "--overwrite", "--quiet"]


def _config_inside_sealed_output(work: Path, earlier: Path) -> list[str]:
    args = _config_inside_output(work, earlier)
    seal_output(work / "d", {"command": "edit"})  # lists job.yaml: still the user's input
    return args


def _symlinked_video_inside_output(work: Path, earlier: Path) -> list[str]:
    d = work / "d"
    d.mkdir()
    (d / "link.mp4").symlink_to(work / "clips" / "clip.mp4")
    (d / "other.txt").write_text("mine")
    (d / "manifest.json").write_text('{"command": "edit"}')
    return edit_args(d / "link.mp4", d, "--overwrite")


def _boxes_inside_motion_output(work: Path, earlier: Path) -> list[str]:
    mo = work / "mo"
    mo.mkdir()
    (mo / "motion.mp4").write_bytes(b"an earlier motion video")
    seal_output(mo, {"command": "motion"})
    (mo / "boxes.json").write_text('{"0": [0.1, 0.1, 0.6, 0.6]}')
    return ["motion", str(work / "frames"), "--out", str(mo), "--overwrite", "--boxes", str(mo / "boxes.json"),
            "--size", "64", "--frames", "4", "-q"]


def _demo_folder(manifest: str):
    """A folder holding a hand-written manifest.json and the user's precious.txt."""
    def setup(work: Path, earlier: Path) -> list[str]:
        d = work / "d"
        d.mkdir()
        (d / "manifest.json").write_text(manifest)
        (d / "precious.txt").write_text("mine")
        return ["demo", "--out", str(d), "--steps", "2", "-q"]
    return setup


def _job_yaml(frames: Path, out: str) -> str:
    """A 4-frame, 2-step job on the embedded model writing to ``out``."""
    return (f"pretrained_model_path: embedded\noutput_dir: {out}\ninput_data:\n  video_path: {frames}\n"
            f"  prompt: {SRC}\n  width: 64\n  height: 64\n  n_sample_frames: 4\nvalidation_data:\n"
            f"  prompts: [{TGT}]\n  video_length: 4\n  width: 64\n  height: 64\n  num_inference_steps: 2\n"
            f"  num_inv_steps: 2\ndevice: cpu\n")


def _batch_job(work: Path, force: bool) -> list[str]:
    out = work / "job-out"
    out.mkdir()
    (out / "manifest.json").write_text('{"rows": 3}')
    (out / "data.csv").write_text("a,b\n1,2\n")
    (work / "jobs").mkdir()
    (work / "jobs" / "one.yaml").write_text(_job_yaml(work / "frames", str(out)))
    (work / "summary").mkdir()
    return ["batch", str(work / "jobs"), "--summary-dir", str(work / "summary"), "-q", *(["--force"] if force else [])]


# id -> (set-up returning argv, expected exit code, text the error must hold or None)
REFUSED = {
    "3-foreign-tool-manifest": (_foreign_tool_folder, 2, "not written by attentionflow"),
    "4-user-notes-in-earlier-output": (_earlier_output_with_user_files, 2, "comparison"),
    "4-user-changed-an-output-file": (_earlier_output_with_a_changed_file, 2, "edit_01_"),
    "4-user-empty-folder-in-earlier-output": (_earlier_output_with_an_empty_user_folder, 2, "to_sort"),
    "4-symlink-in-earlier-output": (_earlier_output_with_a_symlink, 2, "clip.mp4"),
    "5-model-folder-as-output": (_model_folder_as_output, 2, "overlap the input"),
    "5-model-folder-with-sealed-manifest": (_model_folder_holding_a_sealed_output, 2, "overlap the input"),
    "6-config-inside-output": (_config_inside_output, 2, "overlap the input"),
    "6-config-inside-sealed-output": (_config_inside_sealed_output, 2, "overlap the input"),
    "7-symlinked-video-inside-output": (_symlinked_video_inside_output, 2, "overlap the input"),
    "8-boxes-inside-motion-output": (_boxes_inside_motion_output, 2, "overlap the input"),
    "9-hand-written-demo-manifest": (_demo_folder('{"command": "demo"}'), 2, "not written by attentionflow"),
    "9-forged-demo-manifest": (_demo_folder('{"tool": "attentionflow", "command": "demo", "files": {}}'), 2,
                               "precious.txt"),  # names the tool but not precious.txt
    "10-batch-foreign-manifest": (lambda w, e: _batch_job(w, False), 1, None),
    "10-batch-foreign-manifest-force": (lambda w, e: _batch_job(w, True), 1, None),
}


@pytest.mark.parametrize("case", list(REFUSED), ids=list(REFUSED))
def test_nothing_the_tool_did_not_write_is_lost(case, work, earlier_output, capsys):
    setup, code, text = REFUSED[case]
    argv = setup(work, earlier_output)
    keep = {k: v for k, v in tree_hashes(work).items() if not k.startswith("summary/")}
    assert main(argv) == code
    err = capsys.readouterr().err
    after = {k: v for k, v in tree_hashes(work).items() if not k.startswith("summary/")}
    assert after == keep
    assert not [p.name for p in work.iterdir() if p.name.startswith(".")]  # no temporary folder left
    if text is not None:
        assert err.count("\n") == 1 and "Traceback" not in err and text in err, err


@pytest.mark.parametrize("force", [False, True], ids=["resume", "force"])
def test_batch_never_takes_a_foreign_folder_for_a_complete_job(force, work):
    """Issue 28 item 10: the job is not 'skipped (already complete)': it fails with a line saying why."""
    main(_batch_job(work, force))
    summary = json.loads((work / "summary" / "batch_summary.json").read_text())
    (job,) = summary["jobs"]
    assert job["status"] == "failed" and "attentionflow" in job["error"]


def test_overwrite_replaces_an_untouched_earlier_output(work, earlier_output):
    """The one case --overwrite is for: every file in the folder is the tool's own, unchanged."""
    out = _copy_earlier(work, earlier_output)
    before = own_manifest(out)
    assert main(edit_args(work / "frames", out, "--overwrite", "--seed", "7")) == 0
    after = own_manifest(out)
    assert after is not None and after["seed"] == 7 != before["seed"]
    assert foreign_entry(out) is None  # the new manifest lists every file, with its hash


@pytest.mark.parametrize("name", ["manifest.json", "config.yaml", "grid.gif"])
def test_the_manifest_lists_every_file_with_its_hash(earlier_output, name):
    import hashlib

    manifest = own_manifest(earlier_output)
    assert manifest is not None and manifest["tool"] == "attentionflow"
    listed = set(manifest["files"])
    on_disk = {p.relative_to(earlier_output).as_posix() for p in earlier_output.rglob("*") if p.is_file()}
    assert listed == on_disk - {"manifest.json"}
    if name != "manifest.json":
        assert manifest["files"][name]["sha256"] == hashlib.sha256((earlier_output / name).read_bytes()).hexdigest()


@pytest.mark.parametrize("existing", ["user-markdown", "user-json", "earlier-summary"])
def test_batch_summary_never_replaces_a_user_file(existing, work):
    """Issue 28 item 11: batch_summary.md/.json of the user's are left alone (one line, exit 2, no job run); an
    earlier batch's own summary is replaced."""
    argv = _batch_job(work, False)
    summary = work / "summary"
    if existing == "earlier-summary":
        assert main(argv) == 1
        (summary / "batch_summary.json").write_text(
            (summary / "batch_summary.json").read_text().replace('"world_size": 1', '"world_size": 9'))
        assert main(argv) == 1  # not 2: the earlier summary is the batch's own
        assert json.loads((summary / "batch_summary.json").read_text())["world_size"] == 1
        return
    name = "batch_summary.md" if existing == "user-markdown" else "batch_summary.json"
    (summary / name).write_text("# my own summary of the week\n" if name.endswith(".md") else '{"week": 49}')
    before = tree_hashes(work)
    assert main(argv) == 2
    assert tree_hashes(work) == before
