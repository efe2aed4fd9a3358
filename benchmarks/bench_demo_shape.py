"""Does the demo's edited object keep one shape from frame to frame? Figures for the demo grid.

    python benchmarks/bench_demo_shape.py [--model embedded] [--threads 2] [--out DIR]
    python benchmarks/bench_demo_shape.py --from outputs/demo       # judge an existing demo output folder

Runs the demo's edit (``configs/demo.yaml``'s settings, ``attentionflow.commands.demo.demo_config``) with ``--model``
(default
the embedded toy model), then judges every frame of the input, the reconstruction and each edit with the toy
world's pixel judge (``attentionflow.toyworld.judge``: the largest object away from the background colour). Per
video it prints:

* the object's colour and shape class per frame (c = circle, s = square, t = triangle, - = none);
* **stability**: mean IoU of each frame's object mask with frame 0's, both moved so that their centroids meet
  (1 = the same shape in every frame, wherever it is);
* **overlap**: mean IoU of the object mask with the input's object mask of the same frame (1 = the edit keeps the
  input's outline in place);
* **roundness**: mean IoU of the mask with a circle fitted to its bounding box.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attentionflow.io.video import read_frames  # noqa: E402
from attentionflow.toyworld.judge import judge, shape_scores  # noqa: E402


def centred(mask: np.ndarray) -> np.ndarray:
    """``mask`` (H, W) bool rolled so that its centroid sits at the frame's centre (empty masks unchanged)."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return mask
    h, w = mask.shape
    return np.roll(mask, (h // 2 - int(round(ys.mean())), w // 2 - int(round(xs.mean()))), axis=(0, 1))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two (H, W) bool masks (0 when both are empty)."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def shape_figures(frames: np.ndarray, reference_masks: list[np.ndarray]) -> dict[str, object]:
    """The judge's view of ``frames`` (N, H, W, 3) uint8 and the three figures (see the module docstring)."""
    verdicts = [judge(f) for f in frames]
    masks = [v.mask for v in verdicts]
    first = centred(masks[0])
    return {
        "colours": " ".join(v.colour or "-" for v in verdicts),
        "shapes": "".join((v.shape or "-")[0] for v in verdicts),
        "stability": float(np.mean([iou(centred(m), first) for m in masks[1:]])) if len(masks) > 1 else 1.0,
        "overlap": float(np.mean([iou(m, r) for m, r in zip(masks, reference_masks)])),
        "roundness": float(np.mean([shape_scores(m)["circle"] for m in masks])),
    }


def judge_folder(out: Path) -> list[tuple[str, dict[str, object]]]:
    """Figures of every video under ``out/frames`` (input first): ``[(name, figures), ...]``."""
    folders = sorted(p for p in (out / "frames").iterdir() if p.is_dir())
    videos = {p.name: read_frames(p) for p in folders}
    if "input" not in videos:
        raise SystemExit(f"{out / 'frames'} has no input/ folder: is it an attentionflow output folder?")
    reference = [judge(f).mask for f in videos["input"]]
    order = ["input", "reconstruction"] + [n for n in videos if n not in ("input", "reconstruction")]
    return [(name, shape_figures(videos[name], reference)) for name in order if name in videos]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="embedded", help="model folder or 'embedded'")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=None, help="where the demo edit is written (default: a temp folder)")
    p.add_argument("--from", dest="source", type=Path, default=None, help="judge this output folder, run nothing")
    args = p.parse_args()
    if args.source is not None:
        out = args.source
        print(f"judging {out}")
    else:
        import torch

        from attentionflow.commands.demo import DEMO_FRAMES, demo_clip, demo_config
        from attentionflow.io.writers import write_frames
        from attentionflow.jobs import run_edit_job

        torch.set_num_threads(args.threads)
        out = args.out or Path(tempfile.mkdtemp(prefix="af_demo_shape_")) / "demo"
        clip = out.parent / f"{out.name}_input"
        if not clip.exists():
            write_frames(demo_clip(), clip)
        cfg = demo_config(str(out))
        cfg.pretrained_model_path = args.model
        cfg.input_data.video_path = str(clip)
        run_edit_job(cfg, overwrite=True, progress=False)
        print(f"the demo edit ({DEMO_FRAMES} frames, model {args.model}, {args.threads} threads) -> {out}")
    print("| video | colour per frame | shape per frame | stability | overlap with the input | roundness |")
    print("|---|---|---|---:|---:|---:|")
    for name, f in judge_folder(out):
        print(f"| {name} | {f['colours']} | {f['shapes']} | {f['stability']:.3f} | {f['overlap']:.3f} | "
              f"{f['roundness']:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
