"""Optical-flow and motion-map speed at 512x512 (CPU).

    python benchmarks/bench_flow.py [--size 512] [--frames 8] [--repeats 3] [--threads 0]

Prints frame pairs per second for every registered flow method, the per-frame cost of camera-motion
compensation alone, then the time of ``motion_maps`` on
``--frames`` frames with and without camera-motion compensation. The video is synthetic (textured
background panning 2 px/frame, a textured square moving 4 px/frame the other way), so nothing is
downloaded. ``--threads`` sets OpenCV's thread count (0 = OpenCV's default).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attentionflow.flow import MotionOptions, available_flow_estimators, get_flow_estimator, motion_maps  # noqa: E402
from attentionflow.flow.camera import compensate_camera_motion  # noqa: E402
from tests.synthetic import MovingSquare, make_video  # noqa: E402


def _best_of(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``repeats`` calls after one warm-up call (seconds)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="OpenCV threads (0 = default)")
    args = parser.parse_args()
    if args.threads > 0:
        cv2.setNumThreads(args.threads)

    side = args.size // 4
    frames, _ = make_video(
        args.size, args.frames, (MovingSquare(args.size // 2, args.size // 3, side, -4, 0),), pan=(2, 0), seed=0
    )
    print(f"{args.size}x{args.size}, {args.frames} frames, OpenCV {cv2.__version__}, threads {cv2.getNumThreads()}")

    pairs = args.frames - 1
    for name in available_flow_estimators():
        estimator = get_flow_estimator(name)

        def run_pairs(est=estimator) -> None:
            for i in range(pairs):
                est(frames[i], frames[i + 1])

        seconds = _best_of(run_pairs, args.repeats)
        print(f"flow {name:<10} {pairs / seconds:8.1f} pairs/s  ({1000 * seconds / pairs:.1f} ms/pair)")

    flow = get_flow_estimator("dis")(frames[0], frames[1])
    seconds = _best_of(lambda: compensate_camera_motion(flow), args.repeats)
    print(f"camera-motion compensation alone {1000 * seconds:8.1f} ms/frame (RANSAC homography + subtraction)")

    for name in available_flow_estimators():
        for camera in ("keep", "compensate"):
            options = MotionOptions(flow=name, camera_motion=camera)
            seconds = _best_of(lambda o=options: motion_maps(frames, o), args.repeats)
            print(f"motion_maps {name:<10} camera={camera:<10} {1000 * seconds:8.1f} ms for {args.frames} frames")


if __name__ == "__main__":
    main()
