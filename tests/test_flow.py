"""Flow estimators, registry, frame pairing, visualisation and the motion export."""

from __future__ import annotations

import numpy as np
import pytest

from attentionflow.errors import AttentionFlowError, ConfigError, InputError
from attentionflow.flow import estimators as est_mod
from attentionflow.flow.estimators import (
    DISFlow,
    FarnebackFlow,
    FlowEstimator,
    available_flow_estimators,
    get_flow_estimator,
    register_flow_estimator,
)
from attentionflow.flow.motion import MotionOptions, compute_flows, motion_maps
from attentionflow.flow.visualize import flow_to_color, map_to_image, motion_overlay
from tests.synthetic import MovingSquare, make_video

METHODS = ["dis", "farneback"]


def _interior(a: np.ndarray, margin: int) -> np.ndarray:
    return a[..., margin:-margin, margin:-margin, :]


@pytest.mark.parametrize("method", METHODS)
def test_estimators_recover_shift_with_x_first_and_y_down(method: str) -> None:
    # Whole content moves 3 px right and 2 px down between the frames.
    frames, _ = make_video(96, 2, pan=(3, 2), seed=1)
    flow = get_flow_estimator(method)(frames[0], frames[1])
    assert flow.shape == (96, 96, 2) and flow.dtype == np.float32
    median = np.median(_interior(flow, 12).reshape(-1, 2), axis=0)
    np.testing.assert_allclose(median, [3.0, 2.0], atol=0.3)


def test_registry_lists_builtins_and_rejects_unknown_names() -> None:
    names = available_flow_estimators()
    assert names[:2] == ["dis", "farneback"]
    assert isinstance(get_flow_estimator("DIS"), DISFlow)
    assert isinstance(get_flow_estimator("farneback"), FarnebackFlow)
    assert isinstance(DISFlow(), FlowEstimator)
    with pytest.raises(ConfigError) as err:
        get_flow_estimator("raft")
    msg = str(err.value)
    assert msg.startswith("unknown flow method 'raft'; choose from: dis, farneback")
    assert "\n" not in msg


def test_registered_estimator_is_used_by_motion_maps_without_touching_callers() -> None:
    class BoxFlow:
        """Pretend learned estimator: 2 px east inside a fixed box, zero elsewhere."""

        name = "box_test"

        def __call__(self, frame_a: np.ndarray, frame_b: np.ndarray) -> np.ndarray:
            flow = np.zeros(frame_a.shape[:2] + (2,), np.float32)
            flow[10:20, 5:25, 0] = 2.0
            return flow

    register_flow_estimator("box_test", BoxFlow)
    try:
        with pytest.raises(ConfigError, match="already registered"):
            register_flow_estimator("box_test", BoxFlow)
        assert "box_test" in available_flow_estimators()
        frames, _ = make_video(32, 3, seed=2)
        result = motion_maps(frames, MotionOptions(flow="box_test", camera_motion="keep"))
        expected = np.zeros((32, 32, 2), np.float32)
        expected[10:20, 5:25, 0] = 2.0
        for i in range(2):  # forward flows, used as they are (camera_motion keep)
            np.testing.assert_array_equal(result.flows[i], expected)
            np.testing.assert_array_equal(result.residual_flows[i], expected)
        # The last frame uses the negated backward flow.
        np.testing.assert_array_equal(result.flows[2], -expected)
    finally:
        est_mod._REGISTRY.pop("box_test", None)


def test_frame_pairing_uses_next_frame_and_negated_backward_flow_for_last() -> None:
    class IndexFlow:
        """Encodes which frames it was called with: u = b - a, v = a (frames are constant = index)."""

        name = "index"

        def __call__(self, frame_a: np.ndarray, frame_b: np.ndarray) -> np.ndarray:
            a, b = float(frame_a[0, 0, 0]), float(frame_b[0, 0, 0])
            flow = np.empty(frame_a.shape[:2] + (2,), np.float32)
            flow[..., 0] = b - a
            flow[..., 1] = a
            return flow

    n = 5
    frames = np.stack([np.full((4, 6, 3), i, np.uint8) for i in range(n)])
    flows = compute_flows(frames, IndexFlow())
    assert flows.shape == (n, 4, 6, 2)
    for i in range(n - 1):
        np.testing.assert_array_equal(flows[i, ..., 0], 1.0)  # i -> i+1
        np.testing.assert_array_equal(flows[i, ..., 1], float(i))
    # Last: estimator(N-1, N-2) = (-1, N-1), negated -> (1, -(N-1)).
    np.testing.assert_array_equal(flows[-1, ..., 0], 1.0)
    np.testing.assert_array_equal(flows[-1, ..., 1], -(n - 1.0))


@pytest.mark.parametrize("method", METHODS)
def test_last_frame_flow_matches_the_others_on_constant_velocity(method: str) -> None:
    frames, _ = make_video(96, 4, pan=(3, 0), seed=3)
    flows = compute_flows(frames, get_flow_estimator(method))
    medians = np.median(_interior(flows, 12).reshape(4, -1, 2), axis=1)  # (N, 2)
    np.testing.assert_allclose(medians, np.tile([3.0, 0.0], (4, 1)), atol=0.3)


def test_compute_flows_rejects_too_few_or_bad_frames() -> None:
    one = np.zeros((1, 8, 8, 3), np.uint8)
    with pytest.raises(InputError) as err:
        compute_flows(one, DISFlow())
    assert str(err.value) == "MMI needs at least 2 frames, got 1"
    with pytest.raises(InputError, match="float32"):
        compute_flows(np.zeros((2, 8, 8, 3), np.float32), DISFlow())
    with pytest.raises(InputError, match=r"\(2, 8, 8\)"):
        motion_maps(np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(AttentionFlowError, match="different shapes"):
        DISFlow()(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 9, 3), np.uint8))


def test_flow_to_color_follows_the_compass_hue_wheel() -> None:
    flow = np.zeros((1, 6, 2), np.float32)
    flow[0, 0] = (2.0, 0.0)  # east -> red
    flow[0, 1] = (-2.0, 0.0)  # west -> cyan
    flow[0, 2] = (0.0, -2.0)  # north (up on screen) -> hue 90 deg, yellow-green
    flow[0, 3] = (0.0, 2.0)  # south -> hue 270 deg, violet
    flow[0, 4] = (1.0, 0.0)  # east, half magnitude -> half brightness
    # flow[0, 5] = 0 -> black
    rgb = flow_to_color(flow).astype(int)
    assert rgb.shape == (1, 6, 3)
    east, west, north, south, half, still = rgb[0]
    assert east[0] == 255 and east[1] == 0 and east[2] == 0
    assert west[0] == 0 and west[1] == 255 and west[2] == 255
    assert north[1] == 255 and 100 < north[0] < 160 and north[2] == 0
    assert south[2] == 255 and 100 < south[0] < 160 and south[1] == 0
    assert abs(half[0] - 128) <= 1 and half[1] == 0
    assert (still == 0).all()
    # A common scale: with max_magnitude=4 the 2 px east vector is at half brightness.
    assert abs(int(flow_to_color(flow, max_magnitude=4.0)[0, 0, 0]) - 128) <= 1


def test_map_to_image_and_overlay() -> None:
    m = np.array([[0.0, 0.5, 1.0, 2.0]], np.float32)
    gray = map_to_image(m)
    assert gray.dtype == np.uint8 and gray.tolist() == [[0, 128, 255, 255]]
    assert map_to_image(m, colormap=2).shape == (1, 4, 3)

    frames = np.full((2, 8, 8, 3), 100, np.uint8)
    maps = np.zeros((2, 8, 8), np.float32)
    maps[:, :4] = 1.0
    np.testing.assert_array_equal(motion_overlay(frames, maps, alpha=0.0), frames)
    over = motion_overlay(frames, maps, alpha=1.0)
    assert over.shape == frames.shape
    # Jet: map 1 is dark red; where the map is 0 the frame shows unchanged (the tint follows the motion).
    assert over[0, 0, 0, 0] > over[0, 0, 0, 2]
    np.testing.assert_array_equal(over[:, 4:], frames[:, 4:])
    half = motion_overlay(frames, maps * 0.5, alpha=1.0).astype(int)  # weight alpha * map = 0.5
    heat = map_to_image(np.full((8, 8), 0.5, np.float32), colormap=2).astype(int)  # cv2.COLORMAP_JET
    assert np.abs(half[0, 0, 0] - np.round(0.5 * 100 + 0.5 * heat[0, 0])).max() <= 1
    # Attention-resolution maps are resized to the frame size.
    assert motion_overlay(frames, np.ones((2, 2, 2), np.float32)).shape == frames.shape
    with pytest.raises(InputError):
        motion_overlay(frames, maps[:1])


def test_flow_scale_ignores_outliers_and_still_pixels() -> None:
    from attentionflow.flow.visualize import flow_scale

    flows = np.zeros((3, 20, 20, 2), np.float32)
    flows[:, 5:15, 5:15, 0] = 2.0  # the object moves 2 px per frame
    flows[0, 0, 0] = (60.0, 0.0)  # one bad vector
    top = flow_scale(flows)
    assert top == pytest.approx(2.0)  # the 99th percentile of the moving pixels, not the outlier
    assert flow_to_color(flows[1], max_magnitude=top)[10, 10].max() == 255  # the object at full brightness
    assert flow_to_color(flows[1], max_magnitude=60.0)[10, 10].max() < 10  # what the plain maximum gave: dark
    assert flow_scale(np.zeros((2, 4, 4, 2), np.float32)) is None  # a still video


def test_export_motion_writes_pngs_video_and_arrays(tmp_path) -> None:
    pytest.importorskip("attentionflow.io.video")
    import av
    import cv2

    from attentionflow.flow.export import export_motion

    n = 4
    frames, _ = make_video(64, n, (MovingSquare(10, 20, 20, 3, 0),), seed=4)
    result = motion_maps(frames)
    paths = export_motion(frames, result, tmp_path / "motion", fps=8.0)
    assert set(paths) == {
        "flow_dir",
        "map_dir",
        "overlay",
        "motion_maps",
        "flows",
        "mask_dir",
        "masks",
        "mask_overlay",
    }

    flow_pngs = sorted(paths["flow_dir"].glob("*.png"))
    map_pngs = sorted(paths["map_dir"].glob("*.png"))
    assert len(flow_pngs) == n and len(map_pngs) == n
    assert cv2.imread(str(flow_pngs[0]), cv2.IMREAD_UNCHANGED).shape == (64, 64, 3)
    gray = cv2.imread(str(map_pngs[1]), cv2.IMREAD_UNCHANGED)
    assert gray.shape == (64, 64)
    np.testing.assert_allclose(gray, np.round(result.maps[1] * 255), atol=1)

    maps = np.load(paths["motion_maps"])
    flows = np.load(paths["flows"])
    assert maps.shape == (n, 64, 64) and maps.dtype == np.float32
    assert flows.shape == (n, 64, 64, 2) and flows.dtype == np.float32
    np.testing.assert_array_equal(maps, result.maps)

    with av.open(str(paths["overlay"])) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == n and decoded[0].shape == (64, 64, 3)

    with pytest.raises(InputError):
        export_motion(frames[:3], result, tmp_path / "bad")
