"""Issue 28, sections 2-4: hostile or odd input gets one line and exit 2, never a traceback, a hang or a flood.

Each case is its own test id. In-process cases run ``attentionflow.commands.cli.main`` and check the one line, the exit
code and that the working folder did not change; the few that need a real process (a FIFO that would block, a
signal) run one. The seconds each check takes are measured by ``benchmarks/hostile_inputs.py``, not here.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from attentionflow.commands.cli import main
from attentionflow.models.paths import embedded_model_path
from tests.safety import SRC, TGT, toy_work, tree_hashes


@pytest.fixture()
def work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return toy_work(tmp_path, 4)


def edit(video, *extra, out="out"):
    return ["edit", str(video), "--source", SRC, "--target", TGT, "--model", "embedded", "--size", "64",
            "--steps", "2", "--frames", "4", "--device", "cpu", "--out", str(out), "--quiet", *extra]


def _png_claiming(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


def _huge_frames(w: Path, width: int = 100000, height: int = 100000) -> Path:
    folder = w / "huge"
    folder.mkdir()
    for i in range(4):
        (folder / f"f{i}.png").write_bytes(_png_claiming(width, height))
    return folder


def _yaml(w: Path, text: str, name: str = "c.yaml") -> str:
    (w / name).write_text(text)
    return str(w / name)


def _model(w: Path, edit_fn) -> str:
    """A copy of the embedded model with one file changed by ``edit_fn(folder)``."""
    folder = w / "model"
    shutil.copytree(embedded_model_path(), folder)
    edit_fn(folder)
    return str(folder)


def _set_json(rel: str, **changes):
    def apply(folder: Path) -> None:
        data = json.loads((folder / rel).read_text())
        data.update(changes)
        (folder / rel).write_text(json.dumps(data))
    return apply


def _write(rel: str, data: bytes):
    return lambda folder: (folder / rel).write_bytes(data)


def _truncate(rel: str):
    def apply(folder: Path) -> None:
        path = next((folder / rel).glob("*.safetensors"))
        path.write_bytes(path.read_bytes()[:-100])
    return apply


def _swap_weights(src: str, dst: str):
    def apply(folder: Path) -> None:
        target = next((folder / dst).glob("*.safetensors"))
        target.write_bytes(next((folder / src).glob("*.safetensors")).read_bytes())
    return apply


def _fifo_weights(folder: Path) -> None:
    path = next((folder / "vae").glob("*.safetensors"))
    path.unlink()
    os.mkfifo(path)


ALIAS_TREE = ("a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
              "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n")

#: a minimal job (``validation_data`` last, so that a test can add keys to it)
JOB = f"input_data:\n  video_path: clip.mp4\n  prompt: {SRC}\nvalidation_data:\n  prompts: [{TGT}]\n"


def _loop(w: Path) -> str:
    """Two symlinks pointing at each other; returns one of them."""
    os.symlink("l2.mp4", w / "l1.mp4")
    os.symlink("l1.mp4", w / "l2.mp4")
    return str(w / "l1.mp4")


#: seven levels of ten-fold sharing under one key: 10**7 numbers when expanded, 400 bytes as text
ALIAS_SEED = "[&a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1], " + ", ".join(
    f"&{b} [" + ", ".join([f"*{a}"] * 10) + "]" for a, b in zip("abcdef", "bcdefg")) + "]"

# id -> (argv builder taking the working folder, text the one line must hold)
CASES = {
    # section 2: tracebacks, hangs and floods
    "symlink-loop-video-edit": (lambda w: edit(_loop(w)), "loop of symlinks"),
    "symlink-loop-video-motion": (lambda w: ["motion", _loop(w), "--out", "o", "-q"], "loop of symlinks"),
    "yaml-alias-tree-under-a-typed-key": (lambda w: ["edit", "--config", _yaml(w, "seed: " + ALIAS_SEED + "\n")],
                                          "config key 'seed' must be int, got [[1, 1, 1"),
    "yaml-alias-tree-echo-is-bounded": (lambda w: ["edit", "--config", _yaml(w, "x:\n" + "".join(
        "  " + line + "\n" for line in ALIAS_TREE.splitlines()) + "seed: *d\n")], "unknown config key 'x'"),
    "yaml-20000-brackets": (lambda w: ["edit", "--config", _yaml(w, "seed: " + "[" * 20000 + "]" * 20000 + "\n")],
                            "nests deeper than"),
    "yaml-unhashable-key": (lambda w: ["edit", "--config", _yaml(w, "? [1, 2]\n: 3\n")], "keys are plain names"),
    "yaml-too-many-aliases": (lambda w: ["edit", "--config", _yaml(w, "a: &a 1\nb: [" + ", ".join(["*a"] * 1500)
                                                                   + "]\n")], "aliases"),
    "png-header-100000-squared-edit": (lambda w: edit(_huge_frames(w)), "scale it down"),
    "png-header-100000-squared-motion": (lambda w: ["motion", str(_huge_frames(w)), "--out", "o", "-q"],
                                         "scale it down"),
    "png-header-100000-squared-evaluate": (lambda w: ["evaluate", str(_huge_frames(w)), str(w / "huge")],
                                           "scale it down"),
    "png-header-9000-squared": (lambda w: edit(_huge_frames(w, 9000, 9000)), "9000x9000"),
    "out-name-too-long": (lambda w: edit(w / "clip.mp4", out="x" * 300), "File name too long"),
    "video-name-too-long": (lambda w: edit("x" * 300 + ".mp4"), "File name too long"),
    "model-name-too-long": (lambda w: edit(w / "clip.mp4", "--model", "m" * 300), "File name too long"),
    "config-name-too-long": (lambda w: ["edit", "--config", "c" * 300 + ".yaml"], "File name too long"),
    "model-down-block-types-3": (lambda w: edit(w / "clip.mp4", "--model", _model(
        w, _set_json("unet/config.json", down_block_types=3))), "down_block_types must be a list"),
    "model-block-out-channels-x": (lambda w: edit(w / "clip.mp4", "--model", _model(
        w, _set_json("unet/config.json", block_out_channels=["x"]))), "block_out_channels"),
    "model-timesteps-abc": (lambda w: edit(w / "clip.mp4", "--model", _model(
        w, _set_json("scheduler/scheduler_config.json", num_train_timesteps="abc"))), "num_train_timesteps"),
    "model-timesteps-null": (lambda w: edit(w / "clip.mp4", "--model", _model(
        w, _set_json("scheduler/scheduler_config.json", num_train_timesteps=None))), "num_train_timesteps"),
    "model-garbage-merges": (lambda w: edit(w / "clip.mp4", "--model", _model(
        w, _write("tokenizer/merges.txt", b"#version: 0.2\n\xff\xfe garbage\n"))), "tokenizer"),
    "model-text-encoder-weights-in-vae": (lambda w: edit(w / "clip.mp4", "--model", _model(
        w, _swap_weights("text_encoder", "vae"))), "not a vae's weights"),
    "device-meta": (lambda w: edit(w / "clip.mp4", "--device", "meta"), "--device 'meta'"),
    "device-xpu": (lambda w: edit(w / "clip.mp4", "--device", "xpu"), "--device 'xpu'"),
    "device-mps-off-apple": (lambda w: edit(w / "clip.mp4", "--device", "mps"), "MPS"),
    "fps-1e-9": (lambda w: edit(w / "clip.mp4", "--fps", "1e-9"), "fps must be from"),
    "yaml-fps-1e12": (lambda w: ["edit", "--config", _yaml(w, "fps: 1.0e12\n" + JOB)], "fps must be from"),
    "reweight-1e308": (lambda w: edit(w / "clip.mp4", "--reweight", "road=1e308"), "--reweight (p2p.reweight) factor"),
    "null-base-lr-negative": (lambda w: ["edit", "--config", _yaml(w, JOB + "  null_base_lr: -5\n")],
                              "null_base_lr"),
    "250-targets": (lambda w: ["edit", str(w / "clip.mp4"), "--source", SRC, *["--target", TGT] * 250, "--out", "o",
                               "-q"], "at most 16"),
    "toyworld-masks-is-a-file": (lambda w: ["toyworld", "video", "--frames", "4", "--out", "t.mp4", "--masks",
                                            str(w / "clip.mp4")], "--masks"),
    "bench-quality-threads-negative": (lambda w: ["bench", "quality", "--threads", "-1", "--out", "b"], "--threads"),
    "app-host-127.0.0.2-is-loopback": (lambda w: ["app", "--host", "127.0.0.2", "--port", "0"], "--port"),
    "app-port-in-use": (lambda w: ["app", "--port", str(_busy_port())], "choose another --port"),
    # section 3: late failures, now early
    "device-cuda-without-cuda": (lambda w: edit(w / "clip.mp4", "--device", "cuda"), "CUDA is not available"),
    "device-cuda-99": (lambda w: edit(w / "clip.mp4", "--device", "cuda:99"), "cuda:99"),
    "device-foo": (lambda w: edit(w / "clip.mp4", "--device", "foo"), "--device 'foo'"),
    "fp16-on-cpu": (lambda w: edit(w / "clip.mp4", "--mixed-precision", "fp16"), "fp16"),
    "model-empty-safetensors": (lambda w: edit(w / "clip.mp4", "--model", _model(
        w, _write("unet/diffusion_pytorch_model.safetensors", b""))), "not a safetensors file"),
    "model-truncated-safetensors": (lambda w: edit(w / "clip.mp4", "--model", _model(w, _truncate("unet"))),
                                    "truncated or corrupt"),
    "model-corrupt-safetensors-header": (lambda w: edit(w / "clip.mp4", "--model", _model(
        w, _write("vae/diffusion_pytorch_model.safetensors", struct.pack("<Q", 20) + b"{not json at all}!!" + b"\0"
                  * 64))), "safetensors header"),
    "model-invalid-config-json": (lambda w: edit(w / "clip.mp4", "--model", _model(
        w, _write("unet/config.json", b"{\"in_channels\": 4,,}"))), "not valid JSON"),
    "model-config-disagrees-with-weights": (lambda w: edit(w / "clip.mp4", "--model", _model(
        w, _set_json("unet/config.json", block_out_channels=[48, 64]))), "disagree"),
    "model-missing-scheduler-config": (lambda w: edit(w / "clip.mp4", "--model", _model(
        w, lambda f: (f / "scheduler" / "scheduler_config.json").unlink())), "scheduler_config.json"),
    "model-weights-are-a-fifo": (lambda w: edit(w / "clip.mp4", "--model", _model(w, _fifo_weights)),
                                 "not a regular file"),
    "bench-quality-tasks-0": (lambda w: ["bench", "quality", "--tasks", "0", "--out", "b"], "--tasks"),
    "bench-quality-steps-0": (lambda w: ["bench", "quality", "--steps", "0", "--out", "b"], "--steps"),
    "bench-quality-size-7": (lambda w: ["bench", "quality", "--size", "7", "--out", "b"], "--size"),
    "evaluate-clip-missing": (lambda w: ["evaluate", str(w / "clip.mp4"), str(w / "clip.mp4"), "--clip", "noclip"],
                              "CLIP folder"),
    "app-device-bogus": (lambda w: ["app", "--device", "bogus"], "--device 'bogus'"),
    "config-file-over-1-mib": (lambda w: ["edit", "--config", _yaml(w, "# padding\n" * 120000)], "the limit is"),
    # section 4: silently ignored or unclear
    "out-empty": (lambda w: edit(w / "clip.mp4", out=""), "--out is empty"),
    "model-empty": (lambda w: edit(w / "clip.mp4", "--model", ""), "--model is empty"),
    "config-empty": (lambda w: ["edit", "--config", ""], "--config is empty"),
    "direction-empty": (lambda w: edit(w / "clip.mp4", "--direction", ""), "--direction is empty"),
    "evaluate-mask-of-another-shape": (lambda w: (np.save(w / "m.npy", np.ones((4, 64), bool)),
                                                  ["evaluate", str(w / "frames"), str(w / "frames"), "--mask",
                                                   str(w / "m.npy")])[1], "64x4"),
    "control-characters-escaped": (lambda w: edit(w / "clip.mp4", "--reweight", "zz\x1b[2J=2"), "\\x1b[2J"),
    "newline-in-a-name-escaped": (lambda w: edit(w / "no\nsuch.mp4"), "no\\nsuch.mp4"),
    "config-is-a-folder": (lambda w: ["edit", "--config", str(w / "frames")], "is a folder"),
    "demo-steps-0": (lambda w: ["demo", "--steps", "0", "--out", "d", "-q"], "--steps"),
    "demo-out-is-a-file": (lambda w: ["demo", "--out", str(w / "clip.mp4"), "-q"], "not a folder"),
    "batch-gather-timeout-nan": (lambda w: ["batch", _yaml(w, "seed: 1\n"), "--gather-timeout", "nan"],
                                 "--gather-timeout"),
}


def _busy_port() -> int:
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    _busy_port.held = sock  # kept open for the test's duration
    return sock.getsockname()[1]


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_input_is_one_line_and_exit_2(case, work, capsys):
    argv = CASES[case][0](work)
    before = tree_hashes(work)
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    err = capsys.readouterr().err.strip()
    lines = [line for line in err.splitlines() if line.startswith("attentionflow: error:")]
    assert code == 2, f"exit {code}, stderr {err[-400:]!r}"
    assert len(lines) == 1 and "Traceback" not in err and len(err) < 1000, err[-400:]
    assert CASES[case][1] in lines[0], lines[0]
    assert "\x1b" not in err
    assert tree_hashes(work) == before, "the working folder changed"
    assert not (work / "d_input").exists()  # the demo leaves no input clip behind


@pytest.mark.parametrize("command", ["edit", "motion"])
def test_a_fifo_as_video_is_refused_without_opening_it(command, work):
    """Opening a FIFO for reading blocks until a writer comes: the check must look at the file type first."""
    os.mkfifo(work / "fifo.mp4")
    argv = edit(work / "fifo.mp4") if command == "edit" else ["motion", str(work / "fifo.mp4"), "--out", "o", "-q"]
    proc = subprocess.run([sys.executable, "-m", "attentionflow", *argv], capture_output=True, text=True,
                          timeout=60, cwd=work)
    assert proc.returncode == 2 and "not a regular file" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("host", ["::1", "127.1", "LOCALHOST", "127.0.0.2", "localhost"])
def test_loopback_is_decided_by_ipaddress(host):
    from attentionflow.commands.app import is_loopback

    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.4", "example.org", "128.0.0.1"])
def test_other_hosts_are_not_loopback(host):
    from attentionflow.commands.app import is_loopback

    assert not is_loopback(host)


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["sigint", "sigterm"])
@pytest.mark.parametrize("delay", [0.05, 0.2], ids=["during-imports", "early"])
def test_a_signal_at_start_up_exits_cleanly(sig, code, delay, work):
    """Issue 28: a signal in the first ~0.4 s (while Python imports) gives 130/143 and no traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "attentionflow", *edit(work / "clip.mp4")], cwd=work,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code and "Traceback" not in err, (proc.returncode, err[-500:])
    assert not list(work.glob(".out.*")) and not (work / "out").exists()


def test_a_second_ctrl_c_does_not_break_the_clean_up(work):
    proc = subprocess.Popen([sys.executable, "-m", "attentionflow", *edit(work / "frames", "--steps", "40")],
                            cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(work.glob(".out.tmp-*")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)  # the edit is under way
    proc.send_signal(signal.SIGINT)
    time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, (proc.returncode, err[-500:])
    assert not list(work.glob(".out.*")) and not (work / "out").exists()


def test_the_app_caps_targets_per_request(tmp_path):
    from attentionflow.commands.webapp import AppSettings, EditForm, EditSession
    from attentionflow.errors import ConfigError

    session = EditSession(AppSettings(device="cpu", max_targets=4, workdir=tmp_path / "w"))
    form = EditForm(source=SRC, targets="\n".join([TGT] * 300), frames=2, width=64, height=64, steps=2)
    with pytest.raises(ConfigError, match="at most 4 per request"):
        session.build_config(form, "v.mp4", tmp_path / "o")
    session.close()


def test_a_full_disk_while_writing_is_one_line_and_leaves_nothing(work, monkeypatch, capsys):
    """Issue 28: a failure of the file system after the whole edit (here: no space left) is one line, exit 2, and
    the half-written output is removed."""
    import errno

    import attentionflow.jobs as jobs

    def full(folder, *args, **kwargs):
        (folder / "edit_01.mp4").write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device", str(folder / "edit_01.mp4"))

    monkeypatch.setattr(jobs, "write_outputs", full)
    before = tree_hashes(work)
    assert main(edit(work / "frames")) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "No space left on device" in err and "Traceback" not in err, err
    assert tree_hashes(work) == before and not [p for p in work.iterdir() if p.name.startswith((".out", "out"))]


def _ipv6_loopback() -> bool:
    import socket

    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["sigterm", "sigint"])
def test_the_app_serves_on_ipv6_loopback_and_stops_with_the_signals_code(sig, code, tmp_path):
    """Issue 28: `--host ::1` is served (gradio needs it bracketed), and SIGTERM / Ctrl-C end the app with 143 / 130
    and one line (gradio's own wait swallowed both: exit 0)."""
    pytest.importorskip("gradio")
    if not _ipv6_loopback():
        pytest.skip("no IPv6 loopback on this machine")
    import socket
    import urllib.request

    with socket.socket(socket.AF_INET6) as sock:
        sock.bind(("::1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "attentionflow", "app", "--host", "::1", "--port", str(port)],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()  # the start-up line comes once the server answers
        assert f"http://[::1]:{port}/" in line, line
        assert urllib.request.urlopen(f"http://[::1]:{port}/", timeout=30).status == 200
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == code and "Traceback" not in err, (proc.returncode, err[-500:])


@pytest.mark.parametrize("content", [b"", b"\x89PNG\r\n\x1a\n broken", b"not an image at all"],
                         ids=["empty", "truncated-png", "text"])
def test_opencv_warnings_do_not_leak_before_the_one_line(content, work, capfd):
    """Issue 28: OpenCV's own `[ WARN ]` lines (written by its C++ logger to the process's stderr) are silenced."""
    (work / "bad").mkdir()
    for i in range(4):
        (work / "bad" / f"f{i}.png").write_bytes(content)
    assert main(edit(work / "bad")) == 2
    err = capfd.readouterr().err.strip()
    assert "WARN" not in err and len(err.splitlines()) == 1 and "f0.png" in err, err


def test_opencv_cannot_print_its_warn_line(tmp_path, capfd):
    """A frame that vanished between listing and reading makes OpenCV's logger print `[ WARN ] ... can't open/read
    file` at its default level; the tool's one line must be all there is."""
    from attentionflow.errors import InputError
    from attentionflow.io import video

    with pytest.raises(InputError, match="cannot read frame image"):
        video.read_image(tmp_path / "vanished.png")
    assert "WARN" not in capfd.readouterr().err
