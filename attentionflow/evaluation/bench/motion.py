"""``attentionflow bench quality --suite motion``: the "motion decides" suite.

Every task renders a multi-object toy scene (:func:`attentionflow.toyworld.world.make_scene`) in which the prompt
alone cannot say which object to edit: a mover beside static look-alikes (its own colour and shape), beside
different-looking objects, two look-alike movers going different ways (direction guidance picks one), or a
background change that must leave the mover intact. The caption names the mover, as a user would ("a red circle is
moving on the road"), and the target changes one attribute of it (or the background).

Methods (one shared inversion per task):

- ``p2p``: prompt-to-prompt (default :class:`~attentionflow.config.P2PConfig`), MMI off;
- ``p2p+blend``: the same with word-based local blend (the shape word, or the background word for background
  tasks, of both prompts);
- ``p2p+mmi``: prompt-to-prompt + MMI (motion word ``moving``; the task's direction, if any);
- ``p2p+mmi+region``: the same plus ``edit_region`` (``moving`` for object edits, ``static`` for background
  edits).

Scores per frame, with the toy judge on crops around each object's ground-truth box
(:meth:`attentionflow.toyworld.world.SceneObject.boxes`):

- ``mover``: object tasks: the judged attribute of the mover (colour or shape) is the target's; background
  tasks: the judged background is the target's and the mover is intact (PSNR on its pixels >= 25 dB, judged colour
  and shape as in the source);
- ``distractors``: every other object is unchanged: PSNR on its pixels >= :data:`KEEP_DB` and its judged colour and
  shape equal to the judge's reading of the source (background tasks do not score them);
- ``bg_psnr``: PSNR against the source outside every object's box (object tasks);
- ``success``: ``mover`` and ``distractors`` and ``bg_psnr >= KEEP_DB`` (object tasks) in that frame.

A task's figure is the share of its frames; the suite's figure is the mean over tasks.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Literal, Sequence

from attentionflow.config import InversionSettings, MMIConfig, P2PConfig
from attentionflow.errors import AttentionFlowError
from attentionflow.evaluation.bench.common import MOTION_WORD, cell, summarise

if TYPE_CHECKING:
    import numpy as np

    from attentionflow.toyworld.world import ObjectSpec, ToyScene

logger = logging.getLogger(__name__)

MotionKind = Literal["look-alike", "distinct", "two movers", "background"]
#: PSNR (dB) above which an object or the background counts as unchanged.
KEEP_DB = 25.0


@dataclass(frozen=True)
class MotionTask:
    """One task of the suite: a scene (the first mover is the one the caption names) and a target caption."""

    name: str
    kind: MotionKind
    objects: tuple[Any, ...]
    """:class:`~attentionflow.toyworld.world.ObjectSpec` per object, the named mover first."""
    background: str
    attribute: Literal["colour", "shape", "background"]
    new: str
    """The target colour, shape or background word."""
    seed: int
    direction: str | None = None
    """Compass word of the named mover's heading, given to MMI's direction guidance (two-mover tasks)."""

    def scene(self, frames: int, size: int) -> ToyScene:
        from attentionflow.toyworld.world import make_scene

        return make_scene(list(self.objects), self.background, frames=frames, size=size, seed=self.seed,
                          radius_range=(0.12, 0.14))

    def prompts(self) -> tuple[str, str]:
        """(source caption, target caption)."""
        from attentionflow.toyworld.world import make_caption

        first = self.objects[0]
        attrs = {"colour": first.colour, "shape": first.shape, "background": self.background}
        source = make_caption(attrs["colour"], attrs["shape"], attrs["background"], MOTION_WORD)
        attrs[self.attribute] = self.new
        return source, make_caption(attrs["colour"], attrs["shape"], attrs["background"], MOTION_WORD)


def _tasks() -> tuple[MotionTask, ...]:
    from attentionflow.toyworld.world import ObjectSpec as O

    def t(kind: MotionKind, objs: Sequence[ObjectSpec], bg: str, attr: str, new: str, seed: int,
          direction: str | None = None) -> MotionTask:
        first = objs[0]
        old = {"colour": first.colour, "shape": first.shape, "background": bg}[attr]
        label = f"{kind}: {attr} {old}->{new} ({first.colour} {first.shape} on {bg}, {len(objs) - 1} other)"
        return MotionTask(label, kind, tuple(objs), bg, attr, new, seed, direction)  # type: ignore[arg-type]

    E, W, N, S = 0.0, 180.0, 90.0, 270.0
    return (
        t("look-alike", [O("red", "circle", True), O("red", "circle")], "road", "colour", "blue", 1),
        t(
            "look-alike",
            [O("green", "square", True), O("green", "square"), O("green", "square")],
            "sand",
            "colour",
            "purple",
            2,
        ),
        t("look-alike", [O("blue", "triangle", True), O("blue", "triangle")], "snow", "colour", "red", 3),
        t(
            "look-alike",
            [O("yellow", "circle", True), O("yellow", "circle"), O("yellow", "circle")],
            "grass",
            "colour",
            "red",
            4,
        ),
        t("look-alike", [O("red", "square", True), O("red", "square")], "water", "shape", "circle", 5),
        t("look-alike", [O("white", "circle", True), O("white", "circle")], "road", "shape", "square", 6),
        t("distinct", [O("red", "circle", True), O("blue", "square")], "grass", "colour", "yellow", 7),
        t(
            "distinct",
            [O("purple", "triangle", True), O("yellow", "circle"), O("white", "square")],
            "road",
            "colour",
            "green",
            8,
        ),
        t("distinct", [O("blue", "circle", True), O("red", "triangle")], "sand", "shape", "square", 9),
        t("distinct", [O("green", "square", True), O("white", "circle")], "water", "shape", "triangle", 10),
        t(
            "two movers",
            [O("red", "circle", True, E), O("red", "circle", True, W)],
            "road",
            "colour",
            "green",
            11,
            "E",
        ),
        t(
            "two movers",
            [O("blue", "square", True, N), O("blue", "square", True, S)],
            "grass",
            "colour",
            "yellow",
            12,
            "N",
        ),
        t(
            "two movers",
            [O("yellow", "triangle", True, W), O("yellow", "triangle", True, E)],
            "water",
            "colour",
            "purple",
            13,
            "W",
        ),
        t("background", [O("red", "circle", True), O("red", "circle")], "road", "background", "snow", 14),
        t("background", [O("blue", "square", True), O("yellow", "triangle")], "grass", "background", "sand", 15),
        t("background", [O("purple", "circle", True)], "water", "background", "road", 16),
    )


MOTION_TASKS: tuple[MotionTask, ...] = _tasks()


@dataclass(frozen=True)
class MotionMethod:
    """One editing method of the suite: its P2P and MMI sections for a task."""

    name: str
    label: str
    p2p: Callable[[MotionTask], P2PConfig]
    mmi: Callable[[MotionTask], MMIConfig]


def _blend_words(task: MotionTask) -> list[str]:
    first = task.objects[0]
    if task.attribute == "background":
        return [task.background, task.new]
    if task.attribute == "shape":
        return [first.shape, task.new]
    return [first.shape, first.shape]


def _mmi(task: MotionTask) -> MMIConfig:
    return MMIConfig(motion_words=[MOTION_WORD], direction=task.direction)


MOTION_METHODS: tuple[MotionMethod, ...] = (
    MotionMethod("p2p", "(a) prompt-to-prompt", lambda t: P2PConfig(), lambda t: MMIConfig(enabled=False)),
    MotionMethod("p2p+blend", "(b) P2P + word local blend", lambda t: P2PConfig(blend_words=_blend_words(t)),
                 lambda t: MMIConfig(enabled=False)),
    MotionMethod("p2p+mmi", "(c) P2P + MMI", lambda t: P2PConfig(), _mmi),
    MotionMethod("p2p+mmi+region", "(d) P2P + MMI + edit_region",
                 lambda t: P2PConfig(edit_region="static" if t.attribute == "background" else "moving"), _mmi),
)

#: Summary columns: (key, title, higher is better, format).
MOTION_COLUMNS: tuple[tuple[str, str, bool, str], ...] = (
    ("success", "success", True, "{:.1%}"),
    ("mover", "mover edited", True, "{:.1%}"),
    ("distractors", "others kept", True, "{:.1%}"),
    ("distractor_psnr", "others PSNR (dB)", True, "{:.2f}"),
    ("bg_psnr", "bg PSNR (dB)", True, "{:.2f}"),
)


def _crop(frame: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The bounding rectangle of ``box (H, W) bool`` cut out of ``frame (H, W, 3)``."""
    import numpy as np

    ys, xs = np.nonzero(box)
    return frame[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1]


def _judge_crop(frame: np.ndarray, box: np.ndarray) -> tuple[str | None, str | None]:
    from attentionflow.toyworld.judge import judge

    j = judge(_crop(frame, box))
    return j.colour, j.shape


def _psnr_frame(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    from attentionflow.evaluation import metrics

    if not mask.any():
        return math.inf
    return metrics.psnr(a[None], b[None], mask=mask[None])


def score_motion_edit(task: MotionTask, scene: ToyScene, edited: np.ndarray) -> dict[str, Any]:
    """Score one edited video ``(F, H, W, 3)`` uint8 of ``task`` (see the module docstring)."""
    import numpy as np

    from attentionflow.evaluation import metrics
    from attentionflow.toyworld.judge import judge

    frames = scene.frames
    n = len(frames)
    boxes = [obj.boxes() for obj in scene.objects]  # per object (F, H, W), once per video
    mover, mover_boxes = scene.objects[0], boxes[0]
    others = list(zip(scene.objects[1:], boxes[1:]))
    all_boxes = np.logical_or.reduce(boxes)  # (F, H, W)
    mover_ok, others_ok, success, other_db = [], [], [], []
    bg_psnr = None
    if task.attribute != "background":
        v = metrics.psnr(frames, edited, mask=~all_boxes)
        bg_psnr = None if math.isnan(v) else v
    for i in range(n):
        if task.attribute == "background":
            judged_bg = judge(edited[i], mask=all_boxes[i]).background
            intact = (_psnr_frame(frames[i], edited[i], mover.masks[i]) >= KEEP_DB
                      and _judge_crop(edited[i], mover_boxes[i]) == _judge_crop(frames[i], mover_boxes[i]))
            m_ok = judged_bg == task.new and intact
            o_ok = True
        else:
            colour, shape = _judge_crop(edited[i], mover_boxes[i])
            m_ok = (colour if task.attribute == "colour" else shape) == task.new
            o_ok = True
            for obj, obj_boxes in others:
                box = obj_boxes[i]
                db = _psnr_frame(frames[i], edited[i], obj.masks[i])
                other_db.append(db)
                o_ok &= db >= KEEP_DB and _judge_crop(edited[i], box) == _judge_crop(frames[i], box)
        bg_ok = True
        if task.attribute != "background":
            bg_ok = _psnr_frame(frames[i], edited[i], ~all_boxes[i]) >= KEEP_DB
        mover_ok.append(m_ok)
        others_ok.append(o_ok)
        success.append(m_ok and o_ok and bg_ok)
    finite = [d for d in other_db if math.isfinite(d)]
    return {
        "success": float(np.mean(success)),
        "mover": float(np.mean(mover_ok)),
        "distractors": float(np.mean(others_ok)) if task.attribute != "background" and others else None,
        "distractor_psnr": float(np.mean(finite)) if finite else None,
        "bg_psnr": bg_psnr,
    }


def run_motion_bench(pipeline: Any, settings: Any, *, progress: bool = True,
                     on_task: Callable[[list[dict[str, Any]]], None] | None = None,
                     methods: Sequence[MotionMethod] = MOTION_METHODS,
                     tasks: Sequence[MotionTask] | None = None) -> dict[str, Any]:
    """Run the suite with an :class:`~attentionflow.pipeline.AttentionFlowPipeline`; returns the report.

    ``settings``: :class:`attentionflow.evaluation.bench.single.BenchSettings` (steps, frames, size, guidance,
    inversion, seed; its
    ``tasks``, when set, keeps the first N tasks). ``tasks``: run these instead. Report: ``tasks`` (per task and
    method: scores, seconds, region IoU), ``summary`` (per method: means over tasks), ``by_kind`` (per method and
    kind: mean success), ``runtime_s``.
    """
    from tqdm.auto import tqdm

    pipeline.set_progress_bar_config(disable=True)
    inv = InversionSettings.default(num_inference_steps=settings.steps, guidance_scale=settings.guidance_scale,
                                    inversion=settings.inversion)
    chosen = list(tasks if tasks is not None else MOTION_TASKS[: settings.tasks])
    started = time.perf_counter()
    records: list[dict[str, Any]] = []
    bar = tqdm(total=len(chosen) * len(methods), desc="bench motion", disable=not progress)
    for task in chosen:
        scene = task.scene(settings.frames, settings.size)
        source, target = task.prompts()
        rec: dict[str, Any] = {"task": task.name, "kind": task.kind, "source": source, "target": target,
                               "seed": task.seed, "direction": task.direction, "methods": {}}
        t0 = time.perf_counter()
        inversion = pipeline.invert(scene.frames, source, inv, settings.attention, seed=settings.seed)
        rec["inversion_seconds"] = time.perf_counter() - t0
        for method in methods:
            t0 = time.perf_counter()
            plan = pipeline.plan(source, [target], inv, settings.attention, p2p=method.p2p(task),
                                 mmi=method.mmi(task), seed=settings.seed)
            try:
                out = pipeline.edit(scene.frames, plan, inversion)
            except AttentionFlowError as exc:  # an edit_region that finds no motion: the method fails this task
                scores: dict[str, Any] = {"success": 0.0, "mover": 0.0, "distractors": None, "distractor_psnr": None,
                                          "bg_psnr": None, "error": str(exc)}
            else:
                scores = score_motion_edit(task, scene, out.edits[0])
                if out.region is not None:
                    truth = scene.moving_masks if task.kind != "two movers" else scene.objects[0].masks
                    inter = (out.region & truth).sum()
                    scores["region_iou"] = float(inter / max(1, (out.region | truth).sum()))
            scores["seconds"] = time.perf_counter() - t0
            rec["methods"][method.name] = scores
            bar.update(1)
            logger.info("%s | %s: %s", task.name, method.name, scores)
        records.append(rec)
        if on_task is not None:
            on_task(records)
    bar.close()
    kinds = list(dict.fromkeys(r["kind"] for r in records))
    summary, by_kind = summarise(records, [m.name for m in methods],
                                 [key for key, *_ in MOTION_COLUMNS] + ["region_iou"], kinds)
    return {"tasks": records, "summary": summary, "by_kind": by_kind, "kinds": kinds,
            "methods": [m.name for m in methods], "runtime_s": time.perf_counter() - started}


def format_motion_markdown(report: dict[str, Any]) -> str:
    """The suite's section of ``quality.md``: summary table, success by kind, per-task success."""
    labels = {m.name: m.label for m in MOTION_METHODS}
    names = report["methods"]
    lines = [
        "## Motion decides: multi-object scenes where only motion tells which object to edit",
        "",
        f"{len(report['tasks'])} tasks x {len(names)} methods in {report['runtime_s'] / 60:.1f} min. A frame succeeds "
        f"when the named mover is edited as the target says, every other object is unchanged (PSNR on its pixels >= "
        f"{KEEP_DB:g} dB and the judge reads the same colour and shape as in the source) and the background outside "
        f"the objects' boxes keeps >= {KEEP_DB:g} dB; background tasks need the target background and an "
        "intact mover.",
        "",
        "| method | " + " | ".join(f"{t} {'↑' if h else '↓'}" for _, t, h, _ in MOTION_COLUMNS) + " | s / edit |",
        "|---|" + "---:|" * (len(MOTION_COLUMNS) + 1),
    ]
    for name in names:
        row = report["summary"][name]
        cells = [cell(row.get(k), f) for k, _, _, f in MOTION_COLUMNS]
        lines.append(f"| {labels.get(name, name)} | " + " | ".join(cells)
                     + f" | {cell(row.get('seconds_per_edit'), '{:.1f}')} |")
    kinds = report["kinds"]
    lines += ["", "Success by task kind:", "", "| method | " + " | ".join(kinds) + " |",
              "|---|" + "---:|" * len(kinds)]
    for name in names:
        lines.append(f"| {labels.get(name, name)} | "
                     + " | ".join(cell(report["by_kind"][name][k], "{:.1%}") for k in kinds) + " |")
    lines += ["", "Per task (success share of frames):", "", "| task | " + " | ".join(names) + " |",
              "|---|" + "---:|" * len(names)]
    for r in report["tasks"]:
        lines.append(f"| {r['task']} | "
                     + " | ".join(cell(r["methods"][n]["success"], "{:.0%}") for n in names) + " |")
    iou = report["summary"].get("p2p+mmi+region", {}).get("region_iou")
    if iou is not None:
        lines += ["", f"Region masks of (d) against the true mover masks: mean IoU {iou:.2f}."]
    return "\n".join(lines) + "\n"
