"""``attentionflow bench quality``: the suite, the scoring (oracle / failing editors), a 2-task tiny run."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from attentionflow.commands.cli import main
from attentionflow.evaluation.bench import single as bench
from attentionflow.toyworld.world import BACKGROUNDS, parse_caption, render_background, render_frame


def test_suite_is_fixed_balanced_and_one_attribute_per_task():
    assert len(bench.TASKS) >= 12
    kinds = [t.kind for t in bench.TASKS]
    assert {k: kinds.count(k) for k in set(kinds)} == {"colour": 4, "shape": 4, "background": 4}
    assert kinds[:3] == ["colour", "shape", "background"]  # --tasks 3 covers every kind
    assert {t.path for t in bench.TASKS} == {"straight", "curved"}
    assert len({t.seed for t in bench.TASKS}) == len(bench.TASKS)
    for t in bench.TASKS:
        src, tgt = parse_caption(t.source), parse_caption(t.target)
        changed = [k for k, a, b in zip(("colour", "shape", "background"), src, tgt) if a != b]
        assert changed == [t.kind] and t.target_value == dict(zip(("colour", "shape", "background"), tgt))[t.kind]
        assert bench.MOTION_WORD in t.source.split() and bench.MOTION_WORD in t.target.split()


def _oracle(task: bench.BenchTask, video) -> np.ndarray:
    """The target caption rendered on the source's path (object edits keep the source's background)."""
    colour, shape, background = parse_caption(task.target)
    size = video.frames.shape[1]
    rng = np.random.default_rng(task.seed)
    rng.uniform(0.11, 0.2)  # make_video draws the radius first, then the background texture
    src_bg = render_background(parse_caption(task.source)[2], size, rng)
    first, _ = render_frame(*parse_caption(task.source)[:2], src_bg, tuple(video.positions[0]), video.radius, size)
    assert (first == video.frames[0]).all()  # the background was reproduced exactly
    bg = render_background(background, size, 99) if task.kind == "background" else src_bg
    return np.stack([render_frame(colour, shape, bg, (float(x), float(y)), video.radius, size)[0]
                     for x, y in video.positions])


@pytest.mark.parametrize("index", [0, 1, 2])  # one task per kind
def test_scoring_oracle_source_and_static_editors(index):
    from attentionflow.evaluation import metrics
    from attentionflow.flow import get_flow_estimator

    task = bench.TASKS[index]
    video = bench.task_video(task, frames=5, size=64)
    est = get_flow_estimator("dis")
    fwd, bwd = metrics.pair_flows(video.frames, est)
    perfect_attention = metrics.resize_video(video.masks.astype(np.float32), 8, 8)  # (F, 8, 8)
    oracle = bench.score_edit(task, video, _oracle(task, video), fwd, bwd, est, perfect_attention)
    assert oracle["success"] == 1.0 and oracle["full"] == 1.0
    assert oracle["centroid_err"] < 0.75
    # attention equal to the mask coverage: mass inside = sum(cov * cov) / sum(cov)
    assert oracle["attn_loc"] == pytest.approx((perfect_attention ** 2).sum() / perfect_attention.sum(), rel=1e-5)
    if task.kind == "background":
        assert oracle["bg_psnr"] is None
    else:
        assert oracle["bg_psnr"] == math.inf  # nothing changed outside the object's box
    unchanged = bench.score_edit(task, video, video.frames, fwd, bwd, est, None)
    assert unchanged["success"] == 0.0 and unchanged["full"] == 0.0 and unchanged["attn_loc"] is None
    assert unchanged["flow_epe"] == pytest.approx(0.0, abs=1e-6)
    static = bench.score_edit(task, video, np.repeat(video.frames[:1], len(video.frames), axis=0), fwd, bwd, est)
    gt = metrics.centroid_path(video.masks)
    expected = np.linalg.norm(gt - gt.mean(axis=0), axis=-1).mean()  # a frozen object misses the whole motion
    assert static["centroid_err"] == pytest.approx(expected, abs=0.5) and expected > 2.0


def test_object_boxes_cover_every_shape():
    video = bench.task_video(bench.TASKS[1], frames=3, size=64)
    boxes = bench.object_boxes(video)
    for shape in ("circle", "square", "triangle"):
        for (x, y), box in zip(video.positions, boxes):
            _, mask = render_frame("red", shape, list(BACKGROUNDS)[0], (float(x), float(y)), video.radius, 64)
            assert not (mask & ~box).any()


def test_bench_runs_two_tasks_with_tiny_model(tmp_path, tiny, monkeypatch):
    from attentionflow.pipeline import AttentionFlowPipeline

    pipe = AttentionFlowPipeline.from_components(tiny, device="cpu")
    calls = []
    real_edit = pipe.edit

    inversions = []
    real_invert = pipe.invert

    def recording_edit(*args, **kwargs):
        frames, plan, inversion = args  # edit(frames, plan, inversion)
        calls.append((plan.p2p, plan.mmi, plan.settings.num_inference_steps))
        out = real_edit(*args, **kwargs)
        assert out.inversion_reused and inversion is inversions[-1]  # the task's shared inversion
        return out

    def recording_invert(*args, **kwargs):
        inversions.append(real_invert(*args, **kwargs))
        return inversions[-1]

    monkeypatch.setattr(pipe, "edit", recording_edit)
    monkeypatch.setattr(pipe, "invert", recording_invert)
    monkeypatch.setattr(AttentionFlowPipeline, "from_pretrained", classmethod(lambda cls, *a, **k: pipe))
    out = tmp_path / "bench"
    argv = ["bench", "quality", "--suite", "single", "--tasks", "2", "--steps", "2", "--frames", "3", "--size", "16",
            "--out", str(out), "-q"]
    assert main(argv) == 0
    assert len(calls) == 2 * 3 and all(steps == 2 for *_, steps in calls)
    assert len(inversions) == 2  # one inversion per task, shared by its three methods
    regen, p2p, mmi = calls[:3]
    assert regen[0].cross_replace_steps == 0.0 and regen[0].self_replace_steps == 0.0 and not regen[1].enabled
    assert p2p[0].cross_replace_steps == 0.8 and p2p[0].self_replace_steps == 0.4 and not p2p[1].enabled
    assert mmi[1].enabled and mmi[1].motion_words == ["moving"]

    report = json.loads((out / "quality.json").read_text())
    assert report["settings"]["tasks"] == 2 and report["settings"]["steps"] == 2
    assert [r["kind"] for r in report["tasks"]] == ["colour", "shape"]
    for name in ("regen", "p2p", "p2p+mmi"):
        row = report["summary"][name]
        assert 0.0 <= row["success"] <= 1.0 and 0.0 <= row["full"] <= 1.0
        assert 0.0 <= row["attn_loc"] <= 1.0 and row["warp_error"] >= 0.0
        per_task = [r["methods"][name]["success"] for r in report["tasks"]]
        assert row["success"] == pytest.approx(np.mean(per_task))
    assert 0.0 <= report["summary"]["p2p+mmi"]["attn_loc_before_injection"] <= 1.0
    md = (out / "quality.md").read_text()
    assert "**2 DDIM steps**" in md and "3 frames of 16x16" in md
    for label in ("(a) inversion + regeneration", "(b) prompt-to-prompt", "(c) prompt-to-prompt + MMI"):
        assert f"| {label} |" in md
    assert "## Closing note" in md and "Model: embedded toy model" in md
    # its own earlier report is replaced only with --overwrite (issue 28, item 11)
    assert main(argv) == 2 and (out / "quality.md").read_text() == md
    assert main(argv + ["--overwrite"]) == 0


def test_motion_suite_runs_its_four_methods_on_two_tasks(tmp_path, tiny, monkeypatch):
    from attentionflow.evaluation.bench.motion import MOTION_TASKS
    from attentionflow.pipeline import AttentionFlowPipeline

    pipe = AttentionFlowPipeline.from_components(tiny, device="cpu")
    plans = []
    real_edit = pipe.edit

    def recording_edit(frames, plan, inversion=None, **kwargs):
        plans.append(plan)
        return real_edit(frames, plan, inversion, **kwargs)

    monkeypatch.setattr(pipe, "edit", recording_edit)
    monkeypatch.setattr(AttentionFlowPipeline, "from_pretrained", classmethod(lambda cls, *a, **k: pipe))
    out = tmp_path / "bench"
    argv = ["bench", "quality", "--suite", "motion", "--tasks", "2", "--steps", "2", "--frames", "3", "--size", "32",
            "--out", str(out), "-q"]
    assert main(argv) == 0
    assert len(plans) == 2 * 4
    p2p, blend, mmi, region = plans[:4]
    assert p2p.p2p.edit_region == "all" and not p2p.mmi.enabled and p2p.p2p.blend_words is None
    assert blend.p2p.blend_words == ["circle", "circle"] and not blend.mmi.enabled  # task 1 recolours a red circle
    assert mmi.mmi.enabled and mmi.p2p.edit_region == "all"
    assert region.mmi.enabled and region.p2p.edit_region == "moving"
    report = json.loads((out / "quality.json").read_text())
    motion = report["motion"]
    assert [r["task"] for r in motion["tasks"]] == [t.name for t in MOTION_TASKS[:2]]
    for name in ("p2p", "p2p+blend", "p2p+mmi", "p2p+mmi+region"):
        per_task = [r["methods"][name]["success"] for r in motion["tasks"]]
        assert motion["summary"][name]["success"] == pytest.approx(np.mean(per_task))
        for r in motion["tasks"]:
            s = r["methods"][name]
            assert s["success"] <= min(s["mover"], s["distractors"])  # success needs both
    md = (out / "quality.md").read_text()
    assert "## Motion decides" in md and "| (d) P2P + MMI + edit_region |" in md


def test_bad_settings_exit_2(capsys):
    assert main(["bench", "quality", "--tasks", "0", "-q"]) == 2
    assert "--tasks 0" in capsys.readouterr().err
    assert main(["bench", "quality", "--frames", "1", "-q"]) == 2
    assert main(["bench", "quality", "--size", "16", "-q"]) == 2
    assert "--suite single" in capsys.readouterr().err


def test_partial_results_after_each_task(tiny):
    from attentionflow.pipeline import AttentionFlowPipeline

    pipe = AttentionFlowPipeline.from_components(tiny, device="cpu")
    seen = []
    report = bench.run_quality_bench(pipe, bench.BenchSettings(tasks=2, steps=1, frames=2, size=16), progress=False,
                                     on_task=lambda records: seen.append([r["task"] for r in records]))
    assert seen == [[bench.TASKS[0].name], [bench.TASKS[0].name, bench.TASKS[1].name]]
    assert [r["task"] for r in report["tasks"]] == seen[-1]


@pytest.mark.parametrize("name", ["quality.md", "quality.json", "quality.partial.json"])
def test_bench_quality_never_overwrites_a_users_file(tmp_path, capsys, name):
    """Issue 28, item 11: a user's quality.md / quality.json in --out is refused before any work, with and without
    --overwrite, and keeps every byte."""
    import hashlib

    out = tmp_path / "b"
    out.mkdir()
    (out / name).write_text("my own notes\n")
    before = hashlib.sha256((out / name).read_bytes()).hexdigest()
    for extra in ([], ["--overwrite"]):
        assert main(["bench", "quality", "--out", str(out), "-q", *extra]) == 2
        err = capsys.readouterr().err
        assert "is not a report of 'attentionflow bench quality'" in err and name in err
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == before
