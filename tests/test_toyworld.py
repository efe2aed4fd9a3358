"""Toy world: captions, rendering, videos (masks/flow vs motion), judge, tokenizer, CLI, training script."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
from PIL import Image

from attentionflow.errors import AttentionFlowError, InputError, PromptError
from attentionflow.toyworld import (
    BACKGROUNDS,
    COLOURS,
    SHAPES,
    WORLD_WORDS,
    make_video,
    parse_caption,
    random_caption,
    render_frame,
    sample_scene,
)
from attentionflow.toyworld.judge import judge, shape_scores
from attentionflow.toyworld.model import SPLIT_WORDS, build_tokenizer, toy_merges
from attentionflow.toyworld.quality import judge_images, psnr
from tests.safety import tree_hashes


# ----------------------------------------------------------------------------------------- captions
def test_parse_caption_finds_the_three_words():
    assert parse_caption("a red circle is moving on the road") == ("red", "circle", "road")
    assert parse_caption("A Purple triangle is sliding on the WATER") == ("purple", "triangle", "water")


@pytest.mark.parametrize("caption, kind", [
    ("a pink circle is moving on the road", "colour"),
    ("a red car is moving on the road", "shape"),
    ("a red circle is moving on the moon", "background"),
    ("a red blue circle is moving on the road", "colour"),
])
def test_parse_caption_rejects_with_one_line_listing_valid_words(caption, kind):
    with pytest.raises(PromptError) as err:
        parse_caption(caption)
    msg = str(err.value)
    assert "\n" not in msg and kind in msg and isinstance(err.value, AttentionFlowError)
    valid = {"colour": COLOURS, "shape": SHAPES, "background": BACKGROUNDS}[kind]
    assert all(word in msg for word in valid)


def test_random_caption_parses_and_covers_the_world():
    rng = np.random.default_rng(0)
    seen = {parse_caption(random_caption(rng)) for _ in range(2000)}
    assert len(seen) == len(COLOURS) * len(SHAPES) * len(BACKGROUNDS)


# ---------------------------------------------------------------------------------------- rendering
def test_render_frame_paints_the_mask_in_the_object_colour():
    frame, mask = render_frame("blue", "square", "grass", centre=(30.0, 20.0), radius=8.0, size=64, seed=1)
    assert frame.shape == (64, 64, 3) and frame.dtype == np.uint8 and mask.shape == (64, 64)
    # an axis-aligned square of half side 8 covers 16 x 16 pixels around (30, 20)
    assert 15 * 15 <= mask.sum() <= 17 * 17
    ys, xs = np.nonzero(mask)
    assert abs(xs.mean() - 30) < 0.6 and abs(ys.mean() - 20) < 0.6
    inner = frame[mask & np.roll(mask, 1, 0) & np.roll(mask, -1, 0) & np.roll(mask, 1, 1) & np.roll(mask, -1, 1)]
    assert np.abs(inner.astype(int) - np.array(COLOURS["blue"])).max() <= 1
    outside = frame[~mask].reshape(-1, 3).mean(0)
    assert np.linalg.norm(outside - np.array(BACKGROUNDS["grass"])) < 15


def test_backgrounds_are_textured_but_close_to_their_class_colour():
    for name, rgb in BACKGROUNDS.items():
        frame, mask = render_frame("red", "circle", name, (10.0, 10.0), 3.0, seed=4)
        bg = frame[~mask].astype(np.float32)
        assert bg.std(0).max() > 1.5, name  # texture, not a flat colour
        assert np.linalg.norm(np.median(bg, 0) - np.array(rgb)) < 12, name


# ------------------------------------------------------------------------------------------- videos
@pytest.mark.parametrize("path", ["straight", "curved"])
@pytest.mark.parametrize("frames", [1, 5, 13])
def test_video_shapes_and_any_frame_count(path, frames):
    v = make_video("a yellow triangle is moving on the sand", frames=frames, size=48, seed=3, path=path)
    assert v.frames.shape == (frames, 48, 48, 3) and v.frames.dtype == np.uint8
    assert v.masks.shape == (frames, 48, 48) and v.masks.dtype == bool
    assert v.flows.shape == (frames - 1, 48, 48, 2) and v.flows.dtype == np.float32
    assert (v.colour, v.shape, v.background) == ("yellow", "triangle", "sand")
    assert v.masks.reshape(frames, -1).any(1).all()  # the object is in every frame


@pytest.mark.parametrize("path, speed", [("straight", None), ("curved", None), ("straight", 9.0)])
def test_masks_and_flow_follow_the_rendered_motion(path, speed):
    v = make_video("a red square is moving on the road", frames=10, seed=7, path=path, speed=speed)
    for i in range(len(v.flows)):
        m0, m1, flow = v.masks[i], v.masks[i + 1], v.flows[i]
        assert np.all(flow[~m0] == 0)  # flow lives on the object's pixels only
        d = flow[m0]
        assert np.allclose(d, d[0])  # rigid translation: one displacement for the whole object
        # the mask centroid moves by the flow
        c0 = np.argwhere(m0)[:, ::-1].mean(0)
        c1 = np.argwhere(m1)[:, ::-1].mean(0)
        assert np.allclose(c0 + d[0], c1, atol=0.75)  # binary masks quantise the centroid
        assert np.allclose(d[0], v.positions[i + 1] - v.positions[i])
        # warping mask i by its flow gives mask i+1
        ys, xs = np.nonzero(m0)
        xw, yw = np.rint(xs + d[0, 0]).astype(int), np.rint(ys + d[0, 1]).astype(int)
        warped = np.zeros_like(m0)
        ok = (xw >= 0) & (xw < m0.shape[1]) & (yw >= 0) & (yw < m0.shape[0])
        warped[yw[ok], xw[ok]] = True
        assert (warped & m1).sum() / (warped | m1).sum() > 0.85
        # the background is static: pixels away from the object are unchanged
        diff = np.abs(v.frames[i].astype(int) - v.frames[i + 1].astype(int)).max(-1)
        grown = m0 | m1
        for axis in (0, 1):
            grown = grown | np.roll(grown, 1, axis) | np.roll(grown, -1, axis)
        assert diff[~grown].max() == 0


def test_straight_path_is_straight_and_curved_path_turns():
    straight = make_video("a white circle is moving on the snow", frames=8, seed=11, path="straight")
    curved = make_video("a white circle is moving on the snow", frames=8, seed=11, path="curved")

    def headings(v):
        d = np.diff(v.positions, axis=0)  # (N-1, 2)
        return np.unwrap(np.arctan2(d[:, 1], d[:, 0]))

    assert np.ptp(headings(straight)) < 1e-4
    assert np.ptp(headings(curved)) > np.deg2rad(30)
    speeds = np.linalg.norm(np.diff(curved.positions, axis=0), axis=1)
    assert speeds.min() > 0.5


def test_fast_objects_bounce_and_stay_inside_the_frame():
    v = make_video("a green circle is moving on the grass", frames=30, seed=2, speed=7.0)
    assert v.masks.reshape(30, -1).sum(1).min() >= 0.9 * v.masks[0].sum()  # never leaves the frame


def test_video_rejects_bad_arguments():
    with pytest.raises(InputError):
        make_video("a red circle is moving on the road", frames=0)
    with pytest.raises(PromptError):
        make_video("a red circle is moving on the moon")


# -------------------------------------------------------------------------------------------- judge
def test_judge_is_right_on_200_ground_truth_frames():
    rng = np.random.default_rng(123)
    wrong_free, wrong_masked = [], []
    for _ in range(200):
        s = sample_scene(rng)
        truth = (s.colour, s.shape, s.background)
        j = judge(s.image)
        if (j.colour, j.shape, j.background) != truth:
            wrong_free.append((s.caption, j.colour, j.shape, j.background))
        jm = judge(s.image, s.mask)
        if (jm.colour, jm.shape, jm.background) != truth:
            wrong_masked.append(s.caption)
        assert (j.mask & s.mask).sum() / (j.mask | s.mask).sum() > 0.7  # it found the object itself
    assert wrong_free == [] and wrong_masked == []


def test_judge_reads_video_frames_and_reports_empty_scenes():
    v = make_video("a purple triangle is moving on the water", frames=4, seed=5, path="curved")
    for f in v.frames:
        j = judge(f)
        assert (j.colour, j.shape, j.background) == ("purple", "triangle", "water")
    empty = judge(np.full((64, 64, 3), BACKGROUNDS["snow"], np.uint8))
    assert empty.colour is None and empty.shape is None and empty.background == "snow"
    with pytest.raises(InputError):
        judge(np.zeros((64, 64), np.uint8))


def test_shape_scores_prefer_the_right_template():
    for shape in SHAPES:
        _, mask = render_frame("red", shape, "road", (32.0, 32.0), 14.0)
        scores = shape_scores(mask)
        assert max(scores, key=scores.get) == shape and scores[shape] > 0.9


def test_judge_images_counts_accuracy():
    rng = np.random.default_rng(9)
    scenes = [sample_scene(rng) for _ in range(4)]
    images = np.stack([s.image for s in scenes])
    prompts = [s.caption for s in scenes]
    assert judge_images(images, prompts).colour == 1.0
    wrong = [f"a {'red' if s.colour != 'red' else 'blue'} {s.shape} is moving on the {s.background}" for s in scenes]
    report = judge_images(images, wrong)
    assert report.colour == 0.0 and report.shape == 1.0 and report.background == 1.0


def test_psnr_of_known_error():
    a = np.zeros((8, 8, 3), np.uint8)
    assert psnr(a, a) == float("inf")
    assert psnr(a, a + 1) == pytest.approx(20 * np.log10(255.0))


# ---------------------------------------------------------------------------------------- tokenizer
def test_toy_tokenizer_gives_one_token_per_world_word(tmp_path):
    tok = build_tokenizer(tmp_path / "tok")
    for word in WORLD_WORDS:
        pieces = tok.tokenize(word)
        if word in SPLIT_WORDS:
            assert pieces == [p for p in SPLIT_WORDS[word][:-1]] + [SPLIT_WORDS[word][-1] + "</w>"]
        else:
            assert pieces == [word + "</w>"]
    ids = tok("a purple circle is moving on the road").input_ids
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    assert len(ids) == 2 + 9  # 8 words, purple is two tokens
    # words outside the world still tokenize (into characters), as with real CLIP
    assert "".join(tok.tokenize("jeep")).replace("</w>", "") == "jeep"
    assert len(tok) == 512 + len(toy_merges()) + 2


# --------------------------------------------------------------------------------------------- CLI
def _parser():
    from attentionflow.toyworld.cli import register_cli

    p = argparse.ArgumentParser()
    register_cli(p.add_subparsers(dest="cmd"))
    return p


def test_cli_writes_gif_frames_masks_and_flow(tmp_path):
    p = _parser()
    args = p.parse_args(["toyworld", "video", "--caption", "a blue square is moving on the sand", "--frames", "5",
                         "--seed", "1", "--out", str(tmp_path / "clip.gif"), "--masks", str(tmp_path / "m")])
    assert args.func(args) == 0
    with Image.open(tmp_path / "clip.gif") as im:
        assert im.n_frames == 5 and im.size == (64, 64)
    assert len(list((tmp_path / "m").glob("*.png"))) == 5
    flows = np.load(tmp_path / "m" / "flows.npy")
    ref = make_video("a blue square is moving on the sand", frames=5, seed=1)
    assert np.array_equal(flows, ref.flows)
    args = p.parse_args(["toyworld", "video", "--frames", "3", "--size", "32", "--out", str(tmp_path / "frames")])
    assert args.func(args) == 0
    pngs = sorted((tmp_path / "frames").glob("*.png"))
    assert len(pngs) == 3 and np.asarray(Image.open(pngs[0])).shape == (32, 32, 3)


def test_cli_rejects_unknown_extension_and_caption(tmp_path):
    p = _parser()
    args = p.parse_args(["toyworld", "video", "--out", str(tmp_path / "clip.avi")])
    with pytest.raises(InputError, match="avi"):
        args.func(args)
    args = p.parse_args(["toyworld", "video", "--caption", "a car", "--out", str(tmp_path / "c.gif")])
    with pytest.raises(PromptError):
        args.func(args)


# ---------------------------------------------------------------------------------------- training
def test_training_script_runs_resumes_and_saves_a_loadable_folder(tmp_path):
    from attentionflow.models.loading import load_components
    from attentionflow.toyworld.train import main

    work = tmp_path / "work"
    common = ["--work", str(work), "--tiny", "--no-progress", "--vae-steps", "2", "--vae-batch", "4",
              "--bank-size", "16", "--unet-batch", "4", "--warmup", "1"]
    assert main(common + ["--unet-steps", "2"]) == 0
    assert torch.load(work / "ckpt_unet.pt", weights_only=False)["step"] == 2
    assert main(common + ["--unet-steps", "3"]) == 0  # resumes from step 2
    final = torch.load(work / "ckpt_unet.pt", weights_only=False)
    assert final["step"] == 3
    assert "unet: resumed at step 2" in (work / "train.log").read_text()

    comps = load_components(work / "model")
    bank = torch.load(work / "latents.pt", weights_only=False)
    assert comps.vae.config.scaling_factor == pytest.approx(1 / bank["latents"].std().item(), rel=1e-4)
    assert comps.text_encoder.config.vocab_size == len(comps.tokenizer)
    assert comps.tokenizer.tokenize("purple") == ["pur", "ple</w>"]
    index = json.loads((work / "model" / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline" and index["unet"] == ["diffusers", "UNet2DConditionModel"]
    assert list((work / "model").rglob("*.safetensors")) and not list((work / "model").rglob("*.bin"))
    # the exported UNet holds the EMA weights of training, not the raw ones
    first_param = next(comps.unet.parameters()).detach()
    assert torch.allclose(first_param, final["ema"][0])
    assert not torch.allclose(first_param, next(iter(final["unet"].values())))
    with torch.no_grad():
        ids = comps.tokenizer(["a red circle is moving on the road"], padding="max_length",
                              max_length=77, return_tensors="pt").input_ids
        emb = comps.text_encoder(ids).last_hidden_state
        out = comps.unet(torch.randn(1, 4, 16, 16), 10, encoder_hidden_states=emb).sample
    assert out.shape == (1, 4, 16, 16) and torch.isfinite(out).all()


def test_bank_masks_are_the_object_area_share_of_the_banks_own_scenes(tmp_path):
    """Masks regenerated from the bank's seeds match the encoded scenes (captions) and give each latent pixel the
    share of its 4x4 image pixels that an object covers."""
    from attentionflow.toyworld.model import ToyModelConfig
    from attentionflow.toyworld.train import TrainConfig, _bank_chunk, bank_masks
    from attentionflow.toyworld.world import sample_training_masks

    tc, cfg = TrainConfig(seed=3, bank_size=70, multi_object=0.5), ToyModelConfig()
    masks = bank_masks(tmp_path, cfg, tc, 16, progress=False)
    assert masks.shape == (70, 1, 16, 16) and (tmp_path / "masks.pt").exists()
    _, caps, full = sample_training_masks(np.random.default_rng([3, 2, 1]), 6, 64, 0.5)  # chunk 1 = scenes 64..69
    assert _bank_chunk(tc, cfg, 1)[1] == caps
    for k in range(6):
        want = full[k].reshape(16, 4, 16, 4).mean(axis=(1, 3))  # area share of each 4x4 block
        np.testing.assert_allclose(masks[64 + k, 0].numpy(), want, atol=1e-6)
    assert 0 < float(masks.mean()) < 0.5 and float(masks.max()) == 1.0
    assert torch.equal(bank_masks(tmp_path, cfg, tc, 16, progress=False), masks)  # read back from the cache


def test_object_weighted_unet_training_changes_the_update(tmp_path):
    """--unet-object-weight adds the object pixels' error: the same seed gives other weights than without it."""
    from attentionflow.toyworld.train import main

    def trained(name: str, weight: str) -> torch.Tensor:
        work = tmp_path / name
        assert main(["--work", str(work), "--tiny", "--no-progress", "--vae-steps", "1", "--vae-batch", "2",
                     "--bank-size", "8", "--unet-batch", "4", "--warmup", "1", "--unet-steps", "2",
                     "--unet-object-weight", weight]) == 0
        return torch.load(work / "ckpt_unet.pt", weights_only=False)["ema"][0]

    plain, plain_again, weighted = trained("a", "0"), trained("b", "0"), trained("c", "2.0")
    assert torch.equal(plain, plain_again)  # training is deterministic, so a difference is the weight's
    assert not torch.allclose(plain, weighted)
    assert (tmp_path / "c" / "masks.pt").exists() and not (tmp_path / "a" / "masks.pt").exists()


# the judge's morphology (OpenCV, 4-connectivity): hand-drawn cases with a known answer
_RING = np.pad(np.array([[1, 1, 1], [1, 0, 1], [1, 1, 1]], bool), 1)  # a ring with a one-pixel hole


@pytest.mark.parametrize("name,mask,expected", [
    ("hole is filled", _RING, np.pad(np.ones((3, 3), bool), 1)),
    ("notch open to the border stays open", np.array([[1, 0, 1], [1, 0, 1], [1, 1, 1]], bool),
     np.array([[1, 0, 1], [1, 0, 1], [1, 1, 1]], bool)),
    ("diagonal gap does not close a hole (4-connected background)",
     np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]], bool), np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], bool)),
])
def test_fill_holes(name, mask, expected):
    from attentionflow.toyworld.judge import fill_holes

    assert np.array_equal(fill_holes(mask), expected), name


def test_erode_is_a_cross_with_outside_pixels_counting_as_empty():
    from attentionflow.toyworld.judge import erode

    mask = np.ones((5, 5), bool)
    out = erode(mask)
    assert out[1:4, 1:4].all() and not out[0].any() and not out[:, 0].any() and out.sum() == 9
    plus = np.zeros((5, 5), bool)
    plus[2, 1:4] = plus[1:4, 2] = True
    assert erode(plus).sum() == 1 and erode(plus)[2, 2]


def test_segment_object_keeps_the_largest_4_connected_region():
    from attentionflow.toyworld.judge import segment_object

    frame = np.zeros((8, 8, 3), np.uint8)
    frame[1:4, 1:4] = 255  # 9 pixels
    frame[5:7, 5:7] = 255  # 4 pixels
    frame[4, 4] = 255  # touches both only diagonally
    mask = segment_object(frame, np.zeros(3, np.float32))
    assert mask.sum() == 9 and mask[1:4, 1:4].all()


@pytest.mark.parametrize("case", ["existing-mp4", "existing-gif", "masks-into-user-folder", "masks-is-a-file"])
def test_toyworld_video_never_replaces_a_users_file(tmp_path, capsys, case):
    """Issue 28, item 2: an existing --out file, or a --masks folder holding the user's frames (or a file), is refused
    with one line before anything is rendered, and the folder keeps every byte."""
    from attentionflow.commands.cli import main

    (tmp_path / "holiday.mp4").write_bytes(b"not really a video, but mine")
    (tmp_path / "holiday.gif").write_bytes(b"GIF89a mine")
    (tmp_path / "myframes").mkdir()
    (tmp_path / "myframes" / "frame_0000.png").write_bytes(b"my frame")
    (tmp_path / "notes.txt").write_text("mine")
    before = tree_hashes(tmp_path)
    argv = {"existing-mp4": ["--out", str(tmp_path / "holiday.mp4")],
            "existing-gif": ["--out", str(tmp_path / "holiday.gif")],
            "masks-into-user-folder": ["--out", str(tmp_path / "c.mp4"), "--masks", str(tmp_path / "myframes")],
            "masks-is-a-file": ["--out", str(tmp_path / "c.mp4"), "--masks", str(tmp_path / "notes.txt")]}[case]
    code = main(["toyworld", "video", "--frames", "4", *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "Traceback" not in err, err
    assert tree_hashes(tmp_path) == before
    assert not (tmp_path / "c.mp4").exists()
