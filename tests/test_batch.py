"""``attentionflow batch``: job collection, round-robin shards, resume, failures, summary, 2 real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from attentionflow.commands.batch import BatchJob, collect_jobs, run_batch, shard
from attentionflow.errors import InputError

SOURCE = "a red circle is moving on the road"
TARGET = "a blue circle is moving on the road"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    """A 3-frame 64x64 toy clip as a PNG folder."""
    from attentionflow.io.writers import write_frames
    from attentionflow.toyworld import make_video

    folder = tmp_path_factory.mktemp("batch_clip") / "clip"
    write_frames(make_video(SOURCE, frames=3, size=64, seed=0).frames, folder)
    return folder


def job_dict(video: Path | str, **extra) -> dict:
    """A tiny, fast edit job on the embedded toy model (2 steps, no null-text, 3 frames of 64x64)."""
    data = {
        "pretrained_model_path": "embedded",
        "input_data": {"video_path": str(video), "prompt": SOURCE, "n_sample_frames": 3, "width": 64, "height": 64},
        "validation_data": {"prompts": [TARGET], "video_length": 3, "width": 64, "height": 64,
                            "num_inference_steps": 2, "num_inv_steps": 2, "use_null_inv": False},
        "mmi": {"motion_words": ["moving"]},
        "device": "cpu",
    }
    data.update(extra)
    return data


# -------------------------------------------------------------------------------------------------
# collecting jobs (no model)


def test_collect_jobs_from_configs_manifests_and_folders(tmp_path):
    folder = tmp_path / "jobs"
    folder.mkdir()
    (folder / "b_single.yaml").write_text(yaml.safe_dump(job_dict("v.mp4")))
    (folder / "a_lines.jsonl").write_text(
        json.dumps(job_dict("x.mp4", name="first")) + "\n\n"
        + "{not json\n"
        + json.dumps(job_dict("y.mp4", seed=5)) + "\n")
    (folder / "notes.txt").write_text("ignored: not a job file")
    manifest = tmp_path / "manifest.yaml"
    defaults = job_dict("d.mp4")
    manifest.write_text(yaml.safe_dump({
        "defaults": defaults,
        "jobs": [{"name": "merged", "input_data": {"prompt": "a red square is moving on the road"}},
                 {"validation_data": {"num_inference_steps": 3}},  # num_inv_steps stays 2: invalid
                 {"bogus_key": 1}],
    }))
    listed = tmp_path / "list.yaml"
    listed.write_text(yaml.safe_dump([job_dict("l.mp4", output_dir=str(tmp_path / "shared")),
                                      job_dict("m.mp4", output_dir=str(tmp_path / "shared"))]))

    jobs = collect_jobs([str(folder), str(manifest), str(listed)], out_root=tmp_path / "outs")

    names = [j.name for j in jobs]
    # files sorted by path (jobs/a_lines.jsonl, jobs/b_single.yaml, list.yaml, manifest.yaml), manifest order kept
    assert names == ["first", "a_lines-001", "a_lines-002", "b_single", "list-000", "list-001",
                     "merged", "manifest-001", "manifest-002"]
    assert [j.index for j in jobs] == list(range(9))
    by = {j.name: j for j in jobs}
    assert by["first"].config.input_data.video_path == str(folder / "x.mp4")  # relative to its job file
    assert by["first"].output_dir == str(tmp_path / "outs" / "first")
    assert by["a_lines-001"].error is not None and "a_lines.jsonl:3" in by["a_lines-001"].error
    assert by["a_lines-002"].config.seed == 5 and by["a_lines-002"].source.endswith("a_lines.jsonl:4")
    assert by["b_single"].config.input_data.video_path == str(folder / "v.mp4")
    # defaults are deep-merged: the job's prompt replaces the default one, the rest of input_data stays
    merged = by["merged"].config
    assert merged.input_data.prompt == "a red square is moving on the road"
    assert merged.input_data.video_path == str(tmp_path / "d.mp4") and merged.input_data.width == 64
    assert "num_inv_steps" in by["manifest-001"].error
    assert "bogus_key" in by["manifest-002"].error
    # two jobs writing one folder: the later one is refused, the first one kept
    assert by["list-000"].error is None and by["list-000"].output_dir == str(tmp_path / "shared")
    assert "also used by job 'list-000'" in by["list-001"].error


def test_collect_jobs_overrides_and_bad_paths(tmp_path):
    cfg = tmp_path / "one.yml"
    cfg.write_text(yaml.safe_dump(job_dict("v.mp4", output_dir=str(tmp_path / "o"))))
    (job,) = collect_jobs([cfg], model="/some/model", device="cuda:3")
    assert job.config.pretrained_model_path == "/some/model" and job.config.device == "cuda:3"
    assert job.output_dir == str(tmp_path / "o")  # an explicit output_dir is kept
    with pytest.raises(InputError, match="missing.yaml"):
        collect_jobs([tmp_path / "missing.yaml"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty"):
        collect_jobs([tmp_path / "empty"])
    with pytest.raises(InputError, match="unsupported extension"):
        (tmp_path / "x.txt").write_text("")
        collect_jobs([tmp_path / "x.txt"])


@pytest.mark.parametrize("n_jobs,world", [(7, 3), (2, 4), (5, 1)])
def test_shard_is_round_robin_and_covers_every_job_once(n_jobs, world):
    jobs = [BatchJob(index=i, name=f"j{i}", source="s") for i in range(n_jobs)]
    shares = [[j.index for j in shard(jobs, r, world)] for r in range(world)]
    flat = sorted(i for s in shares for i in s)
    assert flat == list(range(n_jobs))  # every job exactly once
    for r, share in enumerate(shares):
        assert all(i % world == r for i in share)
    with pytest.raises(ValueError):
        shard(jobs, world, world)


# -------------------------------------------------------------------------------------------------
# running on one process


def test_run_batch_records_failures_resumes_and_loads_the_model_once(tmp_path, clip_dir, monkeypatch):
    from attentionflow.pipeline import AttentionFlowPipeline

    loads: list[str] = []
    real = AttentionFlowPipeline.from_pretrained.__func__

    def counting(cls, path, **kwargs):
        loads.append(path)
        return real(cls, path, **kwargs)

    monkeypatch.setattr(AttentionFlowPipeline, "from_pretrained", classmethod(counting))
    manifest = tmp_path / "jobs.jsonl"
    lines = [job_dict(clip_dir, name="good1"),
             job_dict(tmp_path / "missing.mp4", name="no_video"),
             job_dict(clip_dir, name="good2", seed=7),
             job_dict(clip_dir, name="bad_word", mmi={"motion_words": ["flying"]})]
    manifest.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    jobs = collect_jobs([manifest], out_root=tmp_path / "out")
    summary_dir = tmp_path / "summary"

    summary = run_batch(jobs, summary_dir=summary_dir, progress=False, rank=0, world_size=1)

    status = {r.job: r.status for r in summary.results}
    assert status == {"good1": "done", "no_video": "failed", "good2": "done", "bad_word": "failed"}
    errors = {r.job: r.error for r in summary.results}
    assert "missing.mp4" in errors["no_video"] and "flying" in errors["bad_word"]
    assert len(loads) == 1  # two successful jobs, one model load
    for name in ("good1", "good2"):
        manifest_json = json.loads((tmp_path / "out" / name / "manifest.json").read_text())
        assert manifest_json["command"] == "batch"
        # good2 edits the same clip with the same source prompt and settings (only the seed differs):
        # it starts from good1's inversion
        assert manifest_json["inversion"]["reused"] is (name == "good2")
        assert (tmp_path / "out" / name / "grid.mp4").is_file()
    assert not (tmp_path / "out" / "no_video").exists() and not (tmp_path / "out" / "bad_word").exists()
    data = json.loads((summary_dir / "batch_summary.json").read_text())
    assert data["counts"] == {"done": 2, "skipped": 0, "failed": 2}
    assert [(j["job"], j["status"]) for j in data["jobs"]] == [
        ("good1", "done"), ("no_video", "failed"), ("good2", "done"), ("bad_word", "failed")]
    md = (summary_dir / "batch_summary.md").read_text()
    assert "| job | status | time (s) | output folder |" in md
    assert "| 2 | good2 | done |" in md and str(tmp_path / "out" / "good2") in md

    # resume: complete jobs are skipped without loading a model or touching their outputs
    stamp = (tmp_path / "out" / "good1" / "manifest.json").stat().st_mtime_ns
    jobs = collect_jobs([manifest], out_root=tmp_path / "out")
    again = run_batch(jobs, summary_dir=summary_dir, progress=False, rank=0, world_size=1)
    assert {r.job: r.status for r in again.results} == {
        "good1": "skipped", "no_video": "failed", "good2": "skipped", "bad_word": "failed"}
    assert len(loads) == 1
    assert (tmp_path / "out" / "good1" / "manifest.json").stat().st_mtime_ns == stamp
    assert json.loads((summary_dir / "batch_summary.json").read_text())["counts"]["skipped"] == 2


def test_each_job_reads_its_video_and_loads_its_tokenizer_once(tmp_path, clip_dir, monkeypatch):
    import attentionflow.jobs as jobs_mod
    import attentionflow.models.tokenizer as tok_mod

    reads, tokenizers = [], []
    real_read, real_tok = jobs_mod.read_frames, tok_mod.load_tokenizer
    monkeypatch.setattr(jobs_mod, "read_frames", lambda *a, **k: reads.append(a) or real_read(*a, **k))
    monkeypatch.setattr(tok_mod, "load_tokenizer", lambda *a, **k: tokenizers.append(a) or real_tok(*a, **k))
    jobs = collect_jobs([_write_job(tmp_path, job_dict(clip_dir, name="one"))], out_root=tmp_path / "out")
    summary = run_batch(jobs, summary_dir=None, progress=False, rank=0, world_size=1)
    assert [r.status for r in summary.results] == ["done"]
    assert len(reads) == 1 and len(tokenizers) == 1


def _write_job(folder: Path, data: dict) -> Path:
    path = folder / "job.json"
    path.write_text(json.dumps(data))
    return path


def test_cli_batch_exit_codes(tmp_path, clip_dir, capsys):
    from attentionflow.commands.cli import main

    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump(job_dict(tmp_path / "nothing.mp4")))
    code = main(["batch", str(cfg), "--summary-dir", str(tmp_path), "--out-root", str(tmp_path / "o")])
    assert code == 1
    err = capsys.readouterr().err
    assert "1 failed" in err and "nothing.mp4" in err
    assert json.loads((tmp_path / "batch_summary.json").read_text())["jobs"][0]["status"] == "failed"
    assert main(["batch", str(tmp_path / "absent.yaml")]) == 2
    assert "absent.yaml" in capsys.readouterr().err


# -------------------------------------------------------------------------------------------------
# two real processes


@pytest.mark.slow
def test_batch_on_two_cpu_processes_shares_the_jobs(tmp_path, clip_dir):
    """`accelerate launch` with 2 CPU processes: both ranks work, every job runs exactly once."""
    jobs = [job_dict(clip_dir, name=f"job{i}") for i in range(4)]
    jobs.insert(3, job_dict(tmp_path / "missing.mp4", name="broken"))
    manifest = tmp_path / "jobs.yaml"
    manifest.write_text(yaml.safe_dump({"jobs": jobs}))
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", ACCELERATE_USE_CPU="1",
               HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("WORLD_SIZE", None)
    # `--cpu --num_processes 2` would silently start one process; --multi_gpu + ACCELERATE_USE_CPU gives two.
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
           str(_free_port()), "-m", "attentionflow", "batch", str(manifest), "--summary-dir", str(tmp_path),
           "--out-root", str(tmp_path / "out"), "-q"]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    summary_file = tmp_path / "batch_summary.json"
    assert summary_file.is_file(), proc.stderr[-3000:]
    assert proc.returncode != 0  # one job failed
    data = json.loads(summary_file.read_text())
    assert data["world_size"] == 2
    rows = data["jobs"]
    assert sorted(r["index"] for r in rows) == list(range(5))  # each job reported exactly once
    assert {r["job"]: r["status"] for r in rows} == {
        "job0": "done", "job1": "done", "job2": "done", "broken": "failed", "job3": "done"}
    for r in rows:
        assert r["rank"] == r["index"] % 2  # round-robin shares
    assert {r["rank"] for r in rows if r["status"] == "done"} == {0, 1}  # both processes edited videos
    for i in range(4):
        out = tmp_path / "out" / f"job{i}"
        assert json.loads((out / "manifest.json").read_text())["command"] == "batch"
    leftovers = [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]
    assert leftovers == []  # no second, half-finished attempt at any job


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("name", ["../../escaped", "a/b", "..", "x\\y", "bad\nname"])
def test_a_job_name_that_would_leave_the_out_root_is_refused(tmp_path, name):
    """Issue 28, item 14: the job's folder is <out-root>/<name>, so a name must be one plain folder name."""
    listed = tmp_path / "jobs.jsonl"
    listed.write_text(json.dumps(job_dict("v.mp4", name=name)) + "\n" + json.dumps(job_dict("w.mp4", name="fine")))
    bad, good = collect_jobs([listed], out_root=tmp_path / "root" / "outs")
    assert bad.config is None and "is not a plain folder name" in bad.error and "\n" not in bad.error
    assert good.error is None and Path(good.config.output_dir) == tmp_path / "root" / "outs" / "fine"
