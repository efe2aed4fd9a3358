"""Bad input fails early and cleanly; the tool never deletes what it did not write.

Every case of the first-contact issue is its own test id: exit code 2, one line on stderr that names the
value, no output folder, and nothing outside the tool's own outputs touched. The cases use the embedded
model at 64x64 with 3 steps, as a new user would, and all of them fail before the model is loaded.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from attentionflow.commands.cli import main
from attentionflow.errors import InputError
from attentionflow.io.outputs import OLD_MARKER, TMP_MARKER, atomic_output_dir, remove_stale_siblings, seal_output
from attentionflow.io.writers import write_frames, write_mp4
from attentionflow.models.paths import embedded_model_path
from tests.safety import tree_hashes

SRC = "a red circle is moving on the road"
TGT = "a blue circle is moving on the road"


@pytest.fixture(scope="module")
def toy_frames():
    from attentionflow.toyworld.world import make_video

    return make_video(SRC, frames=8, size=64, seed=0).frames


@pytest.fixture()
def work(tmp_path, toy_frames, monkeypatch):
    """A fresh working folder holding a frame folder, an mp4 beside a notes file, and a file named like a video."""
    monkeypatch.chdir(tmp_path)
    write_frames(toy_frames, tmp_path / "frames")
    (tmp_path / "clips").mkdir()
    write_mp4(toy_frames, tmp_path / "clips" / "clip.mp4")
    (tmp_path / "clips" / "notes.txt").write_text("mine")
    (tmp_path / "zero.mp4").write_bytes(b"")
    return tmp_path


def edit_args(video, out, *extra):
    return ["edit", str(video), "--source", SRC, "--target", TGT, "--model", "embedded", "--size", "64",
            "--steps", "3", "--frames", "8", "--motion-word", "moving", "--device", "cpu", "--out", str(out),
            "--quiet", *extra]


def _write(path: Path, data: bytes | str) -> Path:
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def _broken_vocab_model(work: Path) -> Path:
    folder = work / "model"
    shutil.copytree(embedded_model_path(), folder)
    (folder / "tokenizer" / "vocab.json").write_text('{"a": 1,,}')
    return folder


def _yaml(work: Path, body: str, name: str = "c.yaml") -> Path:
    return _write(work / name, body)


BASE_YAML = (f"pretrained_model_path: embedded\noutput_dir: out\ninput_data:\n  video_path: frames\n"
             f"  prompt: {SRC}\n  width: 64\n  height: 64\nvalidation_data:\n  prompts: [{TGT}]\n  width: 64\n"
             f"  height: 64\n  num_inference_steps: 3\n  num_inv_steps: 3\n")

# id -> (argv builder taking the working folder, text the one-line error must contain)
CASES = {
    "fps-zero": (lambda w: edit_args(w / "frames", w / "out", "--fps", "0"), "fps"),
    "fps-nan": (lambda w: edit_args(w / "frames", w / "out", "--fps", "nan"), "fps must be a finite number"),
    "mmi-strength-nan": (lambda w: edit_args(w / "frames", w / "out", "--mmi-strength", "nan"), "mmi.strength"),
    "guidance-nan": (lambda w: edit_args(w / "frames", w / "out", "--guidance", "nan"), "guidance_scale"),
    "guidance-inf": (lambda w: edit_args(w / "frames", w / "out", "--guidance", "inf"), "guidance_scale"),
    "reweight-nan": (lambda w: edit_args(w / "frames", w / "out", "--reweight", "blue=nan"), "p2p.reweight.blue"),
    "out-under-a-file": (lambda w: edit_args(w / "frames", w / "zero.mp4" / "sub"), "which is a file"),
    "out-dangling-symlink": (lambda w: (os.symlink(w / "gone", w / "link"), edit_args(w / "frames", w / "link"))[1],
                             "does not exist"),
    "out-read-only-location": (lambda w: edit_args(w / "frames", "/proc/attentionflow-out"),
                               "cannot create output folder"),
    "out-dot-in-working-folder": (lambda w: edit_args(w / "frames", "."), "current folder"),
    "out-not-utf8": (lambda w: edit_args(w / "frames", os.fsdecode(b"out-\xff")), "UTF-8"),
    "size-huge": (lambda w: edit_args(w / "frames", w / "out", "--size", "100000"), "GiB"),
    "frames-and-size-too-big-for-memory": (lambda w: edit_args(w / "frames", w / "out", "--frames", "2000",
                                                               "--size", "1024"), "GiB"),
    "size-8": (lambda w: edit_args(w / "frames", w / "out", "--size", "8"), "at least 16"),
    "steps-beyond-training-timesteps": (lambda w: edit_args(w / "frames", w / "out", "--steps", "100000"),
                                        "at most 1000"),
    "seed-2-pow-70": (lambda w: edit_args(w / "frames", w / "out", "--seed", str(2**70)), "seed"),
    "yaml-not-utf8": (lambda w: ["edit", "--config", str(_write(w / "c.yaml", b"seed: \xff\n"))], "UTF-8"),
    "yaml-duplicate-key": (lambda w: ["edit", "--config", str(_yaml(w, BASE_YAML + "seed: 1\nseed: 2\n"))],
                           "'seed' is given twice"),
    "yaml-tab": (lambda w: ["edit", "--config", str(_yaml(w, "input_data:\n\tprompt: x\n"))], "tab character"),
    "yaml-nan": (lambda w: ["edit", "--config", str(_yaml(w, BASE_YAML + "fps: .nan\n"))], "finite"),
    "tokenizer-vocab-invalid-json": (lambda w: edit_args(w / "frames", w / "out", "--model",
                                                         str(_broken_vocab_model(w))), "vocab.json"),
    "overwrite-input-frames-folder": (lambda w: edit_args(w / "frames", w / "frames", "--overwrite"), "overlap"),
    "overwrite-folder-holding-input-video": (lambda w: edit_args(w / "clips" / "clip.mp4", w / "clips",
                                                                 "--overwrite"), "overlap"),
    "symlinked-out-to-input-folder": (lambda w: (os.symlink(w / "clips", w / "results"),
                                                 edit_args(w / "clips" / "clip.mp4", w / "results",
                                                           "--overwrite"))[1], "overlap"),
    "overwrite-folder-not-written-by-tool": (lambda w: ((w / "mine").mkdir(), (w / "mine" / "a.txt").write_text("x"),
                                                        edit_args(w / "frames", w / "mine", "--overwrite"))[2],
                                             "not written by attentionflow"),
    "batch-summary-dir-is-a-file": (lambda w: ["batch", str(_yaml(w, BASE_YAML)), "--summary-dir",
                                               str(w / "zero.mp4")], "--summary-dir"),
    "app-port-negative": (lambda w: ["app", "--port", "-1"], "--port"),
    "app-port-too-large": (lambda w: ["app", "--port", "99999"], "--port"),
    "app-max-upload-nan": (lambda w: ["app", "--max-upload-mb", "nan"], "--max-upload-mb"),
    "app-public-host-without-auth": (lambda w: ["app", "--host", "0.0.0.0"], "--auth"),
    "app-auth-malformed": (lambda w: ["app", "--auth", "nopassword"], "USER:PASS"),
    "toyworld-speed-nan": (lambda w: ["toyworld", "video", "--speed", "nan", "--out", str(w / "t.mp4")], "speed"),
    "toyworld-too-big-for-memory": (lambda w: ["toyworld", "video", "--frames", "100000", "--size", "512", "--out",
                                               str(w / "t.mp4")], "GiB"),
    "toyworld-out-existing-folder-ending-mp4": (lambda w: ((w / "dir.mp4").mkdir(), ["toyworld", "video", "--out",
                                                           str(w / "dir.mp4")])[1], "existing folder"),
    "unknown-flag": (lambda w: edit_args(w / "frames", w / "out", "--no-such-flag"), "--no-such-flag"),
    "size-not-multiple-of-8-names-the-flag": (lambda w: edit_args(w / "frames", w / "out", "--size", "100"),
                                              "--size (input_data.width) must be a positive multiple of 8"),
    "guidance-below-1-names-the-flag": (lambda w: edit_args(w / "frames", w / "out", "--guidance", "0.5"),
                                        "--guidance (validation_data.guidance_scale) must be >= 1"),
    "mmi-strength-negative-names-the-flag": (lambda w: edit_args(w / "frames", w / "out", "--mmi-strength", "-1"),
                                             "--mmi-strength (mmi.strength)"),
    "fp16-on-a-cpu": (lambda w: edit_args(w / "frames", w / "out", "--mixed-precision", "fp16", "--device", "cpu"),
                      "--mixed-precision no"),
    "inversion-unknown-flag": (lambda w: edit_args(w / "frames", w / "out", "--inversion", "nulltext"),
                               "'direct', 'negative-prompt', 'null-text', 'ddim'"),
    "inversion-unknown-yaml": (lambda w: ["edit", "--config", str(_yaml(w, BASE_YAML + "  inversion: pnp\n"))],
                               "'direct', 'negative-prompt', 'null-text', 'ddim'"),
    "inversion-conflicts-with-use-null-inv": (
        lambda w: ["edit", "--config", str(_yaml(w, BASE_YAML + "  inversion: direct\n  use_null_inv: true\n"))],
        "use_null_inv"),
    "inversion-and-no-null-text": (lambda w: edit_args(w / "frames", w / "out", "--inversion", "direct",
                                                       "--no-null-text"), "--no-null-text"),
    "chunk-frames-zero": (lambda w: edit_args(w / "frames", w / "out", "--chunk-frames", "0"),
                          "--chunk-frames (chunk_frames) must be auto or a whole number of frames >= 1, got 0"),
    "chunk-frames-negative": (lambda w: edit_args(w / "frames", w / "out", "--chunk-frames", "-3"),
                              "got -3"),
    "chunk-frames-not-a-number": (lambda w: edit_args(w / "frames", w / "out", "--chunk-frames", "eight"),
                                  "--chunk-frames (chunk_frames) must be auto or a whole number of frames >= 1, "
                                  "got 'eight'"),
    "chunk-frames-fraction": (lambda w: edit_args(w / "frames", w / "out", "--chunk-frames", "2.5"), "got '2.5'"),
    "chunk-frames-yaml-fraction": (lambda w: ["edit", "--config", str(_yaml(w, BASE_YAML + "chunk_frames: 2.5\n"))],
                                   "chunk_frames"),
    "chunk-frames-yaml-bool": (lambda w: ["edit", "--config", str(_yaml(w, BASE_YAML + "chunk_frames: true\n"))],
                               "chunk_frames"),
}


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else b"<dir>")
            for p in sorted(folder.rglob("*")) if not p.is_symlink()}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_and_touches_nothing(case, work, capsys):
    build, needle = CASES[case]
    argv = build(work)
    before = _snapshot(work)
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse usage errors exit through OneLineParser.error
        code = exc.code
    err = capsys.readouterr().err.strip()
    assert code == 2, f"exit {code}, stderr {err!r}"
    assert err.startswith("attentionflow: error:") and "\n" not in err, err
    assert "Traceback" not in err
    assert needle in err, f"{needle!r} not in {err!r}"
    assert _snapshot(work) == before, "the working folder changed"
    assert (work / "clips" / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("extra,loaded", [
    (("--fps", "nan"), "[]"),  # a config value: nothing of the model stack
    (("--motion-word", "flying"), "['transformers']"),  # a word: the tokenizer only
])
def test_bad_input_fails_before_torch_is_imported(work, extra, loaded):
    """A bad input costs the checks only: torch and diffusers are never imported (prompt checks need the tokenizer)."""
    code = ("import sys; from attentionflow.commands.cli import main; "
            f"rc = main({edit_args(work / 'frames', work / 'out', *extra)!r}); "
            "print(rc, sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=work)
    assert proc.stdout.strip() == f"2 {loaded}", proc.stdout + proc.stderr


def test_overwrite_replaces_only_its_own_output_and_keeps_the_input(work):
    """A second run with --overwrite replaces the first run's folder (it has manifest.json); the input stays."""
    out = work / "out"
    assert main(edit_args(work / "frames", out, "--no-mmi", "--no-null-text")) == 0
    first = json.loads((out / "manifest.json").read_text())["created"]
    frames_before = _snapshot(work / "frames")
    time.sleep(1.1)  # 'created' has one-second resolution
    assert main(edit_args(work / "frames", out, "--no-mmi", "--no-null-text", "--overwrite")) == 0
    assert json.loads((out / "manifest.json").read_text())["created"] != first
    assert _snapshot(work / "frames") == frames_before
    assert not [p for p in work.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def test_out_symlink_to_empty_folder_is_kept_and_filled(work):
    target = work / "real"
    target.mkdir()
    link = work / "link"
    os.symlink(target, link)
    assert main(edit_args(work / "frames", link, "--no-mmi", "--no-null-text")) == 0
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert (target / "manifest.json").is_file() and (link / "grid.gif").is_file()
    assert not [p for p in work.iterdir() if ".tmp-" in p.name or ".old-" in p.name], list(work.iterdir())


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temporary_folders_of_dead_runs_are_removed(tmp_path):
    dead = _dead_pid()
    out = tmp_path / "out"
    stale = [tmp_path / f".out.tmp-{dead}", tmp_path / f".out.old-{dead}"]
    live = tmp_path / ".out.tmp-1"  # PID 1 is always alive: a run still in progress
    other = tmp_path / f".other.tmp-{dead}"  # belongs to another output folder
    mine = tmp_path / ".out.tmp-notapid"  # not a name this tool writes
    for folder in (*stale, live, other, mine):
        folder.mkdir()
        (folder / "f.txt").write_text("x")
    (stale[0] / TMP_MARKER).touch()  # the tool's own marks
    (stale[1] / OLD_MARKER).touch()
    (out / "x").mkdir(parents=True)  # a complete new output exists: the previous one is not needed
    seal_output(out / "x", {})
    assert sorted(remove_stale_siblings(out)) == sorted(stale)
    assert not any(p.exists() for p in stale)
    assert live.exists() and other.exists() and mine.exists()
    assert remove_stale_siblings(out) == []  # nothing left to remove


@pytest.mark.parametrize("kind", ["tmp", "old"])
def test_user_folders_named_like_temporary_ones_are_never_deleted(tmp_path, kind):
    """Issue 28, item 12: `.out.tmp-4000000` / `.out.old-4000001` without the tool's marker belong to the user."""
    folder = tmp_path / f".out.{kind}-{_dead_pid()}"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "precious.txt").write_text("mine")
    before = tree_hashes(tmp_path)
    with atomic_output_dir(tmp_path / "out") as tmp:
        seal_output(tmp, {})
    after = tree_hashes(tmp_path)
    assert {k: v for k, v in after.items() if not k.startswith("out/")} == before


def test_a_run_killed_between_the_two_renames_gets_its_previous_output_back(tmp_path):
    """Issue 28, item 13: the previous output was moved aside (`.out.old-PID`, marked) and the run died before the new
    one took its place: the next run puts the previous output back before anything else (and, without --overwrite,
    then refuses to replace it)."""
    dead = _dead_pid()
    old = tmp_path / f".out.old-{dead}"
    old.mkdir()
    (old / "manifest.json").write_text('{"command": "edit"}')
    (old / "result.mp4").write_bytes(b"earlier result")
    (old / OLD_MARKER).touch()
    unfinished = tmp_path / f".out.tmp-{dead}"
    unfinished.mkdir()
    (unfinished / TMP_MARKER).touch()
    with pytest.raises(InputError):
        with atomic_output_dir(tmp_path / "out"):
            pass
    assert (tmp_path / "out" / "result.mp4").read_bytes() == b"earlier result"
    assert not (tmp_path / "out" / OLD_MARKER).exists() and not old.exists() and not unfinished.exists()


def test_sigterm_removes_the_unfinished_output_and_exits_143(work):
    """What `timeout` and schedulers send: one line, exit 143, no temporary folder, no output folder."""
    out = work / "out"
    cmd = [sys.executable, "-m", "attentionflow", *edit_args(work / "frames", out, "--steps", "50")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while not list(work.glob(".out.tmp-*")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(work.glob(".out.tmp-*")), "the temporary output folder never appeared"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert err.strip().splitlines() == ["attentionflow: terminated (SIGTERM); unfinished outputs were removed"]
    assert not out.exists() and not list(work.glob(".out.*"))


def test_seed_is_recorded_and_documented_as_without_effect(work, tmp_path):
    """DDIM (eta 0), the VAE posterior mean and null-text are deterministic: seeds 1 and 2 give the same edit,
    and both the help and the manifest say so."""
    outs = []
    for seed in (1, 2):
        out = work / f"seed{seed}"
        assert main(edit_args(work / "frames", out, "--seed", str(seed), "--no-null-text")) == 0
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["seed"] == seed and "does not change the result" in manifest["seed_note"]
        outs.append(np.stack([np.asarray(__import__("PIL.Image").Image.open(p)) for p in
                              sorted((out / "frames" / "edit_01_a-blue-circle-is-moving-on-the-road").glob("*.png"))]))
    assert np.array_equal(outs[0], outs[1])
    from attentionflow.commands.cli import build_parser

    help_text = build_parser()._subparsers._group_actions[0].choices["edit"].format_help()
    assert "deterministic" in " ".join(help_text.split())


def test_identical_target_prompts_get_their_own_outputs(work):
    out = work / "twice"
    assert main(edit_args(work / "frames", out, "--target", TGT, "--no-null-text")) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    names = [e["outputs"] for e in manifest["edits"]]
    assert names == ["edit_01_a-blue-circle-is-moving-on-the-road", "edit_02_a-blue-circle-is-moving-on-the-road"]
    for name in names:
        assert (out / f"{name}.mp4").is_file() and (out / "attention" / f"{name}.png").is_file()


def test_demo_never_deletes_files_in_its_input_folder(work, capsys):
    """The demo writes its clip to OUT_input; a folder of that name holding anything else is left alone."""
    mine = work / "demo_input"
    mine.mkdir()
    (mine / "holiday_0001.png").write_bytes(b"my photo")
    assert main(["demo", "--out", str(work / "demo"), "--steps", "2", "--quiet"]) == 2
    assert "demo_input" in capsys.readouterr().err
    assert (mine / "holiday_0001.png").read_bytes() == b"my photo" and not (work / "demo").exists()


@pytest.mark.parametrize("extra, mmi_line", [
    (("--motion-word", "moving"), "MMI: motion word(s) 'moving' (fusion + swap)"),
    ((), "MMI: no motion word, fusion only (name one with --motion-word WORD, or --motion-word auto)"),
    (("--motion-word", "auto", "--steps", "4"), "MMI: auto chose '"),
    (("--motion-word", "auto"), "MMI: auto mode chose no word (it decides after mmi.auto_steps steps"),  # 2 < 3
])
def test_edit_says_what_it_did(work, capsys, extra, mmi_line):
    """Without --quiet an edit reports the reconstruction PSNR with a reading, the motion words MMI used, and that
    the embedded toy model knows only the toy world at the size it was trained at (64x64)."""
    argv = ["edit", str(work / "frames"), "--source", SRC, "--target", TGT, "--model", "embedded", "--size", "64",
            "--steps", "2", "--frames", "4", "--device", "cpu", "--out", str(work / "out"), *extra]
    assert main(argv) == 0  # (a repeated flag: the last one counts)
    lines = capsys.readouterr().err.splitlines()
    recon = [x for x in lines if x.startswith("reconstruction PSNR ")]
    assert len(recon) == 1 and "(direct inversion)" in recon[0]
    assert any(x.startswith(mmi_line) for x in lines), lines
    assert sum("embedded toy model knows only the toy world" in x and "trained at 64x64" in x for x in lines) == 1


@pytest.mark.parametrize("db, method, reading", [
    (None, "direct", "reconstruction PSNR exact"),
    (36.2, "direct", "36.2 dB, good"),
    (26.6, "null-text", "26.6 dB, fair"),
    (14.7, "direct", "the model's VAE cannot reproduce this video"),
    (11.0, "null-text", "see --inversion direct"),
])
def test_reconstruction_reading(db, method, reading):
    from attentionflow.jobs import JobResult

    out = SimpleNamespace(inversion_method=method, edit_region="all", region=None, motion_words=[], motion_ranking=[])
    plan = SimpleNamespace(mmi=SimpleNamespace(enabled=False), candidates=None)
    notes = JobResult(output_dir=Path("x"), plan=plan, output=out, edit_names=[], reconstruction_psnr_db=db,  # type: ignore[arg-type]
                      timings={}, device="cpu", embedded=False).notes()
    assert notes[0].startswith("reconstruction PSNR") and reading in notes[0] and len(notes) == 1


@pytest.mark.parametrize("command", ["edit", "demo", "app", "batch"])
@pytest.mark.parametrize("value", ["0", "-2", "two"])
def test_threads_must_be_a_positive_whole_number(command, value, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--threads", value])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and "--threads" in err and "\n" not in err


def test_threads_reach_torch_and_the_manifest(work, monkeypatch):
    import torch

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        assert main(edit_args(work / "frames", work / "out", "--threads", "2", "--no-mmi")) == 0
        import json

        assert json.loads((work / "out" / "manifest.json").read_text())["threads"] == 2
        assert os.environ["OMP_NUM_THREADS"] == "2"
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize(("flag", "setting", "used"), [((), "auto", 8), (("--chunk-frames", "3"), 3, 3),
                                                     (("--chunk-frames", "20"), 20, 8)])
def test_the_manifest_records_the_chunk_setting_and_the_size_used(work, flag, setting, used):
    import json

    assert main(edit_args(work / "frames", work / "out", "--no-mmi", *flag)) == 0
    manifest = json.loads((work / "out" / "manifest.json").read_text())
    assert manifest["chunk_frames"] == {"setting": setting, "used": used}
    assert manifest["config"]["chunk_frames"] == setting


@pytest.mark.parametrize(
    "command, extra, needles",
    [
        (
            "edit",
            ("--frames", "20"),
            ("--frames/n_sample_frames", "--stride/sample_frame_rate", "--start/sample_start_idx"),
        ),
        ("edit", ("--start", "30", "--frames", "1", "--no-mmi"), ("--start/sample_start_idx=30",)),
        ("motion", ("--frames", "20", "--size", "64"), ("lower --frames, --stride or --start",)),
    ],
)
def test_too_few_frames_names_the_flags(work, capsys, command, extra, needles):
    if command == "edit":
        argv = edit_args(work / "frames", work / "out", *extra)
    else:
        argv = ["motion", str(work / "frames"), "--out", str(work / "out"), "-q", *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert all(n in err for n in needles), err
    assert "lower n_frames" not in err
