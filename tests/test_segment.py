"""Knowing what moves: moving-object masks and maps on synthetic scenes with exact masks, the J/F/mass scorer on
hand-made cases, and the ``bench motion`` / ``motion`` commands on a DAVIS-layout folder made here."""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from unittest import mock

import cv2
import numpy as np
import pytest

from attentionflow.evaluation.segmentation import boundary_f, jaccard, map_mass, score_masks
from attentionflow.flow.motion import MotionOptions, motion_maps
from attentionflow.flow.segment import hysteresis, observed, snap_to_edges
from tests.synthetic import MovingSquare, make_video, texture

SIZE = 96


def noisy_lookalikes(frames: int = 8, speed: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A red disc moving ``speed`` px/frame east beside a static twin, on a plain grey background of fixed noise
    (sigma 12 grey levels) plus fresh sensor noise in every frame (sigma 2): issue 27's scene. Returns frames and the
    mover's exact masks."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:SIZE, 0:SIZE]
    out = np.empty((frames, SIZE, SIZE, 3), np.uint8)
    masks = np.zeros((frames, SIZE, SIZE), bool)
    plain = 128 + rng.normal(0, 12, (SIZE, SIZE, 3))
    for t in range(frames):
        frame = np.clip(plain + rng.normal(0, 2, (SIZE, SIZE, 3)), 0, 255)
        mover = (xs - (14 + speed * t)) ** 2 + (ys - 30) ** 2 <= 10 ** 2
        twin = (xs - 70) ** 2 + (ys - 70) ** 2 <= 10 ** 2
        frame[mover | twin] = (200, 40, 40)
        out[t], masks[t] = frame.astype(np.uint8), mover
    return out, masks


def stop_and_go(frames: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """A textured square that moves 3 px/frame, stands still for frames 4-6, then moves on; textured static scene."""
    rng = np.random.default_rng(3)
    background, patch = texture(SIZE, SIZE, rng), texture(28, 28, rng)
    xs = np.cumsum([0] + [0 if 4 <= t <= 6 else 3 for t in range(1, frames)]) + 10
    out = np.repeat(background[None], frames, axis=0)
    masks = np.zeros((frames, SIZE, SIZE), bool)
    for t, x in enumerate(xs):
        out[t, 30:58, x:x + 28] = patch
        masks[t, 30:58, x:x + 28] = True
    return out, masks


def _parallax() -> tuple[np.ndarray, np.ndarray]:
    from tests.test_camera_models import layered_scene

    return layered_scene(1.0, 3.0, (0, 3))


def _pan() -> tuple[np.ndarray, np.ndarray]:
    frames, masks = make_video(SIZE, 8, (MovingSquare(60, 30, 28, -4, 0), MovingSquare(10, 60, 24, 2, 0)),
                               pan=(2, 0), seed=2)
    return frames, masks[:, 0]


def _slow() -> tuple[np.ndarray, np.ndarray]:
    frames, masks = make_video(SIZE, 8, (MovingSquare(30, 30, 28, 1, 0),), seed=5)
    return frames, masks[:, 0]


def rippling_water(frames: int = 8, ripple: float = 4.0, zoom: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """A tracking shot over rippling water: the camera follows a textured oval (it drifts 0.5 px/frame in the frame)
    while the water streams past 3 px/frame west, every frame displaced afresh by smooth random ripples (``ripple``
    scales them; at 4 no homography explains a quarter of the flow within a pixel), and zooms in on the water by
    ``zoom`` a frame (0.02: 1.3-2.6 px/frame at the frame's edges)."""
    rng = np.random.default_rng(0)
    h, w, pan = 144, 256, 3
    water = 110 + (texture(h, w + pan * frames + 8, rng, sigma=3).astype(np.float32) - 128) * 0.25
    duck = texture(30, 44, rng)
    yy, xx = np.mgrid[0:30, 0:44]
    oval = ((yy - 15) / 15) ** 2 + ((xx - 22) / 22) ** 2 <= 1
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.empty((frames, h, w, 3), np.uint8)
    masks = np.zeros((frames, h, w), bool)
    for t in range(frames):
        dx, dy = (cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), 6) * ripple * 6
                  for _ in range(2))
        scale = (1 + zoom) ** t
        frame = cv2.remap(water, (xs - w / 2) / scale + w / 2 + pan * t + dx, (ys - h / 2) / scale + h / 2 + dy,
                          cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        x = 100 + t // 2
        frame[60:90, x:x + 44][oval] = duck[oval]
        masks[t, 60:90, x:x + 44] = oval
        out[t] = np.clip(frame + rng.normal(0, 1, frame.shape), 0, 255).astype(np.uint8)
    return out, masks


SCENES = {
    "look-alike on a noisy background": (noisy_lookalikes, 0.7),
    "mover over parallax": (_parallax, 0.6),
    "camera pan": (_pan, 0.7),
    "slow mover (1 px/frame)": (_slow, 0.6),
    "mover that stops for three frames": (stop_and_go, 0.6),
    "tracking shot over rippling water": (rippling_water, 0.8),
    "tracking shot over rippling water, zooming in": (functools.partial(rippling_water, zoom=0.02), 0.8),
}


@pytest.mark.parametrize("name", list(SCENES))
def test_masks_and_maps_find_the_mover_on_every_frame(name: str) -> None:
    make, least = SCENES[name]
    frames, truth = make()
    result = motion_maps(frames)
    assert result.masks.shape == truth.shape and result.masks.dtype == bool
    per_frame = jaccard(result.masks, truth)
    assert per_frame.mean() >= least, per_frame
    # never an empty mask where the object is there (it moves in the frames beside it)
    assert all(m.any() for m, t in zip(result.masks, truth) if t.any()), per_frame
    assert map_mass(result.maps, truth).mean() >= 0.5
    assert result.maps.min() >= 0 and result.maps.max() == 1.0


def test_the_static_twin_never_joins_the_mask() -> None:
    frames, truth = noisy_lookalikes()
    twin = np.zeros(truth.shape[1:], bool)
    ys, xs = np.mgrid[0:SIZE, 0:SIZE]
    twin[(xs - 70) ** 2 + (ys - 70) ** 2 <= 10 ** 2] = True
    masks = motion_maps(frames).masks
    assert (masks & twin).sum() <= 0.02 * twin.sum() * len(masks)


def test_a_static_video_has_no_mask_and_zero_maps() -> None:
    frames = np.repeat(texture(64, 64, np.random.default_rng(1))[None], 5, axis=0)
    result = motion_maps(frames)
    assert not result.masks.any() and not result.maps.any() and np.isfinite(result.maps).all()


def test_camera_motion_default_is_the_homography() -> None:
    assert MotionOptions().camera_motion == "homography"


def _sky_pan(frames: int = 8) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """A camera pans over textured ground (content moves 3 px/frame west) under a plain sky (the top third), while a
    textured square crosses the ground 4 px/frame east. Returns frames, the square's masks and the true flows."""
    rng = np.random.default_rng(4)
    h, w, pan, speed = SIZE, 2 * SIZE, 3, 4
    ground, patch = texture(h, w + pan * frames, rng), texture(20, 24, rng)
    out = np.empty((frames, h, w, 3), np.uint8)
    masks = np.zeros((frames, h, w), bool)
    for t in range(frames):
        out[t] = ground[:, pan * t:pan * t + w]
        out[t, :h // 3] = (150, 190, 235)
        x = 40 + speed * t
        out[t, 60:80, x:x + 24] = patch
        masks[t, 60:80, x:x + 24] = True
    return out, masks, [np.array([-pan, 0.0]), np.array([speed, 0.0])]


def test_a_plain_sky_that_reads_still_under_a_pan_is_not_a_mover() -> None:
    # The estimator has no data on the sky and reports it still (as DIS does on a plain sky): after the camera's
    # motion is taken out, the sky would read as moving against the pan, unless unobserved motion is ignored.
    frames, truth, (pan, speed) = _sky_pan()
    sky = np.zeros(truth.shape[1:], bool)
    sky[: SIZE // 3] = True

    class NoDataOnTheSky:
        name = "no_data_on_the_sky"

        def __call__(self, frame_a: np.ndarray, frame_b: np.ndarray) -> np.ndarray:
            i = next(k for k, f in enumerate(frames) if np.array_equal(f, frame_a))
            j = next(k for k, f in enumerate(frames) if np.array_equal(f, frame_b))
            flow = np.zeros(frame_a.shape[:2] + (2,), np.float32)
            flow[~sky] = pan * (j - i)
            flow[truth[i]] = speed * (j - i)
            return flow

    result = motion_maps(frames, estimator=NoDataOnTheSky())
    assert jaccard(result.masks, truth).mean() >= 0.8
    assert not (result.masks & sky).any()
    assert map_mass(result.maps, sky[None].repeat(len(frames), 0)).mean() <= 0.05


@pytest.mark.parametrize(("scene", "flow", "want"), [
    ("plain", 0.0, False),  # no texture, reads still: no data
    ("plain", 2.0, True),  # no texture, but the estimator carried motion into it
    ("texture", 0.0, True),  # texture in every direction: still is a measurement
    ("stripes", 0.0, False),  # texture in one direction only: motion along the stripes is unobservable
    ("faint", 0.0, False),  # noise of one grey level: below the floor of a level per pixel
])
def test_observed_is_flow_or_texture_in_two_directions(scene: str, flow: float, want: bool) -> None:
    rng = np.random.default_rng(0)
    frame = {
        "plain": np.full((SIZE, SIZE, 3), 120, np.uint8),
        "texture": texture(SIZE, SIZE, rng),
        "stripes": np.repeat(((np.arange(SIZE) // 4) % 2 * 200)[None, :, None], SIZE, 0).repeat(3, 2).astype(np.uint8),
        "faint": (120 + rng.integers(0, 2, (SIZE, SIZE)))[..., None].repeat(3, 2).astype(np.uint8),
    }[scene]
    got = observed(frame, np.full((SIZE, SIZE, 2), flow / np.sqrt(2), np.float32))
    assert got.shape == (SIZE, SIZE)
    assert got[8:-8, 8:-8].all() if want else not got[8:-8, 8:-8].any()


# -- the scorer ------------------------------------------------------------------------------------------------


def _disc(cx: int, cy: int, r: int, size: int = 64) -> np.ndarray:
    ys, xs = np.mgrid[0:size, 0:size]
    return (xs - cx) ** 2 + (ys - cy) ** 2 <= r * r


@pytest.mark.parametrize(("pred", "truth", "want"), [
    (np.ones((4, 4), bool), np.ones((4, 4), bool), 1.0),
    (np.zeros((4, 4), bool), np.zeros((4, 4), bool), 1.0),  # both empty counts 1 (DAVIS)
    (np.eye(4, dtype=bool), np.zeros((4, 4), bool), 0.0),
    (np.pad(np.ones((2, 4), bool), ((0, 2), (0, 0))), np.ones((4, 4), bool), 0.5),  # 8 of 16
])
def test_jaccard_hand_cases(pred, truth, want) -> None:
    assert float(jaccard(pred, truth)) == pytest.approx(want)


def test_boundary_f_tolerates_a_shift_within_the_tolerance_and_not_beyond() -> None:
    truth = _disc(32, 32, 12)
    tol = int(np.ceil(0.008 * np.hypot(64, 64)))  # 1 pixel at 64x64
    assert float(boundary_f(truth, truth)) == 1.0
    assert float(boundary_f(np.roll(truth, tol, axis=1), truth)) == 1.0
    assert float(boundary_f(np.roll(truth, 6, axis=1), truth)) < 0.3
    assert float(boundary_f(np.zeros_like(truth), truth)) == 0.0
    assert float(boundary_f(np.zeros_like(truth), np.zeros_like(truth))) == 1.0


def _score_row(*values: float) -> np.ndarray:
    """A ``(1, len(values))`` score image: one row of pixels, 8-connected left to right."""
    return np.array([values], np.float32)


@pytest.mark.parametrize(("score", "want"), [
    # a weak part touching the strong core joins it; a weak part cut off from it by a gap does not
    (_score_row(0.2, 0.5, 0.2, 0.0, 0.2), [True, True, True, False, False]),
    # a chain of weak pixels joins through each other
    (_score_row(0.5, 0.2, 0.2, 0.2, 0.0), [True, True, True, True, False]),
    # weak motion with no strong core anywhere is not an object
    (_score_row(0.2, 0.29, 0.2, 0.0, 0.0), [False] * 5),
    # below the low threshold nothing joins, even touching the core
    (_score_row(0.1, 0.5, 0.1, 0.5, 0.0), [False, True, False, True, False]),
], ids=["touching-vs-cut-off", "chain", "no-core", "below-low"])
def test_hysteresis_keeps_weak_parts_connected_to_a_strong_core(score, want) -> None:
    assert hysteresis(score, low=0.15, high=0.3)[0].tolist() == want


def _square_on_stripes() -> tuple[np.ndarray, np.ndarray]:
    """A green 16 px square on a striped sand texture (the motion suite's look-alike scene): frame and exact mask."""
    ys, xs = np.mgrid[0:64, 0:64]
    sand = np.stack([200 + 20 * np.sin((xs + ys) / 2.0)] * 3, axis=-1) * (1.0, 0.8, 0.55)
    square = (abs(xs - 28) < 8) & (abs(ys - 30) < 8)
    sand[square] = (30, 220, 60)
    return sand.astype(np.uint8), square


@pytest.mark.parametrize("halo", [1, 3, 4])
def test_snap_trims_a_halo_of_flow_bleed_to_the_objects_edges(halo: int) -> None:
    # a mask grown by the flow's bleed over the sand (halo 4: IoU with the square 0.44) snaps back to the square
    frame, square = _square_on_stripes()
    grown = cv2.dilate(square.astype(np.uint8), np.ones((2 * halo + 1,) * 2, np.uint8)).astype(bool)
    snapped = snap_to_edges(frame, grown, grow=2)
    assert jaccard(snapped[None], square[None])[0] >= 0.95


def test_snap_keeps_the_mask_when_the_edges_explain_something_else() -> None:
    # a mask on plain sand a little off the square: GrabCut's answer (the square, or nothing) is not this mask
    frame, square = _square_on_stripes()
    off = np.roll(square, (0, 20), axis=(0, 1)) | np.roll(square, (0, 12), axis=(0, 1))
    assert (snap_to_edges(frame, off, grow=2) == off).all()


def test_map_mass_is_the_share_on_the_object() -> None:
    truth = np.zeros((2, 4, 4), bool)
    truth[:, :2] = True
    maps = np.zeros((2, 4, 4))
    maps[0, 0, 0], maps[0, 3, 3] = 3.0, 1.0  # 3 of 4 on the object
    assert map_mass(maps, truth).tolist() == [0.75, 0.0]  # an all-zero map counts 0
    assert score_masks(truth, truth, maps) == {"J": 1.0, "F": 1.0, "mass": 0.375}


# -- the commands ----------------------------------------------------------------------------------------------


def _davis_folder(root: Path, level: str = "", width: int = 160, height: int = 96) -> Path:
    """Two sequences in the DAVIS layout (JPEG frames, PNG masks 0/255; ``level`` such as ``480p``) at a size other
    than the protocol's."""
    for name, make in (("mover", _pan), ("slowpoke", _slow)):
        frames, masks = make()
        jdir, adir = root / "JPEGImages" / level / name, root / "Annotations" / level / name
        jdir.mkdir(parents=True)
        adir.mkdir(parents=True)
        for i, (f, m) in enumerate(zip(frames, masks)):
            cv2.imwrite(str(jdir / f"{i:05d}.jpg"), cv2.resize(f[..., ::-1], (width, height)))
            cv2.imwrite(str(adir / f"{i:05d}.png"),
                        cv2.resize(m.astype(np.uint8) * 255, (width, height), interpolation=cv2.INTER_NEAREST))
    return root


@pytest.mark.parametrize("level", ["", "480p", "Full-Resolution"])
def test_bench_motion_reads_the_davis_layout_and_reports_j_f_mass(tmp_path, capsys, level) -> None:
    from attentionflow.commands.cli import main

    root = _davis_folder(tmp_path / "davis", level)
    report = tmp_path / "r.json"
    code = main(["bench", "motion", "--davis", str(root), "--frames", "6", "--stride", "1", "--size", "96x96",
                 "--json", str(report), "-q"])
    out = capsys.readouterr().out
    assert code == 0
    data = json.loads(report.read_text())
    names = [r["sequence"] for r in data["sequences"]]
    assert names == ["mover", "slowpoke"] and "| mover | 6 |" in out and "**mean of 2**" in out
    for row in data["sequences"]:
        assert row["J"] >= 0.5 and 0 <= row["F"] <= 1 and row["mass"] >= 0.4
        assert sum(row["camera_models"].values()) == 6
    assert data["mean"]["J"] == pytest.approx(np.mean([r["J"] for r in data["sequences"]]))
    # the same subset by name, and an earlier report of this command may be replaced only with --overwrite
    args = ["bench", "motion", "--davis", str(root), "--frames", "6", "--stride", "1", "--size", "96x96",
            "--sequences", "slowpoke", "--json", str(report), "-q"]
    assert main(args) == 2
    assert main(args + ["--overwrite"]) == 0
    assert [r["sequence"] for r in json.loads(report.read_text())["sequences"]] == ["slowpoke"]


@pytest.mark.parametrize(("extra", "frames"), [
    ([], 4),  # the protocol: 4 of them at stride 2 (frames 0, 2, 4, 6)
    (["--all-frames"], 8),  # the whole sequence: every frame
    (["--all-frames", "--stride", "3"], 3),  # the whole sequence at the stride asked for: frames 0, 3, 6
], ids=["protocol", "all-frames", "all-frames-stride-3"])
def test_bench_motion_all_frames_reads_every_frame(tmp_path, extra, frames) -> None:
    from attentionflow.commands.cli import main

    root = _davis_folder(tmp_path / "davis")
    sequence = root / "JPEGImages" / "mover"
    for extra_frame in sorted(sequence.iterdir())[8:]:  # 8 frames in all
        extra_frame.unlink()
        (root / "Annotations" / "mover" / (extra_frame.stem + ".png")).unlink()
    report = tmp_path / "r.json"
    argv = ["bench", "motion", "--davis", str(root), "--sequences", "mover", "--size", "96x96", "--json", str(report),
            "-q"]
    assert main(argv + (["--frames", "4"] if not extra else extra)) == 0
    assert [r["frames"] for r in json.loads(report.read_text())["sequences"]] == [frames]


@pytest.mark.parametrize(("extra", "needle"), [
    (["--sequences", "nope"], "nope not in"),
    (["--json", "{user}"], "is not a report of"),
    (["--json", "{user}", "--overwrite"], "is not a report of"),
    (["--frames", "1"], "--frames must be >= 2"),
    (["--camera-motion", "spin"], "invalid choice"),
    (["--all-frames"], "without --frames"),  # the argv below gives --frames 4
], ids=["unknown-sequence", "foreign-json", "foreign-json-overwrite", "one-frame", "bad-camera-motion",
        "all-frames-and-frames"])
def test_bench_motion_bad_input_is_one_line_and_leaves_files_alone(tmp_path, capsys, extra, needle) -> None:
    from attentionflow.commands.cli import main

    root = _davis_folder(tmp_path / "davis")
    user = tmp_path / "mine.json"
    user.write_text('{"my": "notes"}')
    before = hashlib.sha256(user.read_bytes()).hexdigest()
    argv = ["bench", "motion", "--davis", str(root), "--frames", "4", "--size", "96x96", "-q"]
    argv += [a.replace("{user}", str(user)) for a in extra]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own choices check
        code = exc.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and needle in err, err
    assert hashlib.sha256(user.read_bytes()).hexdigest() == before


def _palette_png(path: Path, ids: np.ndarray) -> None:
    """A DAVIS-2017 annotation: palette mode, index = object id, id 1 dark red, id 2 dark green."""
    from PIL import Image

    image = Image.fromarray(ids.astype(np.uint8), mode="P")
    image.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * (253 * 3))
    image.save(path)


@pytest.mark.parametrize("encoding", ["grey 0/255", "grey 0/1", "palette ids 1, 2"])
def test_davis_masks_read_the_same_whatever_the_encoding(tmp_path, encoding) -> None:
    from attentionflow.evaluation.davis import Protocol, find_sequences, load_davis

    ids = np.zeros((3, 48, 48), np.uint8)  # at the protocol's size: object 1 moves right, object 2 stays
    for i in range(3):
        ids[i, 10:20, 4 + 4 * i:16 + 4 * i] = 1
        ids[i, 30:40, 30:44] = 2
    truth = ids > 0
    seq = tmp_path / "d" / "Annotations" / "480p" / "two"
    jpegs = tmp_path / "d" / "JPEGImages" / "480p" / "two"
    seq.mkdir(parents=True)
    jpegs.mkdir(parents=True)
    for i, frame_ids in enumerate(ids):
        stored = np.kron(frame_ids, np.ones((2, 2), np.uint8))  # stored at twice the size: the protocol halves it
        cv2.imwrite(str(jpegs / f"{i:05d}.jpg"), np.full((96, 96, 3), 90, np.uint8))
        if encoding == "grey 0/255":
            cv2.imwrite(str(seq / f"{i:05d}.png"), (stored > 0).astype(np.uint8) * 255)
        elif encoding == "grey 0/1":
            cv2.imwrite(str(seq / f"{i:05d}.png"), (stored > 0).astype(np.uint8))
        else:
            _palette_png(seq / f"{i:05d}.png", stored)
    frames, masks = load_davis(find_sequences(tmp_path / "d")[0], Protocol(frames=3, stride=1, width=48, height=48))
    assert frames.shape == (3, 48, 48, 3)
    np.testing.assert_array_equal(masks, truth)


def _sparse_davis(root: Path, annotated: list[int], frames: int = 6) -> np.ndarray:
    """A one-sequence DAVIS folder of ``frames`` frames, masks stored for ``annotated`` only; frame ``i``'s object is
    a box at column ``4 i`` (each mask tells its frame apart). Returns every frame's true mask ``(frames, 48, 48)``."""
    images, masks = root / "JPEGImages" / "seq", root / "Annotations" / "seq"
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    truth = np.zeros((frames, 48, 48), bool)
    for i in range(frames):
        truth[i, 10:20, 4 * i:4 * i + 8] = True
        cv2.imwrite(str(images / f"{i:05d}.jpg"), np.full((48, 48, 3), 90, np.uint8))
        if i in annotated:
            cv2.imwrite(str(masks / f"{i:05d}.png"), truth[i].astype(np.uint8) * 255)
    return truth


def test_davis_masks_pair_with_frames_by_name(tmp_path) -> None:
    """A set annotated every second frame reads right at stride 2: frame 00002 takes mask 00002, not the second
    mask file."""
    from attentionflow.evaluation.davis import Protocol, find_sequences, load_davis

    truth = _sparse_davis(tmp_path, annotated=[0, 2, 4])
    _, masks = load_davis(find_sequences(tmp_path)[0], Protocol(frames=3, stride=2, width=48, height=48))
    np.testing.assert_array_equal(masks, truth[[0, 2, 4]])


@pytest.mark.parametrize(("annotated", "stride", "first_missing"), [
    ([0], 2, "00002"),  # a test set: the first frame annotated alone
    ([0, 2, 4], 1, "00001"),  # annotated every second frame, read at every frame
    ([0, 2, 3, 4, 5], 1, "00001"),  # one mask lost
], ids=["first frame only", "every second frame", "one lost"])
def test_bench_motion_frames_without_masks_fail_before_any_flow(tmp_path, capsys, annotated, stride,
                                                               first_missing) -> None:
    from attentionflow.commands.cli import main

    good = tmp_path / "d"
    _sparse_davis(good, annotated=list(range(6)))
    (good / "JPEGImages" / "seq").rename(good / "JPEGImages" / "aa")  # a complete sequence read first
    (good / "Annotations" / "seq").rename(good / "Annotations" / "aa")
    _sparse_davis(good, annotated=annotated)
    with mock.patch("attentionflow.flow.motion.motion_maps", side_effect=AssertionError("flow computed")):
        code = main(["bench", "motion", "--davis", str(good), "--stride", str(stride), "--frames", "3",
                     "--size", "48x48", "-q"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "Annotations/seq has no mask for" in err and f"(first: {first_missing})" in err


def test_bench_motion_not_a_davis_folder(tmp_path, capsys) -> None:
    from attentionflow.commands.cli import main

    assert main(["bench", "motion", "--davis", str(tmp_path), "-q"]) == 2
    assert "is not a DAVIS folder" in capsys.readouterr().err


def test_bench_motion_scores_the_toy_scenes_with_the_same_scorer(capsys) -> None:
    from attentionflow.commands.cli import main

    assert main(["bench", "motion", "--toy", "--frames", "6", "--size", "64", "-q"]) == 0
    out = capsys.readouterr().out
    assert "look-alike" in out and "two movers" in out and "**mean of 13**" in out


def test_motion_command_writes_the_moving_masks(tmp_path) -> None:
    from attentionflow.commands.cli import main
    from attentionflow.io.video import read_frames

    frames, truth = _pan()
    clip = tmp_path / "clip"
    clip.mkdir()
    for i, f in enumerate(frames):
        cv2.imwrite(str(clip / f"{i:03d}.png"), f[..., ::-1])
    out = tmp_path / "mo"
    assert main(["motion", str(clip), "--out", str(out), "--frames", "8", "--size", str(SIZE), "-q"]) == 0
    masks = np.load(out / "moving_masks.npy")
    assert masks.shape == truth.shape and masks.dtype == np.uint8 and set(np.unique(masks)) <= {0, 1}
    assert jaccard(masks.astype(bool), truth).mean() >= 0.7
    pngs = read_frames(out / "moving_masks")[..., 0] > 127
    assert np.array_equal(pngs, masks.astype(bool))
    assert read_frames(out / "moving_masks.mp4").shape == frames.shape
    assert json.loads((out / "manifest.json").read_text())["moving_area"] == pytest.approx(
        masks.reshape(len(masks), -1).mean(axis=1), abs=1e-4)


def test_the_readme_davis_row_is_the_benchmark_documents_current_row() -> None:
    """The README's dated DAVIS table repeats docs/benchmarks.md's current (bold) row: one set of figures."""
    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text(encoding="utf-8")
    docs = (root / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    row = next(line for line in docs.splitlines() if line.startswith("| **now:"))
    # columns: method, tune J, tune mass, report J, report F, report mass, all J, all F, all mass, J < 0.15
    _, _, rep_j, rep_f, rep_m, all_j, all_f, all_m, low = (c.strip(" *") for c in row.split("|")[2:11])
    ours = next(line for line in readme.splitlines() if line.startswith("| all 27 clips"))
    cells = [c.strip() for c in ours.split("|")[2:5]]
    assert cells == [f"{all_j} ({rep_j})", f"{all_f} ({rep_f})", f"{all_m} ({rep_m})"]
    assert low == "0" and float(ours.split("|")[5]) >= 0.15
