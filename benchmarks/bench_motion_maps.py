"""Where the motion maps put their mass: tracking shots, a synthetic pan, a static video (issue 15's benchmark).

    python benchmarks/bench_motion_maps.py [--threads 1]

For every clip with hand-marked subject boxes (tests/data/tracking-boxes.json: man-running and horse-running of
configs/videos, tracking shots) it prints the share of the motion map's mass inside the subject's box (mean of the
marked frames), and the box's own share of the frame (what a uniform map would score), for:

- ``keep``: raw flow magnitude;
- ``homography``: the library's ``camera_motion: compensate`` (RANSAC homography subtracted; today's default);
- ``sampson (prototype)``: a fundamental matrix fitted with RANSAC to the flow correspondences, each pixel scored by
  its Sampson distance to its epipolar line (static scene points satisfy it at any depth), minus twice the frame's
  median score. It lives in this script only: it is not a library mode yet (see issue 15's notes).

Then the synthetic pan-plus-mover (tests/synthetic.py: IoU of map >= 0.5 with the mover), a static video (the
largest map value, which must be 0), and the time per frame pair of each camera-motion estimate at 256 and 512.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from attentionflow.flow.estimators import get_flow_estimator  # noqa: E402
from attentionflow.flow.motion import (MotionOptions, _sample_grid, compensate_camera_motion,  # noqa: E402
                                       compute_flows, motion_maps, normalize_per_frame)
from attentionflow.io.video import read_frames  # noqa: E402
from benchmarks.bench_flow import _best_of  # noqa: E402
from tests.synthetic import MovingSquare, iou, make_video  # noqa: E402


def sampson_scores(flow: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """``(H, W)`` Sampson distance (pixels) of every pixel's correspondence ``(p, p + flow(p))`` to a fundamental
    matrix fitted with RANSAC on a grid of them; zeros when the fit fails."""
    h, w = flow.shape[:2]
    gy, gx = _sample_grid(h, w, 2000, 0.05)
    src = np.stack([gx, gy], 1).astype(np.float32)  # (P, 2)
    dst = src + flow[gy, gx]
    fm, _ = cv2.findFundamentalMat(src, dst, cv2.FM_RANSAC, threshold, 0.999)
    if fm is None or fm.shape != (3, 3):
        return np.zeros((h, w), np.float32)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)  # (H, W) each
    x1 = np.stack([xs, ys, np.ones_like(xs)], -1)  # (H, W, 3) homogeneous pixels of the frame
    x2 = np.stack([xs + flow[..., 0], ys + flow[..., 1], np.ones_like(xs)], -1)  # ... and where they go
    fx1, ftx2 = x1 @ fm.T, x2 @ fm  # (H, W, 3) each
    num = (x2 * fx1).sum(-1) ** 2
    den = fx1[..., 0] ** 2 + fx1[..., 1] ** 2 + ftx2[..., 0] ** 2 + ftx2[..., 1] ** 2
    return np.sqrt(num / np.maximum(den, 1e-12)).astype(np.float32)


def sampson_maps(frames: np.ndarray) -> np.ndarray:
    """``(N, H, W)`` prototype maps: Sampson scores minus twice each frame's median, clipped at 0, per-frame max 1."""
    flows = compute_flows(frames, get_flow_estimator("dis"))  # (N, H, W, 2)
    scores = np.stack([sampson_scores(f) for f in flows])  # (N, H, W)
    floor = 2.0 * np.median(scores.reshape(len(scores), -1), axis=1)[:, None, None]
    maps, _ = normalize_per_frame(np.maximum(scores - floor, 0.0), 0.1)
    return maps


def box_mass(maps: np.ndarray, boxes: dict[str, list[float]]) -> tuple[float, float]:
    """Mean over the marked frames of (map mass inside the box, the box's share of the frame)."""
    mass, share = [], []
    for key, (x0, y0, x1, y1) in boxes.items():
        m = maps[int(key)]
        h, w = m.shape
        box = np.zeros((h, w), bool)
        box[int(y0 * h): int(y1 * h), int(x0 * w): int(x1 * w)] = True
        mass.append(float(m[box].sum() / max(float(m.sum()), 1e-9)))
        share.append(float(box.mean()))
    return float(np.mean(mass)), float(np.mean(share))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1, help="OpenCV threads (default 1: the goal is per core)")
    args = p.parse_args()
    cv2.setNumThreads(args.threads)
    data = json.loads((ROOT / "tests" / "data" / "tracking-boxes.json").read_text())
    modes = {
        "keep": lambda f: motion_maps(f, MotionOptions(camera_motion="keep")).maps,
        "homography": lambda f: motion_maps(f, MotionOptions(camera_motion="compensate")).maps,
        "sampson (prototype)": sampson_maps,
    }
    print(f"## Mass of the motion map inside the subject box ({time.strftime('%Y-%m-%d')}, "
          f"`python benchmarks/bench_motion_maps.py --threads {args.threads}`)\n")
    print("| clip | box share | " + " | ".join(modes) + " |")
    print("|---|---:|" + "---:|" * len(modes))
    for clip, boxes in data["clips"].items():
        frames = read_frames(ROOT / clip)
        cells, share = [], 0.0
        for fn in modes.values():
            mass, share = box_mass(fn(frames), boxes)
            cells.append(f"{mass:.3f}")
        print(f"| {Path(clip).stem} | {share:.3f} | " + " | ".join(cells) + " |")
    frames, masks = make_video(128, 6, (MovingSquare(60, 40, 44, -4, 0),), pan=(2, 0), seed=2)
    cells = [f"{np.mean([iou(m[i] >= 0.5, masks[i, 0]) for i in range(6)]):.3f}"
             for m in (fn(frames) for fn in modes.values())]
    print("| synthetic pan + mover (IoU with the mover) | - | " + " | ".join(cells) + " |")
    still = np.repeat(make_video(128, 1, (), seed=3)[0], 4, axis=0)
    cells = [f"{float(fn(still).max()):.3f}" for fn in modes.values()]
    print("| static video (largest map value; 0 = all-zero maps) | - | " + " | ".join(cells) + " |")
    print("\n## Camera-motion estimate per frame pair (ms, median of 5)\n")
    print("| size | homography | sampson (prototype) |")
    print("|---|---:|---:|")
    for size in (256, 512):
        frames, _ = make_video(size, 2, (MovingSquare(size // 2, size // 4, size // 3, -4, 0),), pan=(2, 0), seed=2)
        flow = compute_flows(frames, get_flow_estimator("dis"))[0]  # (H, W, 2)
        th = _best_of(lambda: compensate_camera_motion(flow), 5) * 1000
        ts = _best_of(lambda: sampson_scores(flow), 5) * 1000
        print(f"| {size} | {th:.1f} | {ts:.1f} |")


if __name__ == "__main__":
    main()
