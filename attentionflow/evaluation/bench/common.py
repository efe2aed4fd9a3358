"""What both toy-world suites of ``attentionflow bench quality`` share: settings, the suite names, report marks,
the per-method summary and table cells."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from attentionflow.config import AttentionSettings, EditConfig, ValidationDataConfig
from attentionflow.errors import ConfigError

#: ``--suite`` values: the one-object suite, the "motion decides" suite
#: (:mod:`attentionflow.evaluation.bench.motion`), both.
SUITES: tuple[str, ...] = ("all", "single", "motion")
#: The motion word of both suites' captions.
MOTION_WORD = "moving"
#: The mark of ``bench quality``'s reports: quality.json's ``report`` key, quality.md's first characters.
REPORT_KIND = "attentionflow bench quality"
REPORT_HEADER = "# Toy-world editing quality"


@dataclass
class BenchSettings:
    """Settings of one benchmark run (all of them go into the report)."""

    tasks: int | None = None
    """Run the first N tasks of each suite (None: all)."""
    steps: int = 25
    frames: int = 8
    size: int = 64
    guidance_scale: float = 7.5
    inversion: str = ValidationDataConfig.inversion
    """The inversion method (the config default unless --inversion)."""
    seed: int = 33
    flow: str = "dis"
    suite: str = "all"
    """Which suites run: single (one object per scene), motion (the "motion decides" suite) or all."""
    chunk_frames: int | str = EditConfig.chunk_frames
    """Frames per model call (auto: every frame when they fit; a number smaller than the frames measures the chunk
    scheme of dense ST attention, docs/long_videos.md)."""

    @property
    def attention(self) -> AttentionSettings:
        """The attention settings of the suite's edits: the config defaults with :attr:`chunk_frames`."""
        return AttentionSettings.default(chunk_frames=self.chunk_frames)

    def validate(self, suite: str | None = None) -> None:
        """Raise :class:`ConfigError` for impossible settings of ``suite`` (default: :attr:`suite`, what the CLI
        runs; a suite's runner passes its own name)."""
        suite = self.suite if suite is None else suite
        if self.tasks is not None and self.tasks < 1:
            raise ConfigError(
                f"--tasks {self.tasks} is invalid; use an integer >= 1 (the first N tasks of each suite)"
            )
        if suite not in SUITES:
            raise ConfigError(f"--suite {suite!r} is invalid; choose from: {', '.join(SUITES)}")
        if suite != "single" and self.size < 32:
            raise ConfigError(f"--size {self.size} is too small for the motion suite's multi-object scenes; use "
                              "--size 32 or more, or --suite single")
        if self.steps < 1:
            raise ConfigError(f"--steps {self.steps} is invalid; use an integer >= 1")
        if self.frames < 2:
            raise ConfigError(f"--frames {self.frames} is invalid; the motion metrics need >= 2 frames")
        if self.size < 16:
            raise ConfigError(f"--size {self.size} is invalid; use an integer >= 16")
        if self.chunk_frames != "auto" and (not isinstance(self.chunk_frames, int) or self.chunk_frames < 1):
            raise ConfigError(f"--chunk-frames {self.chunk_frames!r} is invalid; use auto or an integer >= 1")


def mean_score(values: Sequence[float | None]) -> float | None:
    """The mean of the values that are numbers (not None, not NaN); None when there are none."""
    import numpy as np

    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return None
    return float(np.mean(vals))


def summarise(records: Sequence[dict[str, Any]], names: Sequence[str], keys: Sequence[str],
              kinds: Sequence[str]) -> tuple[dict[str, dict[str, float | None]], dict[str, dict[str, float | None]]]:
    """Per method: the mean over tasks of each score in ``keys`` and ``seconds_per_edit``; per method and task kind:
    the mean ``success``. ``records``: per task, ``{"kind", "methods": {name: scores}}`` (both suites' layout)."""

    def mean_of(name: str, key: str, rows: Sequence[dict[str, Any]]) -> float | None:
        return mean_score([r["methods"][name].get(key) for r in rows])

    summary = {n: {**{k: mean_of(n, k, records) for k in keys}, "seconds_per_edit": mean_of(n, "seconds", records)}
               for n in names}
    by_kind = {n: {k: mean_of(n, "success", [r for r in records if r["kind"] == k]) for k in kinds} for n in names}
    return summary, by_kind


def cell(value: float | None, fmt: str) -> str:
    """A table cell: ``-`` for a missing value, ``inf`` for an infinite one, else ``fmt``."""
    if value is None:
        return "-"
    if math.isinf(value):
        return "inf"
    return fmt.format(value)
