"""``attentionflow evaluate``: pairs of videos, edit output folders, masks, CLIP with a tiny random model."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch

from attentionflow.commands.cli import main
from attentionflow.evaluation import evaluate as ev
from attentionflow.io.writers import write_frames, write_gif, write_mp4
from attentionflow.toyworld import make_video

SOURCE = "a red circle is moving on the road"
TARGET = "a blue circle is moving on the road"


@pytest.fixture(scope="module")
def toy():
    """Source toy video and its colour-swapped twin (same seed: same path, texture and object pixels)."""
    return make_video(SOURCE, frames=6, size=32, seed=4), make_video(TARGET, frames=6, size=32, seed=4)


def _report(tmp_path, *argv):
    out = tmp_path / "scores.json"
    assert main(["evaluate", *map(str, argv), "--json", str(out), "--overwrite", "-q"]) == 0  # its own report
    return json.loads(out.read_text())


def test_identical_videos_frames_vs_mp4_and_absent_clip(tmp_path, toy, capsys):
    src, _ = toy
    write_frames(src.frames, tmp_path / "src")
    write_frames(src.frames, tmp_path / "same")
    report = _report(tmp_path, tmp_path / "src", tmp_path / "same")
    m = report["results"][0]["metrics"]
    assert m["psnr"] == "inf" and m["ssim"] == pytest.approx(1.0)
    assert m["motion_epe"] == pytest.approx(0.0, abs=1e-6) and m["flicker"] == pytest.approx(0.0, abs=1e-9)
    assert m["warp_error"] == pytest.approx(report["source_warp_error"])
    assert all(m[k] is None for k in ("clip_score", "clip_frame_consistency", "clip_frame_accuracy"))
    assert m["psnr_outside"] is None  # no mask given
    assert "no --clip model folder given" in report["absent"]["clip_score"]
    table = capsys.readouterr().out
    assert "PSNR" in table and "absent (no --clip model folder given)" in table
    # an mp4 (lossy H.264) of the same frames: close, not identical
    write_mp4(src.frames, tmp_path / "same.mp4")
    m2 = _report(tmp_path, tmp_path / "src", tmp_path / "same.mp4")["results"][0]["metrics"]
    assert 30.0 < m2["psnr"] < math.inf
    write_gif(src.frames, tmp_path / "same.gif")  # palette-quantised (lossless for few colours)
    m3 = _report(tmp_path, tmp_path / "src", tmp_path / "same.gif")["results"][0]["metrics"]
    assert m3["psnr"] == "inf" or m3["psnr"] > 25.0


def test_mask_restricts_psnr_npy_and_png_masks(tmp_path, toy):
    src, tgt = toy
    import cv2

    # the colour swap changes only object pixels (plus anti-aliased edges: dilate the masks by one pixel)
    cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    masks = np.stack([cv2.dilate(m.astype(np.uint8), cross).astype(bool) for m in src.masks])
    assert (src.frames[~masks] == tgt.frames[~masks]).all()
    write_frames(src.frames, tmp_path / "src")
    write_frames(tgt.frames, tmp_path / "edit")
    np.save(tmp_path / "masks.npy", masks)
    write_frames(np.repeat(masks[..., None].astype(np.uint8) * 255, 3, axis=-1), tmp_path / "masks")
    for mask in (tmp_path / "masks.npy", tmp_path / "masks"):
        m = _report(tmp_path, tmp_path / "src", tmp_path / "edit", "--mask", mask)["results"][0]["metrics"]
        assert m["psnr"] < 30.0
        assert m["psnr_outside"] == "inf" and m["ssim_outside"] > m["ssim"]


def test_edited_of_other_size_is_resized(tmp_path, toy):
    src, _ = toy
    write_frames(src.frames, tmp_path / "src")
    big = np.stack([np.kron(f, np.ones((2, 2, 1), np.uint8)) for f in src.frames])  # (F, 64, 64, 3)
    write_frames(big, tmp_path / "big")
    report = _report(tmp_path, tmp_path / "src", tmp_path / "big")
    assert report["size"] == {"width": 32, "height": 32}
    assert report["results"][0]["metrics"]["psnr"] == "inf"  # area resize exactly undoes 2x2 replication


def test_shuffled_frames_raise_warp_error(tmp_path, toy):
    src, _ = toy
    write_frames(src.frames, tmp_path / "src")
    write_frames(src.frames[[0, 3, 1, 5, 2, 4]], tmp_path / "shuffled")
    write_frames(src.frames, tmp_path / "same")
    good = _report(tmp_path, tmp_path / "src", tmp_path / "same")["results"][0]["metrics"]
    bad = _report(tmp_path, tmp_path / "src", tmp_path / "shuffled")["results"][0]["metrics"]
    assert bad["warp_error"] > 3 * good["warp_error"]
    assert good["motion_epe"] == pytest.approx(0.0, abs=1e-6) and bad["motion_epe"] > 0.2
    assert bad["psnr"] < 30.0  # frame 0 is in place, the others are not


def test_user_errors_exit_2(tmp_path, toy, capsys):
    src, _ = toy
    write_frames(src.frames, tmp_path / "src")
    write_frames(src.frames[:4], tmp_path / "short")
    assert main(["evaluate", str(tmp_path / "src"), str(tmp_path / "short"), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert "4 frames but the source has 6" in err and "\n" not in err
    assert main(["evaluate", str(tmp_path / "src"), "-q"]) == 2  # a plain video alone is not an output folder
    assert "not an edit output folder" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "src"), str(tmp_path / "src"), "--clip", str(tmp_path / "nope"),
                 "-q"]) == 2
    assert "CLIP folder" in capsys.readouterr().err
    np.save(tmp_path / "m.npy", np.zeros((3, 32, 32), bool))
    assert main(["evaluate", str(tmp_path / "src"), str(tmp_path / "src"), "--mask", str(tmp_path / "m.npy"),
                 "-q"]) == 2
    assert "3 frames" in capsys.readouterr().err


def _fake_output_folder(folder, src, tgt):
    """The layout attentionflow.jobs writes: frames/<name>/, <name>.mp4, manifest.json."""
    write_frames(src.frames, folder / "frames" / "input")
    write_frames(src.frames, folder / "frames" / "reconstruction")
    write_mp4(tgt.frames, folder / "edit_01_a-blue-circle.mp4")  # no frames/ folder: the mp4 is used
    manifest = {"command": "edit", "source_prompt": SOURCE,
                "edits": [{"prompt": TARGET, "mode": "replace", "outputs": "edit_01_a-blue-circle"}]}
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_output_folder_mode(tmp_path, toy):
    src, tgt = toy
    _fake_output_folder(tmp_path / "run", src, tgt)
    inputs = ev.find_inputs(str(tmp_path / "run"))
    assert inputs.source.endswith("input") and inputs.source_prompt == SOURCE
    assert [(e.name, e.prompt) for e in inputs.edited] == [("reconstruction", SOURCE),
                                                          ("edit_01_a-blue-circle", TARGET)]
    assert inputs.edited[1].path.endswith(".mp4")
    report = _report(tmp_path, tmp_path / "run")
    rec, edit = (r["metrics"] for r in report["results"])
    assert rec["psnr"] == "inf"
    assert edit["psnr"] < 30.0


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory, clip_tokenizer_dir):
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    cfg = CLIPConfig(
        text_config=dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_attention_heads=2,
                         num_hidden_layers=2, max_position_embeddings=77),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_attention_heads=2, num_hidden_layers=2,
                           image_size=32, patch_size=8),
        projection_dim=16)
    folder = tmp_path_factory.mktemp("tiny_clip")
    CLIPModel(cfg).save_pretrained(folder)
    for f in clip_tokenizer_dir.iterdir():
        shutil.copy(f, folder / f.name)
    return folder


def test_clip_scorer_matches_transformers(tiny_clip_dir, toy):
    from transformers import CLIPModel

    scorer = ev.ClipScorer.from_folder(tiny_clip_dir)
    model = CLIPModel.from_pretrained(tiny_clip_dir).eval()
    src, _ = toy
    ids = scorer.tokenizer([TARGET], padding="max_length", max_length=77, return_tensors="pt").input_ids
    pixels = torch.from_numpy(np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32))
    with torch.no_grad():
        ref = model(input_ids=ids, pixel_values=pixels)
        mine_img = scorer.model.visual_projection(scorer.model.vision_model(pixel_values=pixels).pooler_output)
    unit = torch.nn.functional.normalize  # CLIPModel's forward returns unit-length embeddings
    assert torch.allclose(unit(scorer.text_embedding(TARGET), dim=-1), ref.text_embeds[0], atol=1e-5)
    assert torch.allclose(unit(mine_img, dim=-1), ref.image_embeds, atol=1e-5)
    assert scorer.image_embeddings(src.frames).shape == (len(src.frames), 16)


def test_clip_metrics_via_cli(tmp_path, tiny_clip_dir, toy):
    src, tgt = toy
    write_frames(src.frames, tmp_path / "src")
    write_frames(tgt.frames, tmp_path / "edit")
    write_frames(np.repeat(tgt.frames[:1], len(tgt.frames), axis=0), tmp_path / "static")
    m = _report(tmp_path, tmp_path / "src", tmp_path / "edit", "--clip", tiny_clip_dir, "--prompt", TARGET,
                "--source-prompt", SOURCE)["results"][0]["metrics"]
    assert -100.0 <= m["clip_score"] <= 100.0
    assert -1.0 <= m["clip_frame_consistency"] < 1.0 - 1e-6  # frames differ
    assert m["clip_frame_accuracy"] in [i / len(src.frames) for i in range(len(src.frames) + 1)]
    static = _report(tmp_path, tmp_path / "src", tmp_path / "static", "--clip", tiny_clip_dir,
                     "--prompt", TARGET)
    ms = static["results"][0]["metrics"]
    assert ms["clip_frame_consistency"] == pytest.approx(1.0, abs=1e-5)
    assert ms["clip_frame_accuracy"] is None and "source-prompt" in static["absent"]["clip_frame_accuracy"]


def test_clip_in_folder_mode_uses_manifest_prompts(tmp_path, tiny_clip_dir, toy):
    src, tgt = toy
    _fake_output_folder(tmp_path / "run", src, tgt)
    report = _report(tmp_path, tmp_path / "run", "--clip", tiny_clip_dir)
    rec, edit = (r["metrics"] for r in report["results"])
    assert rec["clip_score"] is not None and rec["clip_frame_accuracy"] is None  # reconstruction: no accuracy
    assert edit["clip_frame_accuracy"] is not None


def test_real_edit_output_folder(tmp_path, tiny_model_dir, toy):
    """End to end: an 'edit' run (tiny random model) then 'evaluate' on its output folder."""
    src, _ = toy
    write_frames(src.frames, tmp_path / "clip")
    out = tmp_path / "run"
    assert main(["edit", str(tmp_path / "clip"), "--source", SOURCE, "--target", TARGET, "--model",
                 str(tiny_model_dir), "--out", str(out), "--frames", "4", "--size", "32", "--steps", "2",
                 "--no-mmi", "--quiet", "--device", "cpu"]) == 0
    report = _report(tmp_path, out)
    assert [r["name"] for r in report["results"]] == ["reconstruction", "edit_01_a-blue-circle-is-moving-on-the-road"]
    assert report["frames"] == 4 and report["source_prompt"] == SOURCE
    assert report["results"][1]["prompt"] == TARGET
    for r in report["results"]:
        assert r["path"].endswith(r["name"])  # the lossless PNG frames were used, not the mp4
        assert isinstance(r["metrics"]["psnr"], float) and r["metrics"]["warp_error"] >= 0.0


def _digest(path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("target", ["source", "user-notes", "other-report"])
def test_json_never_overwrites_a_file_it_did_not_write(tmp_path, toy, capsys, target):
    """Issue 28, item 1: ``--json`` naming the source video, a user's file or another command's report is refused
    before any work, with one line, and the file keeps every byte (with and without --overwrite)."""
    src, edited = toy
    write_mp4(src.frames, tmp_path / "src.mp4")
    write_mp4(edited.frames, tmp_path / "edited.mp4")
    victim = {"source": tmp_path / "src.mp4", "user-notes": tmp_path / "notes.json",
              "other-report": tmp_path / "bench.json"}[target]
    if target == "user-notes":
        victim.write_text('{"mine": true}')
    if target == "other-report":
        victim.write_text('{"report": "attentionflow bench motion"}')
    before = _digest(victim)
    for extra in ([], ["--overwrite"]):
        code = main(["evaluate", str(tmp_path / "src.mp4"), str(tmp_path / "edited.mp4"), "--json", str(victim),
                     "-q", *extra])
        err = capsys.readouterr().err.strip()
        assert code == 2 and "is not a report of 'attentionflow evaluate'" in err and "\n" not in err, err
        assert _digest(victim) == before


def test_json_replaces_its_own_report_only_with_overwrite(tmp_path, toy, capsys):
    src, edited = toy
    write_mp4(src.frames, tmp_path / "src.mp4")
    write_mp4(edited.frames, tmp_path / "edited.mp4")
    argv = ["evaluate", str(tmp_path / "src.mp4"), str(tmp_path / "edited.mp4"), "--json", str(tmp_path / "s.json"),
            "-q"]
    assert main(argv) == 0
    first = json.loads((tmp_path / "s.json").read_text())
    assert first["report"] == "attentionflow evaluate"
    assert main(argv) == 2 and "add --overwrite" in capsys.readouterr().err
    assert main(argv + ["--overwrite"]) == 0
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left
