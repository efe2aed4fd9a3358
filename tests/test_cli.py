"""CLI: an edit writes every promised output; every bad input is one line, exit code 2, no output folder."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import yaml

from attentionflow.commands.cli import main
from attentionflow.config import load_config
from attentionflow.evaluation.metrics import psnr
from attentionflow.io.video import read_frames
from attentionflow.io.writers import write_frames

SRC = "a square is moving on the road"


@pytest.fixture(scope="module")
def clip(tmp_path_factory, square_video):
    folder = tmp_path_factory.mktemp("clip") / "frames"
    write_frames(square_video[0], folder)
    return folder


def _args(clip, model, out, *extra):
    return [
        "edit", str(clip), "--source", SRC, "--target", "a square is moving on the snow",
        "--target", "a red square is moving on the road", "--model", str(model), "--out", str(out),
        "--frames", "4", "--size", "32", "--steps", "2", "--motion-word", "moving", "--quiet", "--device", "cpu",
        *extra,
    ]


def test_edit_writes_all_outputs(clip, tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    assert main(_args(clip, tiny_model_dir, out)) == 0
    names = {p.name for p in out.iterdir()}
    for stem in ("input", "reconstruction", "edit_01_a-square-is-moving-on-the-snow",
                 "edit_02_a-red-square-is-moving-on-the-road", "grid"):
        assert f"{stem}.mp4" in names and f"{stem}.gif" in names, stem
    assert {"config.yaml", "manifest.json", "frames", "attention", "motion"} <= names
    assert len(list((out / "frames" / "reconstruction").glob("*.png"))) == 4
    edit = read_frames(out / "edit_01_a-square-is-moving-on-the-snow.mp4")
    assert edit.shape == (4, 32, 32, 3)
    grid = read_frames(out / "grid.gif")
    assert grid.shape[0] == 4 and grid.shape[2] > 4 * 32  # input | reconstruction | 2 edits side by side
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["frames"] == 4 and manifest["size"] == {"width": 32, "height": 32}
    assert manifest["seed"] == 33 and manifest["device"] == "cpu" and manifest["dtype"] == "float32"
    assert {"inversion", "editing", "decode", "total"} <= set(manifest["timings_s"])
    assert manifest["versions"]["torch"] and manifest["mmi"]["motion_words"] == ["moving"]
    assert [e["mode"] for e in manifest["edits"]] == ["replace", "refine"]
    assert manifest["inversion"]["reused"] is False
    expected_db = psnr(read_frames(out / "frames" / "input"), read_frames(out / "frames" / "reconstruction"))
    assert manifest["inversion"]["reconstruction_psnr_db"] == pytest.approx(expected_db, abs=1e-3)
    resolved = load_config(out / "config.yaml")
    assert resolved.input_data.n_sample_frames == 4 and resolved.validation_data.num_inference_steps == 2
    assert (out / "attention" / "source.png").exists()
    assert not list(tmp_path.glob(".*tmp*")), "temporary folder left behind"


def test_config_file_with_overrides(clip, tiny_model_dir, tmp_path):
    cfg = {
        "pretrained_model_path": str(tiny_model_dir), "output_dir": str(tmp_path / "from-yaml"),
        "input_data": {"video_path": str(clip), "prompt": SRC, "n_sample_frames": 3, "width": 32, "height": 32},
        "validation_data": {"prompts": ["a square is moving on the snow"], "video_length": 3, "width": 32,
                            "height": 32, "num_inference_steps": 2, "num_inv_steps": 2},
        "mmi": {"motion_words": ["moving"]},
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["edit", "--config", str(path), "--quiet", "--no-mmi", "--seed", "7"]) == 0
    manifest = json.loads((tmp_path / "from-yaml" / "manifest.json").read_text())
    assert manifest["frames"] == 3 and manifest["seed"] == 7 and manifest["mmi"]["enabled"] is False
    assert not (tmp_path / "from-yaml" / "motion").exists()


def _bad_cases(clip, model, tmp):
    text = tmp / "notavideo.mp4"
    text.write_text("hello")
    empty = tmp / "empty"
    empty.mkdir()
    nomodel = tmp / "incomplete_model"
    nomodel.mkdir()
    (nomodel / "unet").mkdir()
    unknown = tmp / "unknown.yaml"
    unknown.write_text("input_data:\n  vidoe_path: x\n")
    wrongtype = tmp / "wrongtype.yaml"
    wrongtype.write_text("seed: thirty\n")
    full = tmp / "full"
    full.mkdir()
    (full / "keep.txt").write_text("x")
    long = " ".join(["square"] * 80)
    a = lambda *x: _args(clip, model, tmp / "never", *x)  # noqa: E731
    return {
        "missing video": (["edit", str(tmp / "nope.mp4"), *a()[2:]], "not found"),
        "not a video": (["edit", str(text), *a()[2:]], "notavideo.mp4"),
        "too few frames": (a("--frames", "50"), "50"),
        "zero frames": (["edit", str(empty), *a()[2:]], "empty"),
        "size not multiple of 8": (a("--size", "30"), "multiple of 8"),
        "prompt too long": (a("--source", long), "token"),
        "replace with different token counts": (a("--mode", "replace"), "replace"),
        "blend word missing": (a("--blend-word", "circle"), "circle"),
        "reweight word missing": (a("--reweight", "desert=2"), "desert"),
        "missing model folder": (_args(clip, tmp / "no_model", tmp / "never"), "not found"),
        "model missing a component": (_args(clip, nomodel, tmp / "never"), "missing component"),
        "unknown config key": (["edit", "--config", str(unknown)], "input_data.vidoe_path"),
        "wrong type in config": (["edit", "--config", str(wrongtype)], "'seed'"),
        "output folder not empty": (_args(clip, model, full), "not written by attentionflow"),
        "motion word absent": (a("--motion-word", "running"), "running"),
        "single frame with MMI": (a("--frames", "1"), "2 frames"),
        "unknown direction": (a("--direction", "UP"), "UP"),
        "angle out of range": (a("--direction", "400"), "400"),
        "unknown similarity": (a("--similarity", "cosine"), "cosine"),
        "unknown flow": (a("--flow", "raft"), "raft"),
        "negative strength": (a("--mmi-strength", "-1"), "strength"),
    }


def test_bad_inputs_exit_2_with_one_line(clip, tiny_model_dir, tmp_path, capsys):
    for name, (argv, needle) in _bad_cases(clip, tiny_model_dir, tmp_path).items():
        code = main(argv)
        err = capsys.readouterr().err.strip()
        assert code == 2, f"{name}: exit {code}, stderr {err!r}"
        assert err.count("\n") == 0 and err.startswith("attentionflow: error:"), f"{name}: {err!r}"
        assert needle in err, f"{name}: {needle!r} not in {err!r}"
        assert not (tmp_path / "never").exists(), f"{name}: output folder was created"
    assert (tmp_path / "full" / "keep.txt").exists()


def test_console_script_has_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "attentionflow", "edit", str(tmp_path / "missing.mp4"),
                           "--source", "a", "--target", "b", "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.strip().count("\n") == 0
    assert "missing.mp4" in proc.stderr


def test_motion_command_samples_like_edit_by_default(tmp_path):
    """Without --frames/--size, `motion` takes what `edit` takes: 8 frames at 512x512 (not every frame at native
    size)."""
    from attentionflow.config import InputDataConfig
    from attentionflow.toyworld.world import make_video

    video = tmp_path / "long"
    write_frames(make_video("a red circle is moving on the road", frames=12, size=64, seed=0).frames, video)
    out = tmp_path / "motion"
    assert main(["motion", str(video), "--out", str(out), "--quiet"]) == 0
    maps = np.load(out / "motion_maps.npy")
    assert (
        maps.shape == (InputDataConfig.n_sample_frames, InputDataConfig.height, InputDataConfig.width) == (8, 512, 512)
    )


def test_motion_command(clip, tmp_path):
    out = tmp_path / "motion"
    assert main(["motion", str(clip), "--frames", "6", "--size", "32", "--out", str(out), "--quiet"]) == 0
    maps = np.load(out / "motion_maps.npy")
    assert maps.shape == (6, 32, 32) and 0 <= maps.min() and maps.max() <= 1
    assert main(["motion", str(clip), "--out", str(out), "--quiet"]) == 2  # not empty, no --overwrite


def test_attention_figure_has_one_row_per_word_frame_indices_and_a_colour_bar():
    """A word the tokenizer splits (the toy tokenizer spells 'jeep' as j, e, e, p) is one row: the mean of its
    tokens' maps; the figure grows by one row per word, not per token."""
    import torch

    from attentionflow.attention.tokens import word_spans
    from attentionflow.jobs import attention_grid, attention_rows
    from attentionflow.models.paths import embedded_model_path
    from attentionflow.models.tokenizer import load_tokenizer
    from attentionflow.pipeline_output import AttentionMaps

    tok = load_tokenizer(embedded_model_path() / "tokenizer")
    prompt = "a jeep is moving on the road"
    spans = word_spans(prompt, tok)
    assert [w for w, _ in spans] == ["a", "jeep", "is", "moving", "on", "the", "road"]
    jeep = dict(spans)["jeep"]
    assert len(jeep) > 1  # several tokens
    g = torch.Generator().manual_seed(0)
    f, h, w, k = 3, 4, 4, 77
    without, with_ = torch.rand(1, f, h, w, k, generator=g), torch.rand(1, f, h, w, k, generator=g)
    maps = AttentionMaps(size=(h, w), words=[spans], without_mmi=without,
                         with_mmi=with_, motion=torch.rand(f, h, w, generator=g))
    rows = attention_rows(maps, 0)
    assert [label for label, *_ in rows] == ["motion map", *[w for w, _ in spans]]
    np.testing.assert_allclose(rows[2][1], without[0][..., jeep].mean(dim=-1).numpy(), rtol=1e-6)
    np.testing.assert_allclose(rows[2][2], with_[0][..., jeep].mean(dim=-1).numpy(), rtol=1e-6)
    image = attention_grid(maps, 0, cell=48)
    plain = attention_grid(AttentionMaps(size=(h, w), words=[spans[:3]],
                                         without_mmi=without, with_mmi=with_, motion=maps.motion), 0, cell=48)
    assert image.shape[0] - plain.shape[0] == 4 * (48 + 2)  # one row per word
    bar = image[-28:-18, 110:310]  # the colour bar: blue on the left, red on the right
    assert bar[5, 2, 2] > bar[5, 2, 0] and bar[5, -3, 0] > bar[5, -3, 2]


@pytest.mark.parametrize(("frames", "expected"), [(3, [0, 1, 2]), (8, list(range(8))), (9, [0, 1, 2, 3, 5, 6, 7, 8]),
                                                  (64, [0, 9, 18, 27, 36, 45, 54, 63])])
def test_attention_figure_shows_at_most_eight_evenly_spaced_frames(frames, expected):
    import torch

    from attentionflow.jobs import attention_grid, figure_frames
    from attentionflow.pipeline_output import AttentionMaps

    assert figure_frames(frames) == expected
    words = [[("a", [1]), ("circle", [2])]]
    g = torch.Generator().manual_seed(0)
    maps = AttentionMaps(size=(4, 4), words=words, without_mmi=torch.rand(1, frames, 4, 4, 77, generator=g),
                         with_mmi=None, motion=None)
    image = attention_grid(maps, 0, cell=24)
    columns = min(frames, 8)
    assert image.shape[1] == max(110 + columns * 24, 110 + 260)  # label column + one cell per shown frame
