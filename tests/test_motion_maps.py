"""Motion maps: localisation, camera-motion compensation, direction guidance, static videos, resizing.

Maps are thresholded at 0.5 to compare with true masks: the ideal map of one rigidly moving object
is two-level (0 on the background, 1 on the object after per-frame normalisation), so 0.5 is the
midpoint, and a flow estimator's symmetric blur of the motion boundary crosses it at the true edge.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from attentionflow.errors import AttentionFlowError, ConfigError, InputError
from attentionflow.flow.camera import camera_flow
from attentionflow.flow.motion import (
    MotionOptions,
    motion_maps,
    motion_maps_for_resolutions,
    parse_direction,
    resize_motion_maps,
    smooth_along_time,
)
from tests.synthetic import MovingSquare, iou, make_video

METHODS = ["dis", "farneback"]
THRESHOLD = 0.5
SIZE = 128
FRAMES = 6


@pytest.mark.parametrize("method", METHODS)
def test_moving_square_is_localised_on_every_frame(method: str) -> None:
    frames, masks = make_video(SIZE, FRAMES, (MovingSquare(30, 40, 48, 3, 0),), seed=0)
    result = motion_maps(frames, MotionOptions(flow=method))  # compensation on (default)
    assert result.maps.shape == (FRAMES, SIZE, SIZE) and result.maps.dtype == np.float32
    assert result.maps.min() >= 0.0 and result.maps.max() == 1.0
    ious = [iou(result.maps[i] >= THRESHOLD, masks[i, 0]) for i in range(FRAMES)]
    assert min(ious) >= 0.8, ious


def test_compensation_leaves_a_static_camera_video_unchanged() -> None:
    frames, _ = make_video(SIZE, 4, (MovingSquare(30, 40, 40, 3, 0),), seed=1)
    result = motion_maps(frames)
    for model in result.camera_models:
        assert model is not None
        # The fitted camera motion moves no pixel by more than a few hundredths of a pixel.
        assert np.abs(camera_flow(model, SIZE, SIZE)).max() < 0.15
    assert np.abs(result.residual_flows - result.flows).max() < 0.15
    keep = motion_maps(frames, MotionOptions(camera_motion="keep"))
    assert np.abs(keep.maps - result.maps).max() < 0.1


@pytest.mark.parametrize("method", METHODS)
def test_camera_pan_is_compensated(method: str) -> None:
    # Background content pans 2 px/frame east; the object moves 4 px/frame west on screen.
    frames, masks = make_video(SIZE, FRAMES, (MovingSquare(60, 40, 44, -4, 0),), pan=(2, 0), seed=2)
    obj = masks[:, 0]
    comp = motion_maps(frames, MotionOptions(flow=method))
    keep = motion_maps(frames, MotionOptions(flow=method, camera_motion="keep"))
    for i in range(FRAMES):
        # The fitted camera motion is the pan: about (2, 0) at every pixel.
        shift = camera_flow(comp.camera_models[i], SIZE, SIZE)
        np.testing.assert_allclose(np.median(shift.reshape(-1, 2), axis=0), [2.0, 0.0], atol=0.3)
        assert iou(comp.maps[i] >= THRESHOLD, obj[i]) >= 0.7
        background_comp = comp.magnitudes[i][~obj[i]].mean()
        background_keep = keep.magnitudes[i][~obj[i]].mean()
        assert background_comp < 0.3 and comp.maps[i][~obj[i]].mean() < 0.1
        # Without compensation the whole background moves (2 px vs the object's 4 px).
        assert background_keep > 1.5 and background_keep > 5 * background_comp


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    ("direction", "mode"), [("E", "cone"), (0, "cone"), ("E", "project"), ("W", "cone"), (180.0, "project")]
)
def test_direction_guidance_keeps_only_the_matching_object(method: str, direction, mode: str) -> None:
    east, west = MovingSquare(10, 20, 32, 3, 0), MovingSquare(80, 76, 32, -3, 0)
    frames, masks = make_video(SIZE, 4, (east, west), seed=3)
    result = motion_maps(frames, MotionOptions(flow=method, direction=direction, direction_mode=mode))
    keep_idx = 0 if parse_direction(direction) == 0.0 else 1
    for i in range(4):
        kept = result.maps[i][masks[i, keep_idx]].sum()
        dropped = result.maps[i][masks[i, 1 - keep_idx]].sum()
        assert kept > 50 * max(dropped, 1e-3), (i, kept, dropped)
    plain = motion_maps(frames, MotionOptions(flow=method))
    for i in range(4):  # without guidance both objects are in the map
        assert plain.maps[i][masks[i, 0]].mean() > 0.5 and plain.maps[i][masks[i, 1]].mean() > 0.5


def test_direction_angles_use_screen_north_up() -> None:
    # Object moving up the screen (image y decreasing) is "N" = 90 degrees, not "S".
    frames, masks = make_video(96, 3, (MovingSquare(30, 50, 30, 0, -3),), seed=4)
    north = motion_maps(frames, MotionOptions(direction="N"))
    south = motion_maps(frames, MotionOptions(direction=270))
    for i in range(3):
        assert north.maps[i][masks[i, 0]].mean() > 0.5
        assert south.maps[i][masks[i, 0]].sum() < 0.02 * north.maps[i][masks[i, 0]].sum()


@pytest.mark.parametrize("method", METHODS)
def test_static_video_gives_zero_maps_without_nan(method: str) -> None:
    frames, _ = make_video(64, 4, seed=5)
    rng = np.random.default_rng(0)
    noisy = np.clip(frames.astype(np.int16) + rng.integers(-2, 3, frames.shape), 0, 255).astype(np.uint8)
    for video in (frames, noisy):
        for camera in ("compensate", "keep"):
            result = motion_maps(video, MotionOptions(flow=method, camera_motion=camera))
            assert np.isfinite(result.maps).all()
            assert (result.maps == 0).all()
            resized = resize_motion_maps(result.maps_tensor(), (8, 8))
            assert torch.isfinite(resized).all() and (resized == 0).all()


def test_temporal_smoothing_is_a_gaussian_in_frames() -> None:
    impulse = np.zeros((5, 1, 1), np.float32)
    impulse[2] = 1.0
    out = smooth_along_time(impulse, sigma=1.0)[:, 0, 0]
    t = np.arange(5.0)
    dist = np.abs(t[:, None] - t[None, :])  # (target, source)
    gauss = np.where(dist <= 3.0, np.exp(-0.5 * dist**2), 0.0)  # truncated at 3 sigma
    np.testing.assert_allclose(out, gauss[:, 2] / gauss.sum(axis=1), rtol=1e-5)
    # At the ends the kernel is renormalised over existing frames: a constant stays constant.
    np.testing.assert_allclose(smooth_along_time(np.ones((4, 2, 2)), sigma=2.0), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(smooth_along_time(impulse, 0.0), impulse)

    # Through motion_maps: a frame pair without motion inherits motion from its neighbours.
    frames, _ = make_video(64, 4, (MovingSquare(10, 20, 20, 3, 0),), seed=6)
    frames = np.concatenate([frames[:3], frames[2:3], frames[2:3]])  # frames 2, 3, 4 identical
    plain = motion_maps(frames)
    smooth = motion_maps(frames, MotionOptions(temporal_smoothing=1.0))
    assert plain.magnitudes[3].max() < plain.min_motion < smooth.magnitudes[3].max()


def test_resize_motion_maps_shapes_normalisation_and_small_objects() -> None:
    maps = torch.zeros(3, 64, 64)
    maps[0, 1:3, 1:3] = 1.0  # a 2x2 blob: point sampling on an 8x8 grid would miss it
    maps[1, 32:, :] = torch.linspace(0, 7, 64)  # un-normalised input
    # frame 2 static
    out = resize_motion_maps(maps, (8, 8))
    assert out.shape == (3, 8, 8)
    assert out[0, 0, 0] == 1.0 and out[0].sum() == 1.0
    assert out[1].max() == 1.0 and (out[1, :4] == 0).all()
    assert (out[2] == 0).all()

    wide = resize_motion_maps(maps, (6, 10))
    assert wide.shape == (3, 6, 10)
    np.testing.assert_allclose(wide.amax(dim=(1, 2)).numpy(), [1.0, 1.0, 0.0])
    up = resize_motion_maps(maps[:, :4, :4], (8, 8))  # upsampling works too
    assert up.shape == (3, 8, 8) and up[0].max() == 1.0

    for dtype in (torch.float64, torch.float16, torch.bfloat16):
        assert resize_motion_maps(maps.to(dtype), (4, 4)).dtype == dtype
    if torch.cuda.is_available():
        assert resize_motion_maps(maps.cuda(), (4, 4)).device.type == "cuda"
    else:
        assert resize_motion_maps(maps.to("meta"), (4, 4)).device.type == "meta"

    with pytest.raises(InputError):
        resize_motion_maps(maps[0], (8, 8))
    with pytest.raises(InputError, match=r"\(0, 8\)"):
        resize_motion_maps(maps, (0, 8))


def test_motion_maps_for_resolutions_computes_each_size_once() -> None:
    maps = torch.rand(2, 32, 48)
    sizes = [(8, 12), (4, 6), (8, 12), (2, 3)]
    out = motion_maps_for_resolutions(maps, sizes)
    assert list(out) == [(8, 12), (4, 6), (2, 3)]
    for (h, w), tensor in out.items():
        assert tensor.shape == (2, h, w)
        torch.testing.assert_close(tensor, resize_motion_maps(maps, (h, w)))


def test_parse_direction_words_and_angles() -> None:
    assert parse_direction(None) is None and parse_direction("") is None and parse_direction("none") is None
    expected = {"E": 0, "NE": 45, "N": 90, "NW": 135, "W": 180, "SW": 225, "S": 270, "SE": 315}
    for word, angle in expected.items():
        assert parse_direction(word) == angle
        assert parse_direction(word.lower()) == angle
    assert parse_direction(-90) == 270.0
    assert parse_direction("45") == 45.0
    assert parse_direction(360) == 0.0


@pytest.mark.parametrize("bad", ["NNE", "up", 400, -361.0, "1e9", True, float("nan"), [90]])
def test_parse_direction_errors_name_the_value(bad) -> None:
    with pytest.raises(ConfigError) as err:
        parse_direction(bad)
    msg = str(err.value)
    assert repr(bad) in msg and "\n" not in msg
    assert "N, NE, E, SE, S, SW, W, NW" in msg


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("flow", "raft"),
        ("direction", "NNE"),
        ("direction_tolerance", 0.0),
        ("direction_tolerance", 200.0),
        ("direction_mode", "both"),
        ("camera_motion", "fix"),
        ("temporal_smoothing", -1.0),
        ("temporal_smoothing", math.inf),
        ("min_motion", -0.1),
    ],
)
def test_options_validation_errors_are_one_line(field: str, bad) -> None:
    options = MotionOptions(**{field: bad})
    with pytest.raises(AttentionFlowError) as err:
        options.validate()
    assert isinstance(err.value, ConfigError)
    msg = str(err.value)
    assert repr(bad) in msg and "\n" not in msg
    with pytest.raises(ConfigError):
        motion_maps(np.zeros((2, 8, 8, 3), np.uint8), options)
    assert MotionOptions().validate() == MotionOptions()
