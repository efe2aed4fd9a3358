"""How fast does a bad input fail? Seconds to the one-line error for the hostile cases of issue 28.

    python benchmarks/bench_hostile_inputs.py [CASE ...]

Runs each case of ``tests/test_hostile_input.py`` (plus a FIFO as VIDEO) as a real ``python -m attentionflow``
process in a scratch folder and prints, per case: the exit code, wall seconds (process start included), the number
of stderr lines and whether a traceback appeared. The goal is exit 2, one line, no traceback and under 2 s for
every check that needs no model weights. An A/A row (``--help``, twice) shows the machine's own start-up cost and
its noise.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attentionflow.io.writers import write_frames, write_mp4  # noqa: E402
from attentionflow.toyworld.world import make_video  # noqa: E402
from tests.test_hostile_input import CASES, SRC, TGT  # noqa: E402  (the same cases as the tests)


def run(argv: list[str], cwd: Path) -> tuple[int | None, float, int, bool]:
    start = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "attentionflow", *argv], cwd=cwd, capture_output=True,
                              text=True, timeout=60, stdin=subprocess.DEVNULL)
        code, err = proc.returncode, proc.stderr
    except subprocess.TimeoutExpired:
        code, err = None, "timeout"
    return code, time.perf_counter() - start, len([x for x in err.splitlines() if x.strip()]), "Traceback" in err


def main() -> int:
    only = set(sys.argv[1:])
    frames = make_video(SRC, frames=4, size=64, seed=0).frames
    cases = {"aa-help-1": lambda w: ["--help"], "aa-help-2": lambda w: ["--help"],
             "fifo-as-video": lambda w: (os.mkfifo(w / "fifo.mp4"), ["edit", str(w / "fifo.mp4"), "--source", SRC,
                                                                       "--target", TGT, "--out", "o", "-q"])[1],
             **{k: v[0] for k, v in CASES.items()}}
    print("| case | exit | seconds | stderr lines | traceback |\n|---|---:|---:|---:|---|")
    worst = 0.0
    for name, build in cases.items():
        if only and name not in only:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            write_frames(frames, work / "frames")
            write_mp4(frames, work / "clip.mp4")
            code, seconds, lines, tb = run(build(work), work)
        worst = max(worst, seconds) if not name.startswith("aa-") else worst
        print(f"| {name} | {code} | {seconds:.2f} | {lines} | {'yes' if tb else 'no'} |", flush=True)
    print(f"\nslowest case: {worst:.2f} s (goal < 2 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
