"""edit_region: multi-object toy scenes, moving-object masks from motion maps, the latent/pixel blend, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attentionflow.attention.base import AttentionState
from attentionflow.attention.blend import RegionBlend, region_blend_mask
from attentionflow.config import EditConfig, MMIConfig, P2PConfig
from attentionflow.errors import ConfigError, InputError
from attentionflow.flow.motion import MotionOptions, motion_maps
from attentionflow.flow.regions import check_region, motion_for_edit
from attentionflow.toyworld.world import COLOURS, ObjectSpec, make_scene
from tests.synthetic import MovingSquare, iou, make_video

LOOKALIKE_SCENES = [
    ("road", [ObjectSpec("red", "circle", True), ObjectSpec("red", "circle")], 1),
    (
        "grass",
        [ObjectSpec("yellow", "square", True), ObjectSpec("yellow", "square"), ObjectSpec("yellow", "square")],
        2,
    ),
    ("water", [ObjectSpec("white", "triangle", True), ObjectSpec("white", "triangle")], 3),
    ("sand", [ObjectSpec("blue", "circle", True), ObjectSpec("blue", "circle"), ObjectSpec("red", "square")], 4),
]


@pytest.mark.parametrize(("background", "specs", "seed"), LOOKALIKE_SCENES)
def test_scene_masks_flow_and_labels_match_the_rendered_frames(background, specs, seed) -> None:
    scene = make_scene(specs, background, frames=6, size=64, seed=seed)
    assert scene.frames.shape == (6, 64, 64, 3)
    assert scene.caption == f"a {specs[0].colour} {specs[0].shape} is moving on the {background}"
    union = np.zeros((6, 64, 64), int)
    for spec, obj in zip(specs, scene.objects):
        assert (obj.colour, obj.shape, obj.moving) == (spec.colour, spec.shape, spec.moving)
        # every mask pixel shows the object's colour (coverage >= 0.5 blends at most half of the background in)
        pix = scene.frames[obj.masks].astype(float)  # (P, 3)
        assert len(pix) > 0
        assert np.median(np.linalg.norm(pix - np.array(COLOURS[obj.colour]), axis=1)) < 10
        union += obj.masks
        steps = np.diff(obj.positions, axis=0)  # (5, 2)
        if obj.moving:
            assert np.linalg.norm(steps, axis=1).min() > 1.0
            for t in range(5):  # the flow on the mover's pixels is its displacement, and the mask moves with it
                np.testing.assert_allclose(
                    scene.flows[t][obj.masks[t]], np.broadcast_to(steps[t], (obj.masks[t].sum(), 2))
                )
        else:
            assert np.abs(steps).max() == 0 and np.abs(scene.flows[:, obj.masks[0]]).max() == 0
            assert (obj.masks == obj.masks[:1]).all()
    assert union.max() == 1  # objects never overlap
    assert (np.abs(scene.flows).sum(-1) > 0).sum() <= scene.moving_masks[:-1].sum()  # flow only on movers
    for a in range(len(specs)):  # boxes (radius + 2 px) keep apart on every frame
        for b in range(a + 1, len(specs)):
            assert not (scene.objects[a].boxes() & scene.objects[b].boxes()).any()


def test_scene_rejects_what_cannot_fit_and_bad_names() -> None:
    many = [ObjectSpec("red", "circle", True)] + [ObjectSpec("red", "circle") for _ in range(12)]
    with pytest.raises(InputError, match="do not fit"):
        make_scene(many, "road", frames=8, size=64, radius_range=(0.2, 0.2))
    with pytest.raises(Exception, match="valid: red"):
        make_scene([ObjectSpec("pink", "circle", True)], "road")


@pytest.mark.parametrize(("background", "specs", "seed"), LOOKALIKE_SCENES)
def test_moving_mask_finds_the_mover_among_static_lookalikes(background, specs, seed) -> None:
    scene = make_scene(specs, background, frames=8, size=64, seed=seed, radius_range=(0.13, 0.13))
    masks = motion_maps(scene.frames).masks
    truth = scene.moving_masks
    ious = [iou(masks[i], truth[i]) for i in range(8)]
    assert np.mean(ious) >= 0.75, ious  # measured 0.78-0.94 (the flow's bleed into a flat background at 64 px)
    assert all(m.any() for m in masks)  # never an empty frame while the mover moves
    for obj in scene.objects[1:]:  # no static look-alike pixel joins the mask
        assert (masks & obj.masks).sum() <= 0.05 * obj.masks.sum()


def test_moving_mask_under_a_camera_pan() -> None:
    # The background pans 2 px/frame; a still-in-the-world square pans with it; the mover goes 4 px/frame west.
    frames, masks = make_video(128, 6, (MovingSquare(70, 20, 30, -4, 0), MovingSquare(20, 80, 30, 2, 0)),
                               pan=(2, 0), seed=2)
    region = motion_maps(frames).masks  # camera_motion homography (default)
    ious = [iou(region[i], masks[i, 0]) for i in range(6)]
    assert np.mean(ious) >= 0.8, ious
    assert (region & masks[:, 1]).sum() <= 0.05 * masks[:, 1].sum()


def test_direction_guidance_picks_the_mover_going_that_way() -> None:
    scene = make_scene([ObjectSpec("red", "circle", True, direction=0.0), ObjectSpec("red", "circle", True, 180.0)],
                       "grass", frames=8, size=64, seed=11, radius_range=(0.13, 0.13))
    east, west = scene.objects
    for direction, want, other in (("E", east, west), ("W", west, east)):
        region = motion_maps(scene.frames, MotionOptions(direction=direction)).masks
        assert np.mean([iou(region[i], want.masks[i]) for i in range(8)]) >= 0.8
        assert (region & other.masks).sum() <= 0.05 * other.masks.sum()


@pytest.mark.parametrize("region", ["moving", "static"])
def test_region_on_a_static_video_or_one_frame_is_a_clear_error(region) -> None:
    still = np.repeat(make_scene([ObjectSpec("red", "circle")], "road", frames=1).frames, 4, axis=0)
    with pytest.raises(InputError, match=f"p2p.edit_region '{region}': no moving object.*set it to all to edit "
                                         "everywhere"):
        motion_for_edit(still, MotionOptions(), mmi=False, region=region)
    with pytest.raises(InputError, match=r"needs at least 2 frames \(motion comes from optical flow between "
                                         r"neighbours\), got 1; use more frames, or set it to all"):
        check_region(region, None, 1)


def test_region_config_errors_name_the_key_and_the_choices() -> None:
    cfg = EditConfig()
    cfg.input_data.video_path, cfg.input_data.prompt, cfg.validation_data.prompts = "x.mp4", "a b", ["a c"]
    cfg.p2p = P2PConfig(edit_region="moved")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="p2p.edit_region 'moved' is invalid; choose from: all, moving, static"):
        cfg.validate()
    cfg.p2p = P2PConfig(edit_region="moving")
    cfg.input_data.n_sample_frames = cfg.validation_data.video_length = 1
    cfg.mmi = MMIConfig(enabled=False)
    with pytest.raises(ConfigError, match="edit_region moving needs at least 2 frames"):
        cfg.validate()
    cfg.input_data.n_sample_frames = cfg.validation_data.video_length = 8
    cfg.p2p = P2PConfig(edit_region="moving", region_dilation=-1)
    with pytest.raises(ConfigError, match="region_dilation must be an integer from 0 to 16"):
        cfg.validate()


def test_region_blend_mask_marks_any_moving_pixel_grows_and_complements() -> None:
    moving = torch.zeros(2, 64, 64, dtype=torch.bool)
    moving[0, 20, 33] = True  # one pixel: latent (5, 8) at 4 pixels per latent pixel
    m = region_blend_mask(moving, (16, 16), "moving", dilation=0)
    assert m.shape == (2, 1, 16, 16) and m.sum() == 1 and m[0, 0, 5, 8] == 1
    grown = region_blend_mask(moving, (16, 16), "moving", dilation=1)
    assert grown[0, 0, 4:7, 7:10].eq(1).all() and grown.sum() == 9
    static = region_blend_mask(moving, (16, 16), "static", dilation=1)
    assert torch.equal(static, 1 - grown)
    assert region_blend_mask(moving, (16, 16), "moving", dilation=0)[1].sum() == 0  # nothing moves in frame 1
    # a latent pixel counts when at least half of its 4x4 pixels move (a lone pixel only when nothing else would)
    moving[0, 20, 33] = False
    moving[0, 8:12, 8:10] = True  # 8 of latent (2, 2)'s 16 pixels
    moving[0, 8:12, 12:13] = True  # 4 of latent (2, 3)'s
    m = region_blend_mask(moving, (16, 16), "moving", dilation=0)
    assert m.sum() == 1 and m[0, 0, 2, 2] == 1


def test_region_blend_keeps_source_latents_outside_and_intersects_with_another_blend() -> None:
    state = AttentionState(num_frames=2, num_branches=3, cfg=True, num_steps=5)
    latents = torch.randn(3 * 2, 4, 8, 8)
    mask = torch.zeros(2, 1, 8, 8)
    mask[:, :, 2:5, 2:5] = 1
    out = RegionBlend(mask).step_end(latents.clone(), state).view(3, 2, 4, 8, 8)
    x = latents.view(3, 2, 4, 8, 8)
    assert torch.equal(out[0], x[0])  # the source branch is untouched
    inside = mask.bool().expand(2, 4, 8, 8)
    for b in (1, 2):
        assert torch.equal(out[b][~inside], x[0][~inside])  # exactly the source's
        torch.testing.assert_close(out[b][inside], x[b][inside])  # x0 + 1 * (xb - x0): the edit, to rounding
    other = torch.zeros(2, 1, 8, 8)
    other[:, :, 3:8, 3:8] = 1
    twice = RegionBlend(mask).step_end(RegionBlend(other).step_end(latents.clone(), state), state).view(3, 2, 4, 8, 8)
    both = (mask * other).bool().expand(2, 4, 8, 8)
    torch.testing.assert_close(twice[1][both], x[1][both])
    assert torch.equal(twice[1][~both], x[0][~both])


# -------------------------------------------------------------------------------------------------
# the edit job


def _scene_clip(tmp_path, frames=4, moving=True):
    from attentionflow.io.writers import write_frames

    scene = make_scene([ObjectSpec("red", "circle", moving), ObjectSpec("red", "circle")], "grass", frames=frames,
                       size=64, seed=3, radius_range=(0.13, 0.13))
    folder = tmp_path / ("clip" if moving else "still")
    write_frames(scene.frames, folder)
    return folder, scene


def _edit_args(clip, model, out, *extra):
    return ["edit", str(clip), "--source", "a red circle is moving on the grass", "--target",
            "a blue circle is moving on the grass", "--model", str(model), "--out", str(out), "--frames", "4",
            "--size", "64", "--steps", "2", "--quiet", "--device", "cpu", *extra]


@pytest.mark.parametrize("region", ["moving", "static"])
def test_edit_region_keeps_the_source_outside_and_writes_its_mask(tiny_model_dir, tmp_path, region) -> None:
    import json

    from attentionflow.commands.cli import main
    from attentionflow.io.video import read_frames

    clip, scene = _scene_clip(tmp_path)
    out = tmp_path / "out"
    assert main(_edit_args(clip, tiny_model_dir, out, "--edit-region", region, "--no-mmi")) == 0
    mask = np.load(out / "motion" / "edit_mask.npy")  # (F, H, W): where the edit may change the frame
    assert mask.shape == (4, 64, 64)
    mover = scene.objects[0].masks
    if region == "moving":
        assert np.mean([iou(mask[i], mover[i]) for i in range(4)]) >= 0.7
    else:
        assert np.mean([iou(~mask[i], mover[i]) for i in range(4)]) >= 0.7
    assert len(list((out / "motion" / "edit_mask").glob("*.png"))) == 4
    assert (out / "motion" / "edit_mask_overlay.gif").is_file() and (
        out / "motion" / "edit_mask_overlay.mp4"
    ).is_file()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["edit_region"]["mode"] == region and manifest["edit_region"]["mask"] == "motion/edit_mask.npy"
    moving_share = np.load(out / "motion" / "edit_mask.npy").mean()
    moving_share = moving_share if region == "moving" else 1 - moving_share
    assert manifest["edit_region"]["moving_share"] == pytest.approx(moving_share, abs=1e-4)
    # moving: pixels outside the latent pixels that the edit mask touches (so farther than 4 px, one latent pixel,
    # from it) are the source branch's: the latents there are the source's, and the decoded edit is pasted inside the
    # region only. static: the kept region is every latent pixel the movers touch, so all their pixels are kept.
    rec = read_frames(out / "frames" / "reconstruction").astype(int)
    edit = read_frames(out / "frames" / "edit_01_a-blue-circle-is-moving-on-the-grass").astype(int)
    import cv2

    near = np.stack([cv2.dilate(m.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool) for m in mask])
    outside = ~near if region == "moving" else ~mask
    assert outside.any()
    assert np.abs(edit - rec)[outside].max() == 0
    if region == "moving":
        assert np.abs(edit - rec)[mask].max() > 0  # and inside, the edit did change something


def test_edit_region_on_a_still_video_exits_2_before_loading_a_model(tmp_path, capsys) -> None:
    from attentionflow.commands.cli import main

    clip, _ = _scene_clip(tmp_path, moving=False)
    out = tmp_path / "out"
    assert main(_edit_args(clip, tmp_path / "no-model-here", out, "--edit-region", "moving")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "no moving object" in err or "model" in err  # the model folder is checked first (cheapest)
    assert not out.exists()


def test_edit_region_error_comes_before_the_model_is_loaded(tiny_model_dir, tmp_path, capsys, monkeypatch) -> None:
    from attentionflow.commands.cli import main
    from attentionflow.pipeline import AttentionFlowPipeline

    def boom(*a, **k):
        raise AssertionError("the model must not be loaded")

    monkeypatch.setattr(AttentionFlowPipeline, "from_pretrained", classmethod(boom))
    clip, _ = _scene_clip(tmp_path, moving=False)
    out = tmp_path / "out"
    assert main(_edit_args(clip, tiny_model_dir, out, "--edit-region", "static")) == 2
    err = capsys.readouterr().err.strip()
    assert "--edit-region (p2p.edit_region) 'static': no moving object" in err and "set it to all" in err
    assert len(err.splitlines()) == 1 and not out.exists()
    with pytest.raises(SystemExit) as exit_info:  # argparse's own one-line usage error
        main(_edit_args(clip, tiny_model_dir, out, "--edit-region", "everything"))
    assert exit_info.value.code == 2
    assert "invalid choice: 'everything' (choose from 'all', 'moving', 'static')" in capsys.readouterr().err


def test_toyworld_cli_renders_a_scene_with_still_objects(tmp_path) -> None:
    from attentionflow.commands.cli import main
    from attentionflow.io.video import read_frames

    out, masks = tmp_path / "scene", tmp_path / "masks"
    argv = ["toyworld", "video", "--caption", "a red circle is moving on the road", "--still", "red circle",
            "--still", "blue square", "--direction", "E", "--frames", "5", "--seed", "4", "--out", str(out),
            "--masks", str(masks)]
    assert main(argv) == 0
    frames = read_frames(out)
    want = make_scene(
        [ObjectSpec("red", "circle", True, 0.0), ObjectSpec("red", "circle"), ObjectSpec("blue", "square")],
        "road",
        frames=5,
        seed=4,
    )
    assert np.array_equal(frames, want.frames)
    assert np.array_equal(read_frames(masks)[..., 0] > 127, want.moving_masks)
    xs = want.objects[0].positions[:, 0]
    assert (np.diff(xs) > 0).all()  # heading east
    assert main(["toyworld", "video", "--still", "red", "--out", str(tmp_path / "bad.gif")]) == 2


def test_moving_mask_covers_the_car_of_a_real_clip() -> None:
    """configs/videos/car-turn.mp4 (a real clip; the camera follows a turning car): the moving mask against a mask
    drawn by hand. tests/data/car-turn-mask.json holds the car's outline on frames 0, 5, 10 and 15, traced by eye as a
    polygon on each frame viewed at 3x with an 8-pixel grid (body, mirrors and wheels, not the shadow)."""
    import json
    from pathlib import Path

    import cv2

    from attentionflow.io.video import read_frames

    root = Path(__file__).resolve().parents[1]
    data = json.loads((root / "tests" / "data" / "car-turn-mask.json").read_text())
    frames = read_frames(root / data["clip"])  # (16, 256, 256, 3)
    region = motion_maps(frames).masks  # default options: DIS, camera compensated
    ious = {}
    for key, polygon in data["polygons"].items():
        truth = np.zeros(frames.shape[1:3], np.uint8)
        cv2.fillPoly(truth, [np.array(polygon, np.int32)], 1)
        ious[key] = iou(region[int(key)], truth.astype(bool))
    assert min(ious.values()) >= 0.6, ious
