"""``attentionflow app``: upload checks, limits, busy state, one edit (no browser), and a real-browser run.

The browser test drives Debian's headless Chromium with Playwright against the app serving the
embedded toy model; it is skipped only when /usr/bin/chromium or the playwright package is missing.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import socket
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from attentionflow.commands.webapp import BUSY, AppSettings, EditForm, EditSession
from attentionflow.errors import AttentionFlowError, ConfigError, InputError

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run"]


def fast_defaults():
    """The toy demo's settings with 2 steps and plain DDIM inversion (seconds on a CPU)."""
    from attentionflow.commands.demo import demo_config

    cfg = demo_config("", 2)
    cfg.validation_data.inversion = "ddim"
    return cfg


@pytest.fixture()
def session(tmp_path):
    s = EditSession(AppSettings(device="cpu", max_frames=8, max_upload_mb=1, max_size=128, defaults=fast_defaults(),
                                workdir=tmp_path / "work"))
    yield s
    s.close()


@pytest.fixture()
def upload_root(tmp_path) -> Path:
    """Stands in for Gradio's upload cache."""
    root = tmp_path / "gradio_cache"
    root.mkdir()
    return root


# -------------------------------------------------------------------------------------------------
# uploads


def test_upload_of_a_non_video_is_a_one_line_error(session, upload_root):
    fake = upload_root / "holiday.mp4"
    fake.write_text("this is text, not a video\n")
    with pytest.raises(InputError) as err:
        session.accept_upload([str(fake)], upload_root)
    msg = str(err.value)
    assert "holiday.mp4" in msg and "\n" not in msg
    assert str(session.workdir) not in msg  # the server-side copy's path is not shown
    assert list((session.workdir / "uploads").iterdir()) == []  # the rejected copy is removed


def test_upload_refuses_paths_outside_the_upload_cache_types_and_size(session, upload_root, tmp_path):
    from attentionflow.io.writers import write_mp4

    outside = tmp_path / "secret.mp4"
    write_mp4(np.zeros((3, 16, 16, 3), np.uint8), outside)
    with pytest.raises(InputError, match="only files uploaded through this page"):
        session.accept_upload(str(outside), upload_root)
    with pytest.raises(InputError, match="only files uploaded"):
        session.accept_upload(str(upload_root / ".." / "secret.mp4"), upload_root)
    script = upload_root / "run.sh"
    script.write_text("echo hi\n")
    with pytest.raises(InputError, match="unsupported upload"):
        session.accept_upload([str(script)], upload_root)
    big = upload_root / "big.mp4"
    big.write_bytes(b"\0" * (1024 * 1024 + 1))  # the session allows 1 MiB
    with pytest.raises(InputError, match="limit is 1 MiB"):
        session.accept_upload([str(big)], upload_root)
    with pytest.raises(InputError, match="no file uploaded"):
        session.accept_upload([], upload_root)


def test_upload_of_a_video_and_of_frames_in_natural_order(session, upload_root):
    from attentionflow.io.video import read_frames
    from attentionflow.io.writers import write_mp4

    video = np.zeros((5, 32, 48, 3), np.uint8)
    write_mp4(video, upload_root / "clip.mp4")
    path, msg = session.accept_upload([str(upload_root / "clip.mp4")], upload_root)
    assert path.is_file() and path.parent.parent == session.workdir / "uploads"
    assert "5 frames of 48x32" in msg

    import cv2

    names = ["f10.png", "f2.png", "f1.png"]  # natural order: f1, f2, f10
    for name in names:
        value = int(name[1:-4]) * 20
        cv2.imwrite(str(upload_root / name), np.full((16, 16, 3), value, np.uint8))
    folder, msg = session.accept_upload([str(upload_root / n) for n in names], upload_root)
    assert "3 frames" in msg
    frames = read_frames(folder)
    assert [int(f[0, 0, 0]) for f in frames] == [20, 40, 200]


# -------------------------------------------------------------------------------------------------
# form -> config, busy


def test_build_config_applies_the_prompt_to_prompt_fields(session, tmp_path):
    form = EditForm(source="a red circle is moving on the road", targets="a red circle is moving on the snow",
                    width=64, height=64, frames=2, cross_replace=0.6, self_replace=0.2, blend_words="circle",
                    reweight="snow=2, road=0.5", inversion="null-text")
    cfg = session.build_config(form, "v.mp4", tmp_path / "o")
    assert cfg.p2p.cross_replace_steps == 0.6 and cfg.p2p.self_replace_steps == 0.2
    assert cfg.p2p.blend_words == ["circle"] and cfg.p2p.reweight == {"snow": 2.0, "road": 0.5}
    assert cfg.validation_data.inversion == "null-text"
    plain = session.build_config(dataclasses.replace(form, blend_words=" ", reweight=""), "v.mp4", tmp_path / "o")
    assert plain.p2p.blend_words is None and plain.p2p.reweight is None
    assert cfg.chunk_frames == "auto"  # the form's default is the config's
    chunked = session.build_config(dataclasses.replace(form, chunk_frames=" 4 "), "v.mp4", tmp_path / "o")
    assert chunked.chunk_frames == 4


@pytest.mark.parametrize("field, value, needle", [
    ("reweight", "snow", "WORD=FACTOR"),
    ("reweight", "snow=lots", "WORD=FACTOR"),
    ("reweight", "=2", "WORD=FACTOR"),
    ("cross_replace", "nan", "cross_replace"),
    ("self_replace", 1.5, "self_replace_steps"),
    ("inversion", "pnp", "inversion"),
    ("chunk_frames", "0", "chunk_frames must be auto or a whole number of frames >= 1, got 0"),
    ("chunk_frames", "eight", "got 'eight'"),
])
def test_bad_advanced_fields_are_one_line_errors(session, tmp_path, field, value, needle):
    form = dataclasses.replace(EditForm(source="a b", targets="c", width=64, height=64, frames=2), **{field: value})
    with pytest.raises(AttentionFlowError) as err:
        session.build_config(form, "v.mp4", tmp_path / "o")
    assert needle in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("size, limit, expected", [
    ((480, 480), 1024, (480, 480)),
    ((256, 144), 1024, (256, 144)),
    ((1920, 1080), 512, (512, 288)),  # scaled to the limit, aspect kept
    ((100, 60), 1024, (96, 56)),  # multiples of 8
])
def test_form_size_follows_the_uploaded_video(tmp_path, size, limit, expected):
    from attentionflow.io.writers import write_mp4

    s = EditSession(AppSettings(device="cpu", max_size=limit, defaults=fast_defaults(), workdir=tmp_path / "w"))
    try:
        clip = tmp_path / "clip.mp4"
        width, height = size
        write_mp4(np.zeros((2, height, width, 3), np.uint8), clip)
        assert s.frame_size(clip) == expected
    finally:
        s.close()


def test_build_config_applies_the_form_and_the_server_limits(session, tmp_path):
    form = EditForm(source="a red circle is moving on the road", targets="a blue circle is moving on the road\n\n"
                    "a red circle is moving on the snow\n", motion_word="moving, circle", direction="135",
                    frames=4, start=1, stride=2, width=64, height=48, steps=3, guidance=5.0, seed=7, inversion="ddim")
    cfg = session.build_config(form, "video.mp4", tmp_path / "o")
    assert cfg.validation_data.prompts == ["a blue circle is moving on the road", "a red circle is moving on the snow"]
    assert cfg.mmi.motion_words == ["moving", "circle"] and cfg.mmi.direction == 135.0
    assert (cfg.input_data.n_sample_frames, cfg.input_data.sample_start_idx, cfg.input_data.sample_frame_rate) == (
        4,
        1,
        2,
    )
    assert (cfg.input_data.width, cfg.input_data.height) == (64, 48) == (cfg.validation_data.width,
                                                                        cfg.validation_data.height)
    assert cfg.validation_data.num_inference_steps == cfg.validation_data.num_inv_steps == 3
    assert cfg.validation_data.inversion == "ddim" and cfg.seed == 7 and cfg.device == "cpu"
    assert session.build_config(EditForm(source="a b", targets="c", motion_word="auto", direction="NE", width=64,
                                         height=64, frames=2), "v.mp4", tmp_path).mmi.motion_words == "auto"
    assert session.build_config(EditForm(source="a b", targets="c", motion_word="none", width=64, height=64,
                                         frames=2), "v.mp4", tmp_path).mmi.motion_words is None
    with pytest.raises(ConfigError, match="between 1 and 8"):
        session.build_config(EditForm(source="a", targets="b", frames=9, width=64, height=64), "v.mp4", tmp_path)
    with pytest.raises(ConfigError, match="limit of 128"):
        session.build_config(EditForm(source="a", targets="b", frames=2, width=256, height=64), "v.mp4", tmp_path)
    with pytest.raises(InputError, match="Toy example"):
        session.build_config(EditForm(source="a", targets="b", frames=2, width=64, height=64), None, tmp_path)
    with pytest.raises(ConfigError, match="target prompts are empty"):
        session.build_config(EditForm(source="a", targets=" \n", frames=2, width=64, height=64), "v.mp4", tmp_path)


def test_busy_while_an_edit_holds_the_model(session):
    assert session.busy_message() is None
    with session.lock:
        assert session.busy_message() == BUSY
    assert session.busy_message() is None


def test_missing_gradio_is_a_clear_error(monkeypatch):
    from attentionflow.commands.cli import main

    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio -> ImportError
    from attentionflow.commands.webapp import _import_gradio

    with pytest.raises(AttentionFlowError, match=r"pip install attentionflow\[app\]"):
        _import_gradio()
    assert main(["app", "--port", "1"]) == 2


def test_toy_example_and_one_edit_without_a_browser(session):
    path, form, msg = session.toy_example()
    assert path.parent == session.workdir / "toy" and "toy example loaded" in msg
    form.frames = 3
    stages: list[str] = []
    result = session.run_edit(form, path, progress=lambda stage, i, n: stages.append(stage))
    assert {"inversion", "editing"} <= set(stages)
    assert result.grid.is_file() and result.input.is_file() and result.reconstruction.is_file()
    assert [c for _, c in result.edits] == form.targets.splitlines()
    assert all(p.is_file() for p, _ in result.edits + result.attention)
    assert result.motion_overlay is not None and result.motion_overlay.is_file()
    with zipfile.ZipFile(result.archive) as z:
        assert "attentionflow_result/manifest.json" in z.namelist()
    assert "moving" in result.summary and "inversion reused" not in result.summary
    # a new target prompt for the same clip and source prompt starts from the cached inversion
    stages.clear()
    again = session.run_edit(EditForm(**{**form.__dict__, "targets": "a blue circle is moving on the road"}), path,
                             progress=lambda stage, i, n: stages.append(stage))
    assert "inversion" not in stages and "null-text" not in stages and "editing" in stages
    assert "inversion reused" in again.summary and "reconstruction PSNR" in again.summary
    assert [c for _, c in again.edits] == ["a blue circle is moving on the road"]
    with pytest.raises(AttentionFlowError, match="flying"):  # bad word: an error, and the lock is released
        session.run_edit(EditForm(**{**form.__dict__, "motion_word": "flying"}), path)
    assert session.busy_message() is None


def test_a_new_upload_replaces_the_sessions_previous_one_and_the_total_is_capped(tmp_path, upload_root):
    from attentionflow.io.writers import write_mp4

    s = EditSession(AppSettings(device="cpu", max_frames=8, max_upload_mb=1, max_size=128, defaults=fast_defaults(),
                                workdir=tmp_path / "work", max_uploads_total_mb=0.02))
    rng = np.random.default_rng(0)
    clips = []
    for i in range(3):  # noise compresses badly: each copy is several KiB
        clips.append(upload_root / f"c{i}.mp4")
        write_mp4(rng.integers(0, 255, (4, 64, 64, 3), dtype=np.uint8), clips[-1])
    first, _ = s.accept_upload(str(clips[0]), upload_root, session="alice")
    second, _ = s.accept_upload(str(clips[1]), upload_root, session="alice")
    assert not first.exists() and second.is_file()  # alice keeps only her latest upload
    sizes = [c.stat().st_size for c in clips]
    assert sum(sizes[1:]) > 0.02 * 2**20 > sizes[2]  # bob's upload passes the cap only together with alice's
    bobs, _ = s.accept_upload(str(clips[2]), upload_root, session="bob")
    assert bobs.is_file() and not second.exists()  # the oldest other upload made room
    assert s.uploads_bytes() <= 0.02 * 2**20
    assert len(list((s.workdir / "uploads").iterdir())) == 1
    s.close()


def test_gradios_upload_cache_lives_in_the_work_folder_is_pruned_and_removed_at_exit(tmp_path, monkeypatch):
    """Issue 28 item 15: six uploads no longer pile up in gradio's cache, and nothing is left after the app stops."""
    from attentionflow.io.writers import write_mp4

    s = EditSession(AppSettings(device="cpu", max_frames=8, max_upload_mb=1, max_size=128, defaults=fast_defaults(),
                                workdir=tmp_path / "work", max_uploads_total_mb=0.05))
    assert s.upload_cache.is_dir() and s.upload_cache.parent == s.workdir
    rng = np.random.default_rng(0)
    for i in range(6):  # gradio stores each upload in its own hashed folder
        folder = s.upload_cache / f"{i:040x}"
        folder.mkdir()
        write_mp4(rng.integers(0, 255, (6, 64, 64, 3), dtype=np.uint8), folder / "clip.mp4")
        path, _ = s.accept_upload(str(folder / "clip.mp4"), s.upload_cache, session=f"user{i}")
        assert (folder / "clip.mp4").is_file()  # the upload being accepted stays
    held = sum(f.stat().st_size for f in s.upload_cache.rglob("*") if f.is_file())
    one = (folder / "clip.mp4").stat().st_size
    assert 6 * one > 0.05 * 2**20 and held <= max(0.05 * 2**20, one)
    s.close()
    assert not s.upload_cache.exists()
    if importlib.util.find_spec("gradio") is not None:  # the page really uses that folder
        from attentionflow.commands.webapp import build_app

        monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "elsewhere"))  # restored after the test
        s = EditSession(AppSettings(device="cpu", defaults=fast_defaults(), workdir=tmp_path / "work2"))
        demo = build_app(s)
        assert Path(demo.GRADIO_CACHE).resolve() == s.upload_cache.resolve()
        s.close()


@pytest.mark.parametrize("field,value,needle", [
    ("guidance", float("nan"), "guidance must be a finite number"),
    ("strength", float("inf"), "strength must be a finite number"),
    ("frames", "eight", "frames must be a number"),
    ("width", 8, "at least 16"),
    ("steps", 2.5, "steps must be a whole number"),
])
def test_the_server_checks_form_values_like_the_cli(session, tmp_path, field, value, needle):
    form = EditForm(source="a red circle is moving on the road", targets="a blue circle is moving on the road",
                    frames=2, width=64, height=64, steps=2)
    setattr(form, field, value)
    with pytest.raises(ConfigError) as err:
        session.build_config(form, "v.mp4", tmp_path / "o")
    assert needle in str(err.value)


def test_errors_and_the_zip_show_no_server_paths(session, upload_root):
    from attentionflow.io.writers import write_mp4
    from attentionflow.toyworld.world import make_video

    write_mp4(make_video("a red circle is moving on the road", frames=4, size=64).frames, upload_root / "holiday.mp4")
    path, _ = session.accept_upload(str(upload_root / "holiday.mp4"), upload_root, session="s1")
    form = EditForm(**{**session.toy_example()[1].__dict__, "frames": 3})
    too_many = EditForm(**{**form.__dict__, "frames": 8, "stride": 2})  # the clip has 4 frames
    with pytest.raises(InputError) as err:
        session.run_edit(too_many, path, session="s1")
    assert "holiday.mp4" in str(err.value) and str(session.workdir) not in str(err.value), str(err.value)
    result = session.run_edit(form, path, session="s1")
    with zipfile.ZipFile(result.archive) as z:
        manifest = z.read("attentionflow_result/manifest.json").decode()
        config = z.read("attentionflow_result/config.yaml").decode()
    assert '"argv"' not in manifest
    for text in (manifest, config):
        assert str(session.workdir) not in text and str(session.workdir.resolve()) not in text
    assert "holiday.mp4" in config


def test_inversion_reuse_is_never_reported_across_sessions(session):
    path, form, _ = session.toy_example()
    form.frames = 3
    session.run_edit(form, path, session="alice")
    other = EditForm(**{**form.__dict__, "targets": "a red circle is moving on the snow"})
    assert "inversion reused" not in session.run_edit(other, path, session="bob").summary
    assert "inversion reused" in session.run_edit(form, path, session="bob").summary  # bob's own, reused


def test_public_host_needs_auth_unless_insecure(monkeypatch):
    import attentionflow.commands.app as app
    import attentionflow.commands.webapp as web

    started = []

    class Fake:  # stands for the launched Blocks and the session: the command blocks, then closes
        local_url = "http://127.0.0.1:7861/"

        def block_thread(self) -> None: ...

        def close(self) -> None: ...

    monkeypatch.setattr(web, "launch_app", lambda settings, **kw: (started.append(kw), (Fake(), Fake()))[1])
    monkeypatch.setattr(app, "wait_for_stop", lambda: None)  # as if stopped at once
    assert app.parse_auth("ann:s3cret:x") == ("ann", "s3cret:x")
    from attentionflow.commands.cli import main

    assert main(["app", "--host", "0.0.0.0", "--port", "7861"]) == 2 and not started
    assert main(["app", "--host", "0.0.0.0", "--port", "7861", "--auth", "ann:pw"]) == 0
    assert started[-1]["auth"] == ("ann", "pw") and started[-1]["host"] == "0.0.0.0"
    assert main(["app", "--host", "0.0.0.0", "--port", "7861", "--insecure"]) == 0
    assert started[-1]["auth"] is None


# -------------------------------------------------------------------------------------------------
# the real browser


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists() or importlib.util.find_spec("playwright") is None,
                    reason="needs /usr/bin/chromium (Debian package) and the playwright package")
def test_browser_toy_edit_bad_upload_and_recovery(tmp_path):
    from playwright.sync_api import expect, sync_playwright

    from attentionflow.commands.webapp import launch_app

    settings = AppSettings(device="cpu", defaults=fast_defaults(), workdir=tmp_path / "work")
    demo, session = launch_app(settings, port=_free_port(), block=False)
    assert demo.local_url.startswith("http://127.0.0.1:")  # bound to localhost only
    bad = tmp_path / "not_a_video.mp4"
    bad.write_text("plain text renamed to .mp4\n")
    good = tmp_path / "car-turn.mp4"
    good.write_bytes((Path(__file__).resolve().parents[1] / "configs" / "videos" / "car-turn.mp4").read_bytes())
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch_persistent_context(
                str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page()
                page.goto(demo.local_url)
                page.locator("#af-toy").click()
                expect(page.locator("#af-status")).to_contain_text("toy example loaded", timeout=60_000)
                page.locator("#af-edit").click()
                expect(page.locator("#af-grid video")).to_be_visible(timeout=180_000)
                expect(page.locator("#af-summary")).to_contain_text("motion word(s): moving", timeout=30_000)
                expect(page.locator("#af-grid video")).to_have_attribute("src", re.compile(r"grid\.mp4"))
                expect(page.locator("#af-download a")).to_have_attribute(
                    "href", re.compile(r"attentionflow_result\.zip$")
                )
                expect(page.locator("#af-edits img")).to_have_count(2)  # one per target prompt
                page.screenshot(path=str(tmp_path / "after_edit.png"), full_page=True)

                # the attention figure is shown whole: not cropped to a thumbnail
                figure = page.locator("#af-attention img").first
                expect(figure).to_be_visible(timeout=30_000)
                fit = figure.evaluate("i => [getComputedStyle(i).objectFit, i.naturalWidth, i.naturalHeight, "
                                      "i.clientWidth, i.clientHeight]")
                object_fit, nat_w, nat_h, shown_w, shown_h = fit
                assert nat_w > 0 and shown_w > 0
                assert object_fit in ("contain", "scale-down") or abs(shown_w / shown_h - nat_w / nat_h) < 0.02, fit

                page.locator("#af-upload input[type=file]").set_input_files(str(bad))
                error = page.locator("#af-status .af-error")
                expect(error).to_be_visible(timeout=60_000)
                expect(error).to_contain_text("not_a_video.mp4")
                page.screenshot(path=str(tmp_path / "bad_upload.png"), full_page=True)

                # a good upload after the failed one replaces it (not "unsupported upload (bad, good)") and sets
                # width and height from the video (256x256 here)
                page.locator("#af-upload input[type=file]").set_input_files(str(good))
                expect(page.locator("#af-status")).to_contain_text("loaded car-turn.mp4", timeout=60_000)
                expect(page.locator("#af-width input[type=number]")).to_have_value("256", timeout=30_000)
                expect(page.locator("#af-height input[type=number]")).to_have_value("256")

                # the server keeps working: load the toy example again and run a second edit
                page.locator("#af-toy").click()
                expect(page.locator("#af-status")).to_contain_text("toy example loaded", timeout=60_000)
                page.locator("#af-edit").click()
                # the status read "toy example loaded" before the click, so "done" is the second edit's
                expect(page.locator("#af-status")).to_have_text("done", timeout=180_000)
                expect(page.locator("#af-summary")).to_contain_text("motion word(s): moving")
            finally:
                browser.close()
    finally:
        demo.close()
        session.close()
    results = list((tmp_path / "work" / "results").iterdir())
    assert len(results) == 2  # two edits ran on the server


def test_launch_prints_the_address_not_gradios_share_hint(tmp_path, capfd):
    pytest.importorskip("gradio")
    from attentionflow.commands.webapp import launch_app, startup_line

    settings = AppSettings(device="cpu", defaults=fast_defaults(), workdir=tmp_path / "work")
    demo, session = launch_app(settings, port=_free_port(), block=False)
    try:
        out = capfd.readouterr()
        text = out.out + out.err
        assert "share=True" not in text and "public link" not in text
        assert f"running on {demo.local_url}" in startup_line(demo)
    finally:
        demo.close()
        session.close()


# -------------------------------------------------------------------------------------------------
# the form is the edit command's options


@pytest.mark.parametrize("fields, flags", [
    ({"frames": 4, "width": 96, "height": 64}, ["--frames", "4", "--size", "96x64"]),
    ({"steps": 7, "guidance": 3.5, "seed": 5}, ["--steps", "7", "--guidance", "3.5", "--seed", "5"]),
    ({"inversion": "null-text"}, ["--inversion", "null-text"]),
    ({"source": " a b ", "targets": "a c\n\na d"}, ["--source", "a b", "--target", "a c", "--target", "a d"]),
    ({"motion_word": "moving, running"}, ["--motion-word", "moving", "--motion-word", "running"]),
    ({"motion_word": "auto", "direction": "NE"}, ["--motion-word", "auto", "--direction", "NE"]),
    ({"motion_word": "none"}, ["--motion-word", "none"]),
    ({"mmi": False, "strength": 0.3}, ["--no-mmi", "--mmi-strength", "0.3"]),
    ({"reweight": "snow=2, road=0.5", "blend_words": "circle, square"},
     ["--reweight", "snow=2", "--reweight", "road=0.5", "--blend-word", "circle", "--blend-word", "square"]),
    ({"cross_replace": 0.6, "self_replace": 0.1, "edit_region": "moving", "chunk_frames": "4"},
     ["--cross-replace", "0.6", "--self-replace", "0.1", "--edit-region", "moving", "--chunk-frames", "4"]),
], ids=["size", "diffusion", "inversion", "prompts", "motion-words", "auto-direction", "no-motion-word", "mmi",
        "p2p-lists", "p2p-numbers"])
def test_the_form_writes_the_config_the_edit_flags_write(fields, flags):
    from attentionflow.commands.cli import build_parser, config_from_args
    from attentionflow.commands.webapp import config_from_form, form_from_config
    from attentionflow.config import EditConfig

    form = dataclasses.replace(form_from_config(EditConfig()), **fields)
    by_cli = config_from_args(build_parser().parse_args(["edit", *flags]))
    assert config_from_form(EditConfig(), form) == by_cli


@pytest.mark.parametrize("config", ["defaults", "demo"])
def test_the_form_shows_a_config_that_it_writes_back_unchanged(config):
    from attentionflow.commands.demo import demo_config
    from attentionflow.commands.webapp import config_from_form, form_from_config
    from attentionflow.config import EditConfig

    base = EditConfig() if config == "defaults" else demo_config("", None)
    base.p2p.reweight, base.p2p.blend_words, base.mmi.direction = {"snow": 2.0}, ["circle"], "SW"
    assert config_from_form(base, form_from_config(base)) == base


def test_every_form_field_stands_for_an_edit_option():
    from attentionflow.commands.webapp import FORM, field_choices
    from attentionflow.config import EDIT_REGIONS, INVERSION_METHODS
    from attentionflow.options import EDIT_OPTIONS

    assert sorted(f.name for f in FORM) == sorted(f.name for f in dataclasses.fields(EditForm))
    assert {f.flag for f in FORM} <= {o.flag for o in EDIT_OPTIONS}
    by_name = {f.name: f for f in FORM}
    assert field_choices(by_name["inversion"]) == list(INVERSION_METHODS)  # the config's own list, not a copy
    assert field_choices(by_name["edit_region"]) == list(EDIT_REGIONS)
