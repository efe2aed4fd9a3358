"""Metrics on constructed cases whose answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from attentionflow.errors import InputError
from attentionflow.evaluation import metrics
from attentionflow.flow import get_flow_estimator
from tests.synthetic import texture


def panning_video(n: int = 5, size: int = 48, speed: int = 3, seed: int = 0) -> np.ndarray:
    """(n, size, size, 3) uint8: a crop window sliding over a larger texture, content moving ``speed``
    px/frame to the right (no wrap-around)."""
    big = texture(size, size + speed * n + 2, np.random.default_rng(seed), sigma=2.0)
    # content moves right: frame t shows the window starting at x0 - speed * t
    x0 = speed * n
    return np.stack([big[:, x0 - speed * t: x0 - speed * t + size] for t in range(n)])


@pytest.fixture(scope="module")
def pan():
    return panning_video()


@pytest.fixture(scope="module")
def dis():
    return get_flow_estimator("dis")


def test_identical_videos(pan, dis):
    assert metrics.psnr(pan, pan) == math.inf
    assert metrics.ssim(pan, pan) == pytest.approx(1.0, abs=1e-6)
    assert metrics.flicker(pan, pan) == 0.0
    static = np.repeat(pan[:1], 4, axis=0)  # (4, H, W, 3): identical frames
    fwd, bwd = metrics.pair_flows(static, dis)
    assert np.abs(fwd).max() == 0.0
    assert metrics.warp_error(static, fwd, bwd) == 0.0


def test_warp_frame_integer_shift():
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 255, (10, 12, 3)).astype(np.float32)
    flow = np.zeros((10, 12, 2), np.float32)
    flow[..., 0] = 2.0  # out[y, x] = frame[y, x + 2]
    warped, inside = metrics.warp_frame(frame, flow)
    np.testing.assert_allclose(warped[:, :10], frame[:, 2:])
    assert inside[:, :10].all() and not inside[:, 10:].any()


def test_occlusion_mask_consistent_shift():
    fwd = np.zeros((8, 10, 2), np.float32)
    fwd[..., 0] = 3.0
    occ = metrics.occlusion_mask(fwd, -fwd)
    assert not occ[:, :7].any()  # consistent and inside
    assert occ[:, 7:].all()  # x + 3 leaves the frame
    inconsistent = metrics.occlusion_mask(fwd, np.zeros_like(fwd))  # backward flow disagrees by 3 px
    assert inconsistent.all()


def test_warp_error_low_for_true_motion_and_higher_when_shuffled(pan, dis):
    fwd, bwd = metrics.pair_flows(pan, dis)
    good = metrics.warp_error(pan, fwd, bwd)
    shuffled = pan[[0, 3, 1, 4, 2]]
    bad = metrics.warp_error(shuffled, fwd, bwd)
    assert good < 2.0  # grey levels: consecutive frames line up under the source flow
    assert bad > 5 * good
    per_pair = metrics.warp_errors(pan, fwd, bwd)
    assert per_pair.shape == (len(pan) - 1,)


def test_warp_error_mask_restricts_region(pan, dis):
    fwd, bwd = metrics.pair_flows(pan, dis)
    edited = pan.copy()
    edited[2:, :, :16] = 0  # corrupt the left part of frames 2.. -> pairs (1,2) disagree there
    left = np.zeros(pan.shape[:3], bool)
    left[:, :, :16] = True
    whole = metrics.warp_error(edited, fwd, bwd)
    right_only = metrics.warp_error(edited, fwd, bwd, mask=~left)
    assert right_only < 2.0 < whole


def test_flow_epe_of_shifted_copy(dis):
    fast = panning_video(speed=3)
    slow = panning_video(speed=1)
    f_fast, _ = metrics.pair_flows(fast, dis, backward=False)
    f_slow, _ = metrics.pair_flows(slow, dis, backward=False)
    inner = np.zeros(f_fast.shape[:3], bool)
    inner[:, 6:-6, 6:-6] = True  # keep away from the borders where content enters
    assert metrics.flow_epe(f_fast, f_slow, inner) == pytest.approx(2.0, abs=0.25)
    static = np.repeat(fast[:1], len(fast), axis=0)
    f_static, _ = metrics.pair_flows(static, dis, backward=False)
    assert metrics.flow_epe(f_fast, f_static, inner) == pytest.approx(3.0, abs=0.25)
    assert metrics.flow_epe(f_fast, f_fast) == 0.0


def test_psnr_known_value_and_mask(pan):
    edited = pan.astype(np.float32)
    edited[:, :12, :] += 10.0  # a quarter of the rows (48 px high) brightened by 10
    src = pan.astype(np.float32)
    expected = 10 * math.log10(255 ** 2 / (100 * 12 / 48))
    assert metrics.psnr(src, edited) == pytest.approx(expected, rel=1e-5)
    outside = np.ones(pan.shape[:3], bool)
    outside[:, :12, :] = False
    assert metrics.psnr(src, edited, mask=outside) == math.inf
    assert metrics.psnr(src, edited, mask=~outside) == pytest.approx(10 * math.log10(255 ** 2 / 100), rel=1e-5)
    assert metrics.ssim(src, edited, mask=outside[0]) > metrics.ssim(src, edited)  # (H, W) mask broadcasts


def test_ssim_constant_images_closed_form():
    a = np.full((1, 16, 16, 3), 100.0, np.float32)
    b = np.full((1, 16, 16, 3), 140.0, np.float32)
    c1 = (0.01 * 255) ** 2
    expected = (2 * 100 * 140 + c1) / (100 ** 2 + 140 ** 2 + c1)  # luminance term only; no variance
    assert metrics.ssim(a, b) == pytest.approx(expected, rel=1e-4)
    noisy = a + np.random.default_rng(0).normal(0, 20, a.shape).astype(np.float32)
    assert metrics.ssim(a + np.random.default_rng(1).normal(0, 20, a.shape), noisy) < 0.5


def test_flicker_known_value(pan):
    src = pan.astype(np.float32) * 0.5 + 60  # mid-range, no clipping after +10
    offsets = np.array([0, 10, 0, 10, 0], np.float32)[:, None, None, None]
    assert metrics.flicker(src, src + offsets) == pytest.approx(10.0, rel=1e-5)
    assert metrics.flicker(src, src + 7.0) == pytest.approx(0.0, abs=1e-4)  # constant shift is no flicker


def test_shape_errors(pan):
    with pytest.raises(InputError, match="differ"):
        metrics.psnr(pan, pan[:, :32])
    with pytest.raises(InputError, match="mask"):
        metrics.psnr(pan, pan, mask=np.ones((2, 3, 4), bool))
    with pytest.raises(InputError, match="forward flows"):
        metrics.warp_error(pan, np.zeros((2, 4, 4, 2), np.float32))


def test_resize_video_and_masks():
    video = np.zeros((2, 20, 30, 3), np.uint8)
    assert metrics.resize_video(video, 10, 15).shape == (2, 10, 15, 3)
    masks = np.zeros((2, 20, 30), bool)
    masks[:, :10] = True
    small = metrics.resize_video(masks, 10, 15, nearest=True)
    assert small.dtype == bool and small[:, :5].all() and not small[:, 5:].any()


def test_clip_preprocess_normalises_and_crops():
    mean = np.array(metrics.CLIP_MEAN)
    frame = np.empty((1, 40, 80, 3), np.uint8)
    frame[:, :, :20] = 0  # left quarter black (cropped away by the centre crop)
    frame[:, :, 20:] = np.round(mean * 255).astype(np.uint8)
    x = metrics.clip_preprocess(frame, 32)
    assert x.shape == (1, 3, 32, 32) and x.dtype == torch.float32
    assert x.abs().max() < 0.02  # only the mean-coloured middle is left, normalised to ~0


def test_clip_embedding_metrics():
    e = torch.randn(1, 8)
    same = e.repeat(5, 1)  # (5, 8): identical frames
    assert metrics.frame_consistency(same) == pytest.approx(1.0, abs=1e-6)
    assert metrics.frame_consistency(torch.stack([e[0], -e[0]])) == pytest.approx(-1.0, abs=1e-6)
    assert math.isnan(metrics.frame_consistency(e))
    scores = metrics.clip_text_scores(same, e[0])
    assert scores.shape == (5,) and torch.allclose(scores, torch.full((5,), 100.0), atol=1e-4)
    target, source = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    frames = torch.tensor([[0.9, 0.1], [0.2, 0.8], [1.0, 0.0], [0.6, 0.4]])
    assert metrics.frame_accuracy(frames, target, source) == pytest.approx(0.75)


def test_centroid_path_and_error():
    masks = np.zeros((3, 20, 20), bool)
    masks[0, 2:5, 2:5] = True  # centre (3, 3)
    masks[1, 10:13, 4:7] = True  # centre (5, 11)
    path = metrics.centroid_path(masks)
    np.testing.assert_allclose(path[:2], [[3, 3], [5, 11]])
    assert np.isnan(path[2]).all()  # empty mask
    ref = np.array([[3.0, 3.0], [8.0, 15.0], [0.0, 0.0]])
    assert metrics.path_error(path, ref) == pytest.approx(2.5)  # (0 + 5) / 2, empty frame skipped


def test_attention_localisation():
    masks = np.zeros((2, 16, 16), bool)
    masks[:, :8, :8] = True  # top-left quarter
    inside = torch.zeros(2, 4, 4)
    inside[:, :2, :2] = 1.0
    assert metrics.attention_localisation(inside, masks) == pytest.approx(1.0)
    assert metrics.attention_localisation(torch.ones(2, 4, 4), masks) == pytest.approx(0.25)
    assert metrics.attention_localisation(1.0 - inside, masks) == pytest.approx(0.0)
    assert math.isnan(metrics.attention_localisation(torch.zeros(2, 4, 4), masks))


def test_path_error_remove_offset():
    ref = np.array([[0.0, 0.0], [2.0, 0.0], [4.0, 0.0]])
    shifted = ref + [1.0, 3.0]
    assert metrics.path_error(shifted, ref) == pytest.approx(math.sqrt(10))
    assert metrics.path_error(shifted, ref, remove_offset=True) == pytest.approx(0.0, abs=1e-12)
    static = np.full_like(ref, 2.0)
    assert metrics.path_error(static, ref, remove_offset=True) == pytest.approx(4.0 / 3.0)  # |-2|, 0, |2|


def test_psnr_is_video_level(pan):
    edited = pan.astype(np.float32)
    edited[1:] += 10.0  # frame 0 identical, the others off by 10 everywhere
    expected = 10 * math.log10(255 ** 2 / (100 * (len(pan) - 1) / len(pan)))
    assert metrics.psnr(pan, edited) == pytest.approx(expected, rel=1e-6)
