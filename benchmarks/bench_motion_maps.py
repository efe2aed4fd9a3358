"""Where the motion maps put their mass: tracking shots, a synthetic pan, a static video (issue 15's benchmark).

    python benchmarks/bench_motion_maps.py [--threads 1]

For every clip with hand-marked subject boxes (tests/data/tracking-boxes.json: man-running and horse-running of
configs/videos, tracking shots) it prints the share of the motion map's mass inside the subject's box (mean of the
marked frames), and the box's own share of the frame (what a uniform map would score), for the three
``camera_motion`` modes:

- ``keep``: raw flow magnitude;
- ``homography``: a RANSAC homography subtracted (the default before 2026-12-02);
- ``compensate`` (the default): per frame pair the homography or the epipolar geometry (Sampson distance), GRIC
  picks (``attentionflow/flow/motion.py``, ``compensate_camera_motion_robust``); the letters after the figure are the
  model of each frame pair (h = homography, e = epipolar, n = no fit).

Then the synthetic pan-plus-mover (tests/synthetic.py: IoU of map >= 0.5 with the mover), a static video (the
largest map value, which must be 0), and the time per frame pair of each camera-motion estimate at 256 and 512
(the synthetic pan, where the robust mode keeps the homography, and man-running, where it fits both models).
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

from attentionflow.flow.camera import compensate_camera_motion, compensate_camera_motion_robust  # noqa: E402
from attentionflow.flow.estimators import get_flow_estimator  # noqa: E402
from attentionflow.flow.motion import MotionOptions, compute_flows, motion_maps  # noqa: E402
from attentionflow.flow.segment import forward_backward_error  # noqa: E402
from attentionflow.io.video import read_frames  # noqa: E402
from benchmarks.bench_flow import _best_of  # noqa: E402
from tests.synthetic import MovingSquare, iou, make_video  # noqa: E402

MODES = ("keep", "homography", "compensate")


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
    print(f"## Mass of the motion map inside the subject box ({time.strftime('%Y-%m-%d')}, "
          f"`python benchmarks/bench_motion_maps.py --threads {args.threads}`)\n")
    print("| clip | box share | " + " | ".join(MODES) + " |")
    print("|---|---:|" + "---:|" * len(MODES))
    for clip, boxes in data["clips"].items():
        frames = read_frames(ROOT / clip)
        cells, share = [], 0.0
        for mode in MODES:
            result = motion_maps(frames, MotionOptions(camera_motion=mode))
            mass, share = box_mass(result.maps, boxes)
            kinds = "".join(k[0] for k in result.camera_model_kinds) if mode == "compensate" else ""
            cells.append(f"{mass:.3f}" + (f" ({kinds})" if kinds else ""))
        print(f"| {Path(clip).stem} | {share:.3f} | " + " | ".join(cells) + " |")
    frames, masks = make_video(128, 6, (MovingSquare(60, 40, 44, -4, 0),), pan=(2, 0), seed=2)
    cells = []
    for mode in MODES:
        maps = motion_maps(frames, MotionOptions(camera_motion=mode)).maps
        cells.append(f"{np.mean([iou(maps[i] >= 0.5, masks[i, 0]) for i in range(6)]):.3f}")
    print("| synthetic pan + mover (IoU with the mover) | - | " + " | ".join(cells) + " |")
    still = np.repeat(make_video(128, 1, (), seed=3)[0], 4, axis=0)
    cells = [f"{float(motion_maps(still, MotionOptions(camera_motion=mode)).maps.max()):.3f}" for mode in MODES]
    print("| static video (largest map value; 0 = all-zero maps) | - | " + " | ".join(cells) + " |")
    print(f"\n## Camera-motion estimate per frame pair (ms, best of 5, {args.threads} OpenCV thread(s))\n")
    print("| size | clip | homography | compensate (robust) | + forward-backward check (epipolar pairs: a backward "
          "flow and the check) |")
    print("|---|---|---:|---:|---:|")
    runner = read_frames(ROOT / "configs" / "videos" / "man-running.mp4", n_frames=2)
    for size in (256, 512):
        pan, _ = make_video(size, 2, (MovingSquare(size // 2, size // 4, size // 3, -4, 0),), pan=(2, 0), seed=2)
        track = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_CUBIC) for f in runner])
        estimator = get_flow_estimator("dis")
        for name, clip in (("synthetic pan", pan), ("man-running", track)):
            flow = compute_flows(clip, estimator)[0]  # (H, W, 2)
            th = _best_of(lambda: compensate_camera_motion(flow), 5) * 1000
            tr = _best_of(lambda: compensate_camera_motion_robust(flow), 5) * 1000
            epipolar = compensate_camera_motion_robust(flow)[2] == "epipolar"
            tf = _best_of(lambda: forward_backward_error(flow, estimator(clip[1], clip[0])), 5) * 1000
            print(f"| {size} | {name} | {th:.1f} | {tr:.1f} | " + (f"{tf:.1f}" if epipolar else "- (homography)")
                  + " |")


if __name__ == "__main__":
    main()
