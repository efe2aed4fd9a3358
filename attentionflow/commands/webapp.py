"""``attentionflow app``: a Gradio web interface for one edit job at a time.

The page takes a video (an upload, or the built-in toy example rendered on the server), the source
prompt, one or more target prompts, the motion word (or ``auto``), MMI strength and direction, frame
sampling, size, steps, guidance, seed and null-text on/off. It runs
:func:`attentionflow.jobs.run_edit_job` with progress and shows the grid (input | reconstruction |
each edit), each video, the motion overlay, the per-token attention maps, and a zip of the whole
output folder.

Safety: the server binds to 127.0.0.1 unless told otherwise; uploads are limited in size
(``--max-upload-mb``), type (video files, gifs, png/jpg frames) and frame count (``--max-frames``);
only files Gradio itself received are read (a path from the browser is never opened: uploaded files
must lie in Gradio's upload cache and are copied into the app's own work folder). Bad input becomes a
message in the page. One edit runs at a time per model; a second request is told that the model is
busy and waits in the queue.

The logic lives in :class:`EditSession`, which needs no Gradio (tested directly);
:func:`build_app` wires it into ``gr.Blocks``. Gradio is imported only there (optional extra:
``pip install attentionflow[app]``).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import logging
import math
import os
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, Sequence

from attentionflow.config import EditConfig, InputDataConfig, MMIConfig, P2PConfig, ValidationDataConfig
from attentionflow.errors import AttentionFlowError, ConfigError, InputError, first_line
from attentionflow.options import apply_option, choices_of, doc_of, get_key, option, set_key

if TYPE_CHECKING:  # jobs imports the model stack lazily; the app imports it when an edit runs
    from attentionflow.jobs import JobResult

logger = logging.getLogger(__name__)

UPLOAD_VIDEO_TYPES = (".mp4", ".avi", ".mov", ".webm", ".mkv", ".gif")
UPLOAD_IMAGE_TYPES = (".png", ".jpg", ".jpeg")
DIRECTIONS = ("any", "N", "NE", "E", "SE", "S", "SW", "W", "NW")
MISSING_GRADIO = "the web app needs gradio: pip install attentionflow[app]"
BUSY = "busy: another edit is running; yours is queued and starts when it finishes"

ProgressFn = Callable[[str, int, int], None]
"""progress(stage, step, total): the page's stages (checking, loading, packing: total 1) and each pipeline step."""


@dataclass
class AppSettings:
    """Server-side limits and the initial form values."""

    model: str = "embedded"
    """Model every edit uses (diffusers folder, cached hub id or 'embedded')."""
    device: str = "auto"
    """Device of the model."""
    mixed_precision: str = "no"
    """Compute dtype: no, fp16 or bf16."""
    max_frames: int = 32
    """Most frames one edit may use."""
    max_upload_mb: float = 50.0
    """Largest accepted upload (one file, or all frames together), in MiB."""
    max_size: int = 1024
    """Largest width/height of the edited frames."""
    keep_results: int = 8
    """Result folders kept on the server (older ones are removed)."""
    max_targets: int = 4
    """Most target prompts one request may edit (each adds a batch row: one request must not hold the only slot
    for minutes)."""
    max_uploads_total_mb: float = 200.0
    """Cap on all stored uploads together, in MiB: each session keeps only its latest upload, and the
    oldest uploads of other sessions are removed when the total would pass the cap."""
    defaults: Any = None
    """EditConfig whose values fill the form (None: the toy demo's settings for 'embedded', else defaults)."""
    workdir: Path | None = None
    """Folder for uploads, the toy clip and results (None: a new temporary folder)."""


@dataclass
class EditForm:
    """The values of the page's edit form (defaults: the config's, see :mod:`attentionflow.config`)."""

    source: str = ""
    targets: str = ""
    """Target prompts, one per line."""
    motion_word: str = "auto"
    """'auto', 'none', or word(s) separated by commas."""
    mmi: bool = MMIConfig.enabled
    strength: float = MMIConfig.strength
    direction: str = "any"
    """'any', a compass word or an angle in degrees."""
    frames: int = InputDataConfig.n_sample_frames
    start: int = InputDataConfig.sample_start_idx
    stride: int = InputDataConfig.sample_frame_rate
    width: int = InputDataConfig.width
    height: int = InputDataConfig.height
    steps: int = ValidationDataConfig.num_inference_steps
    guidance: float = ValidationDataConfig.guidance_scale
    seed: int = EditConfig.seed
    inversion: str = ValidationDataConfig.inversion
    """direct, negative-prompt, null-text or ddim."""
    cross_replace: float = P2PConfig.cross_replace_steps  # type: ignore[assignment]
    """Prompt-to-prompt: fraction of steps with cross-attention replacement (p2p.cross_replace_steps)."""
    self_replace: float = P2PConfig.self_replace_steps
    """Prompt-to-prompt: fraction of steps with self-attention replacement (p2p.self_replace_steps)."""
    blend_words: str = ""
    """Local blend: one word, or one per prompt (source first), separated by commas; empty = off."""
    reweight: str = ""
    """Reweighting: WORD=FACTOR pairs separated by commas; empty = off."""
    edit_region: str = P2PConfig.edit_region
    """all, moving (only the moving object(s)) or static (all but them): p2p.edit_region."""
    chunk_frames: str = str(EditConfig.chunk_frames)
    """Frames per model call: auto, or a whole number (bounds memory for long videos): chunk_frames."""


@dataclass(frozen=True)
class FormField:
    """How the page shows one :class:`EditForm` field, and the ``edit`` option
    (:data:`~attentionflow.options.EDIT_OPTIONS`) it stands for: the config keys it sets, their parser, choices and
    help come from that option."""

    name: str
    flag: str
    widget: Literal["text", "lines", "choice", "check", "slider", "number"]
    label: str
    row: str
    """Fields of one row sit side by side; rows named ``advanced ...`` are in the folded section."""
    limits: tuple[float, float | str | None, float] | None = None
    """(low, high, step) of a slider or number; ``high`` may name an :class:`AppSettings` limit."""
    part: int = 0
    """Which of the option's values the field holds (``--size``: 0 width, 1 height)."""
    choices: tuple[str, ...] = ()
    """Offered first in a dropdown, before the option's own choices (a dropdown of these only takes any text)."""
    empty: str | None = None
    """The text meaning "none" (the option's keys are set to None); a blank field means it too."""
    info: str | None = None
    """Shown under the label (default: the first sentence of the option's config key docstring)."""


#: The page's edit form, in the order it shows the fields (one entry per :class:`EditForm` field).
FORM: tuple[FormField, ...] = (
    FormField("source", "--source", "text", "source prompt (describes the video)", "prompts", info=""),
    FormField("targets", "--target", "lines", "target prompts (one per line)", "prompts", info=""),
    FormField("motion_word", "--motion-word", "choice", "motion word", "motion", choices=("auto", "none"),
              empty="none", info="auto, none, or word(s) of the prompts"),
    FormField("mmi", "--no-mmi", "check", "Motion Map Injection", "motion", info=""),
    FormField("strength", "--mmi-strength", "slider", "MMI strength", "motion", (0.0, 1.0, 0.01), info=""),
    FormField("direction", "--direction", "choice", "motion direction", "motion", choices=DIRECTIONS, empty="any",
              info="compass word or angle in degrees"),
    FormField("frames", "--frames", "slider", "frames", "sampling", (1, "max_frames", 1), info=""),
    FormField("start", "--start", "number", "start frame", "sampling", (0, None, 1), info=""),
    FormField("stride", "--stride", "number", "stride", "sampling", (1, None, 1), info=""),
    FormField("width", "--size", "slider", "width", "sampling", (8, "max_size", 8), part=0, info=""),
    FormField("height", "--size", "slider", "height", "sampling", (8, "max_size", 8), part=1, info=""),
    FormField("steps", "--steps", "slider", "steps", "diffusion", (1, 100, 1), info=""),
    FormField("guidance", "--guidance", "slider", "guidance", "diffusion", (1.0, 20.0, 0.5), info=""),
    FormField("seed", "--seed", "number", "seed", "diffusion", info=""),
    FormField("inversion", "--inversion", "choice", "inversion", "advanced 1",
              info="direct: exact reconstruction, no optimisation"),
    FormField("cross_replace", "--cross-replace", "slider", "cross-attention replacement (fraction of steps)",
              "advanced 1", (0.0, 1.0, 0.05), info=""),
    FormField("self_replace", "--self-replace", "slider", "self-attention replacement (fraction of steps)",
              "advanced 1", (0.0, 1.0, 0.05), info=""),
    FormField("blend_words", "--blend-word", "text", "local blend word(s)", "advanced 2", empty="",
              info="one word, or one per prompt (source first), comma-separated"),
    FormField("reweight", "--reweight", "text", "reweight", "advanced 2", empty="",
              info="WORD=FACTOR, comma-separated"),
    FormField("edit_region", "--edit-region", "choice", "edit region", "advanced 2",
              info="moving: change only what moves (the direction above picks movers); static: keep the movers, "
                   "change the rest"),
    FormField("chunk_frames", "--chunk-frames", "text", "frames per model call", "advanced 2",
              info="auto, or a number: bounds memory for long videos"),
)


def field_choices(field: FormField) -> list[str]:
    """A dropdown's choices: the field's own, then its option's (from the config field's type)."""
    keys = option(field.flag).keys
    own = choices_of(keys[field.part]) if keys else None
    return list(dict.fromkeys(field.choices + (own or ())))


def field_info(field: FormField) -> str:
    """The text under a field's label: its own, else the first sentence of its config key's docstring."""
    if field.info is not None:
        return field.info
    keys = option(field.flag).keys
    return doc_of(keys[field.part]).split(". ")[0] if keys else ""


def _option_value(field: FormField, value: Any) -> Any:
    """One form value as its option's parsed value (text through the option's parser, a list option's text split
    into items: one per line for ``lines``, else by commas)."""
    opt = option(field.flag)
    if field.widget == "check" or not isinstance(value, str):
        return value
    text = value.strip()
    items = [t.strip() for t in text.split("\n" if field.widget == "lines" else ",")] if opt.kind == "list" else [text]
    try:
        parsed = [opt.parse(t) if opt.parse is not None else t for t in items if t]
    except argparse.ArgumentTypeError as exc:  # the CLI's parsers: their message is the form's
        raise ConfigError(str(exc)) from None
    return parsed if opt.kind == "list" else (parsed[0] if parsed else "")


def config_from_form(base: Any, form: EditForm) -> Any:
    """``base`` (an :class:`~attentionflow.config.EditConfig`, left as it is) with every form field written to its
    option's config keys, as the ``edit`` command would write the same flags."""
    config = copy.deepcopy(base)
    values: dict[str, list[Any]] = {}  # flag -> the values of its fields, by part
    for field in FORM:
        values.setdefault(field.flag, []).insert(field.part, getattr(form, field.name))
    for field in FORM:
        if field.part or field.flag not in values:
            continue
        raw = values.pop(field.flag)
        opt = option(field.flag)
        if field.widget == "check":  # a switch shows its key's value itself (--no-mmi: mmi.enabled)
            set_key(config, opt.keys[0], bool(raw[0]))
        elif field.empty is not None and str(raw[0]).strip() in ("", field.empty):
            for key in opt.keys:
                set_key(config, key, None)
        else:
            parsed = [_option_value(field, v) for v in raw]
            apply_option(config, opt, parsed[0] if len(parsed) == 1 else tuple(parsed))
    return config


def _form_text(field: FormField, value: Any) -> Any:
    if field.widget in ("check", "slider", "number"):
        return value
    if value is None or value == [] or value == {}:
        return field.empty or ""
    if isinstance(value, dict):
        return ", ".join(f"{w}={f:g}" for w, f in value.items())
    if isinstance(value, (list, tuple)):
        return ("\n" if field.widget == "lines" else ", ").join(str(v) for v in value)
    return str(value)


@dataclass
class EditResult:
    """What one finished edit shows in the page (paths inside the server's work folder)."""

    output_dir: Path
    grid: Path
    input: Path
    reconstruction: Path
    edits: list[tuple[Path, str]]
    """(animated gif, target prompt) per edit (the mp4s are in the zip and the grid)."""
    motion_overlay: Path | None
    attention: list[tuple[Path, str]]
    """(png, caption) per branch."""
    archive: Path
    """Zip of the whole output folder."""
    summary: str
    """Markdown: motion word(s), modes, timings."""


def _bytes_under(folder: Path) -> int:
    """Bytes of every file under ``folder``."""
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def _remove_oldest(entries: list[Path], over_limit: Callable[[], bool], remove: Callable[[Path], Any]) -> None:
    """Remove ``entries``, oldest first (modification time), while ``over_limit()`` holds."""
    for entry in sorted(entries, key=lambda p: p.stat().st_mtime):
        if not over_limit():
            return
        remove(entry)


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def _checked_numbers(form: EditForm) -> EditForm:
    """The form with its numbers as int/float; NaN, infinities and non-numbers are a ConfigError naming the field
    (the browser can send anything: the server checks what the CLI checks)."""
    values: dict[str, Any] = {}
    for field in FORM:
        if field.widget not in ("slider", "number"):
            continue
        name, raw = field.name, getattr(form, field.name)
        try:
            number = float(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{name} must be a number, got {raw!r}") from None
        if not math.isfinite(number):
            raise ConfigError(f"{name} must be a finite number, got {raw!r}")
        if isinstance(getattr(EditForm, name), int):  # the field's default gives its type
            if number != int(number):
                raise ConfigError(f"{name} must be a whole number, got {raw!r}")
            number = int(number)
        values[name] = number
    return dataclasses.replace(form, **values)


def form_from_config(config: Any) -> EditForm:
    """Initial form values from an :class:`~attentionflow.config.EditConfig`: each field shows its option's key."""
    values = {}
    for field in FORM:
        value = get_key(config, option(field.flag).keys[field.part])
        if field.widget in ("slider", "number") and not isinstance(value, (int, float)):
            value = getattr(EditForm, field.name)  # a per-word table (cross_replace) has no slider value
        values[field.name] = _form_text(field, value)
    return EditForm(**values)


class EditSession:
    """Everything the page does, without Gradio: uploads, the toy example, busy checks, edits.

    One instance serves one model; :attr:`lock` makes edits run one at a time.
    """

    def __init__(self, settings: AppSettings) -> None:
        from attentionflow.commands.demo import demo_config

        self.settings = settings
        self.lock = threading.Lock()
        from attentionflow.jobs import PipelineCache

        # re-editing the same clip with the same source prompt (new targets, MMI or P2P settings) starts from
        # the cached inversion instead of inverting again
        self._pipelines = PipelineCache(inversion_cache_size=2)
        self._uploads: dict[str, Path] = {}
        """Session id -> the folder holding that session's current upload."""
        self._shown: dict[str, str] = {}
        """Server-side input path -> the name the user knows it by (the upload's own file name)."""
        self._cache_owner: str | None = None
        """Session whose inversions the pipeline's cache holds (reuse is never reported across sessions)."""
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if settings.workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="attentionflow-app-")
            self.workdir = Path(self._tmp.name)
        else:
            self.workdir = Path(settings.workdir)
            self.workdir.mkdir(parents=True, exist_ok=True)
        for sub in ("uploads", "results", "toy", "gradio"):
            (self.workdir / sub).mkdir(exist_ok=True)
        self.upload_cache = self.workdir / "gradio"
        """Gradio's own upload cache (GRADIO_TEMP_DIR): inside the work folder, pruned, and removed at exit."""
        defaults = settings.defaults
        if defaults is None:
            defaults = demo_config("", None) if settings.model == "embedded" else EditConfig()
        self.defaults = form_from_config(defaults)
        self.defaults.frames = min(self.defaults.frames, settings.max_frames)
        self._base_config = defaults

    def close(self) -> None:
        """Free the model and remove the temporary work folder (if the session made one) and Gradio's upload cache."""
        self._pipelines.clear()
        shutil.rmtree(self.upload_cache, ignore_errors=True)
        if self._tmp is not None:
            self._tmp.cleanup()

    # ---------------------------------------------------------------------------------------------
    # inputs

    def toy_example(self) -> tuple[Path, EditForm, str]:
        """Render the built-in toy clip on the server; returns (its path, form values for it, message)."""
        from attentionflow.commands.demo import DEMO_FRAMES, DEMO_SIZE, DEMO_SOURCE, DEMO_TARGETS, demo_clip
        from attentionflow.io.writers import write_mp4

        path = self.workdir / "toy" / "toy_example.mp4"
        if not path.is_file():
            write_mp4(demo_clip()[:DEMO_FRAMES], path, fps=8.0)
        form = dataclasses.replace(self.defaults, source=DEMO_SOURCE, targets="\n".join(DEMO_TARGETS),
                                   motion_word="moving", frames=min(DEMO_FRAMES, self.settings.max_frames),
                                   start=0, stride=1, width=DEMO_SIZE, height=DEMO_SIZE)
        return path, form, (f"toy example loaded: '{DEMO_SOURCE}', {DEMO_FRAMES} frames of "
                            f"{DEMO_SIZE}x{DEMO_SIZE}")

    def accept_upload(self, files: str | Sequence[str] | None, upload_root: Path | str,
                      session: str = "") -> tuple[Path, str]:
        """Check an upload and copy it into the work folder; returns (server-side input path, message).

        The new upload replaces the session's previous one (whose copy is removed), and the oldest uploads
        of other sessions are removed while all uploads together exceed ``max_uploads_total_mb``.

        Args:
            files: the path(s) Gradio stored the upload at: one video/gif, or several png/jpg frames.
            upload_root: Gradio's upload cache; any path outside it is refused (never opened).
            session: the browser session the upload belongs to (Gradio's session hash).

        Raises:
            InputError: no file, a path outside ``upload_root``, a wrong type, too large, or undecodable.
        """
        from attentionflow.io.video import natural_key, probe_video

        if not files:
            raise InputError("no file uploaded; upload a video (mp4/avi/mov/webm/mkv/gif) or png/jpg frames")
        paths = [Path(files)] if isinstance(files, (str, os.PathLike)) else [Path(f) for f in files]
        root = Path(upload_root)
        for p in paths:
            if not _inside(p, root) or not p.is_file():
                raise InputError(f"refusing file {p.name}: only files uploaded through this page are read")
        total = sum(p.stat().st_size for p in paths)
        limit = self.settings.max_upload_mb * 1024 * 1024
        if total > limit:
            raise InputError(f"upload is {total / 2**20:.1f} MiB; the limit is {self.settings.max_upload_mb:g} MiB")
        suffixes = {p.suffix.lower() for p in paths}
        dest = Path(tempfile.mkdtemp(prefix="upload-", dir=self.workdir / "uploads"))
        try:
            if len(paths) == 1 and suffixes <= set(UPLOAD_VIDEO_TYPES):
                target = dest / f"input{paths[0].suffix.lower()}"
                shutil.copyfile(paths[0], target)
            elif len(paths) > 1 and suffixes <= set(UPLOAD_IMAGE_TYPES):
                target = dest / "frames"
                target.mkdir()
                for i, p in enumerate(sorted(paths, key=lambda q: natural_key(q.name))):
                    shutil.copyfile(p, target / f"frame_{i:05d}{p.suffix.lower()}")
            else:
                names = ", ".join(p.name for p in paths)
                raise InputError(f"unsupported upload ({names}); upload one video ("
                                 f"{', '.join(UPLOAD_VIDEO_TYPES)}) or 2+ frames ({', '.join(UPLOAD_IMAGE_TYPES)})")
            info = probe_video(target)
        except AttentionFlowError as exc:
            shutil.rmtree(dest, ignore_errors=True)
            shown = paths[0].name if len(paths) == 1 else "the uploaded frames"
            # the message names the server-side copy; show the user's file name instead
            raise InputError(first_line(exc).replace(str(dest / "frames"), shown)
                             .replace(str(dest / f"input{paths[0].suffix.lower()}"), shown)) from None
        label = paths[0].name if len(paths) == 1 else f"{len(paths)} frames"
        previous = self._uploads.get(session)
        if previous is not None:
            self._forget_upload(previous)
        self._uploads[session] = dest
        self._shown[str(target)] = paths[0].name if len(paths) == 1 else "the uploaded frames"
        self._prune_uploads(keep=dest)
        self._prune_upload_cache(keep=paths)
        return target, (f"loaded {label}: {info.num_frames} frames of {info.width}x{info.height} "
                        f"at {info.fps:.3g} fps")

    def _forget_upload(self, folder: Path) -> None:
        shutil.rmtree(folder, ignore_errors=True)
        for key in [k for k in self._shown if Path(k).parent == folder or Path(k).parent.parent == folder]:
            del self._shown[key]
        for sess in [k for k, v in self._uploads.items() if v == folder]:
            del self._uploads[sess]

    def uploads_bytes(self) -> int:
        """Bytes held by all stored uploads."""
        return _bytes_under(self.workdir / "uploads")

    def _prune_upload_cache(self, keep: Sequence[Path]) -> None:
        """Gradio's copies of earlier uploads (our own copy is what an edit reads), within the same cap as
        :meth:`_prune_uploads`; the files of the upload being accepted stay."""
        cache = self.upload_cache
        if cache.is_dir():
            held = {p.resolve() for p in keep}
            _remove_oldest([p for p in cache.iterdir() if not any(_inside(h, p) for h in held)],
                           lambda: _bytes_under(cache) > self.settings.max_uploads_total_mb * 2**20,
                           lambda p: shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True))

    def _prune_uploads(self, keep: Path) -> None:
        _remove_oldest([p for p in (self.workdir / "uploads").iterdir() if p.is_dir() and p != keep],
                       lambda: self.uploads_bytes() > self.settings.max_uploads_total_mb * 2**20, self._forget_upload)

    # ---------------------------------------------------------------------------------------------
    # editing

    def busy_message(self) -> str | None:
        """The busy message while an edit runs, else None."""
        return BUSY if self.lock.locked() else None

    def build_config(self, form: EditForm, input_path: Path | str | None, output_dir: Path) -> Any:
        """The :class:`~attentionflow.config.EditConfig` of one request (checked against the limits)."""
        s = self.settings
        if not input_path:
            raise InputError("no input video: upload one or click 'Toy example'")
        targets = [t.strip() for t in (form.targets or "").splitlines() if t.strip()]
        if not targets:
            raise ConfigError("target prompts are empty; write one target prompt per line")
        if len(targets) > s.max_targets:
            raise ConfigError(f"{len(targets)} target prompts; this server edits at most {s.max_targets} per request")
        form = _checked_numbers(form)
        frames = int(form.frames)
        if not 1 <= frames <= s.max_frames:
            raise ConfigError(f"frames must be between 1 and {s.max_frames} (this server's limit), got {frames}")
        for name, value in (("width", int(form.width)), ("height", int(form.height))):
            if value > s.max_size:
                raise ConfigError(f"{name} {value} exceeds this server's limit of {s.max_size}")
        cfg = config_from_form(self._base_config, form)
        cfg.pretrained_model_path, cfg.output_dir = s.model, str(output_dir)
        cfg.device, cfg.mixed_precision = s.device, s.mixed_precision
        cfg.input_data.video_path = str(input_path)
        return cfg.validate()

    def frame_size(self, path: Path | str) -> tuple[int, int]:
        """(width, height) for the form from an uploaded video: its own size, scaled down (aspect kept) to this
        server's limit, in multiples of 8 (the model's latent grid), at least the smallest size flow accepts."""
        from attentionflow.config import MIN_FRAME_SIZE
        from attentionflow.io.video import probe_video

        info = probe_video(path)
        scale = min(1.0, self.settings.max_size / max(info.width, info.height))
        return tuple(max(MIN_FRAME_SIZE, int(v * scale) // 8 * 8) for v in (info.width, info.height))  # type: ignore

    def _prune_results(self) -> None:
        folders = sorted((p for p in (self.workdir / "results").iterdir() if p.is_dir()),
                         key=lambda p: p.stat().st_mtime)
        for old in folders[:max(0, len(folders) - self.settings.keep_results)]:
            shutil.rmtree(old, ignore_errors=True)

    def run_edit(self, form: EditForm, input_path: Path | str | None,
                 progress: ProgressFn | None = None, session: str = "") -> EditResult:
        """Run one edit (waits for the lock) and return what the page shows.

        Raises:
            AttentionFlowError: bad form values, input or prompts (checked before heavy compute); server
                paths in its message are replaced by the names the user knows.
        """

        if progress is not None:
            progress("checking the input", 0, 1)
        from attentionflow.jobs import PublicPaths, check_job, run_edit_job

        shown = self._shown.get(str(input_path), Path(str(input_path)).name) if input_path else ""
        with self.lock:
            self._prune_results()
            request = Path(tempfile.mkdtemp(prefix=time.strftime("%Y%m%d-%H%M%S-"), dir=self.workdir / "results"))
            out = request / "attentionflow_result"
            public = PublicPaths({str(out.resolve()): out.name, str(out): out.name, str(self.workdir.resolve()): "",
                                  str(self.workdir): ""})
            if input_path:
                public.replace[str(input_path)] = shown
            try:
                config = self.build_config(form, input_path, out)
                checked = check_job(config, overwrite=False)
                if progress is not None:
                    progress("loading model", 0, 1)
                pipeline = self._pipelines.get(checked.model_dir, config.device, config.mixed_precision)
                if self._cache_owner != session:  # never start one user's edit from another user's inversion
                    pipeline.clear_inversion_cache()
                    self._cache_owner = session
                public.replace[str(checked.model_dir)] = self.settings.model if self.settings.model == "embedded" \
                    else Path(str(checked.model_dir)).name
                steps = None if progress is None else (lambda stage, i, n, _latents: progress(stage, i, n))
                job = run_edit_job(config, progress=False, pipeline=pipeline, command="app", callback=steps,
                                   checked=checked, public=public)
            except AttentionFlowError as exc:
                shutil.rmtree(request, ignore_errors=True)
                raise type(exc)(public.apply(first_line(exc))) from None
            except BaseException:
                shutil.rmtree(request, ignore_errors=True)
                raise
            if progress is not None:
                progress("packing outputs", 0, 1)
            archive = Path(shutil.make_archive(str(request / "attentionflow_result"), "zip", root_dir=request,
                                               base_dir=out.name))
        result = job.output
        edits = [(out / f"{name}.gif", prompt) for name, prompt in zip(job.edit_names, result.target_prompts)]
        attention = [(p, p.stem.replace("_", " ")) for p in sorted((out / "attention").glob("*.png"))] \
            if (out / "attention").is_dir() else []
        overlay = out / "motion" / "overlay.mp4"
        region = out / "motion" / "edit_mask_overlay.mp4"
        if region.is_file():  # an edit region: show what it changed rather than the raw motion
            overlay = region
        words = ", ".join(result.motion_words) or "none"
        modes = ", ".join(f"{p!r}: {m}" for p, m in zip(result.target_prompts, result.edit_modes))
        frames, height, width = result.reconstruction.shape[:3]
        summary = (f"**done** in {job.timings.get('total', 0):.1f} s on {job.device} — {frames} frames "
                   f"of {width}x{height}; MMI {'on' if job.plan.mmi.enabled else 'off'}, motion word(s): {words}; "
                   f"edit modes: {modes}" + _inversion_note(job))
        return EditResult(output_dir=out, grid=out / "grid.mp4", input=out / "input.mp4",
                          reconstruction=out / "reconstruction.mp4", edits=edits,
                          motion_overlay=overlay if overlay.is_file() else None, attention=attention,
                          archive=archive, summary=summary)


def _inversion_note(job: JobResult) -> str:
    """'; direct inversion reused, reconstruction PSNR 31.2 dB' from the job's typed result."""
    out = job.output
    method = f"{out.inversion_method} inversion" if out.inversion_method else "inversion"
    parts = [f"{method} reused (same clip, source prompt and settings)" if out.inversion_reused else method]
    if job.reconstruction_psnr_db is not None:
        parts.append(f"reconstruction PSNR {job.reconstruction_psnr_db:.1f} dB")
    return "; " + ", ".join(parts)


# -------------------------------------------------------------------------------------------------
# Gradio wiring


def _import_gradio() -> Any:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio as gr
    except ImportError:
        raise AttentionFlowError(MISSING_GRADIO) from None
    return gr


_CSS = """
#af-status { min-height: 2.5em; }
#af-status .af-error { color: #b00020; font-weight: 600; }
"""


def _status(text: str, error: bool = False) -> str:
    import html

    if error:
        return f'<p class="af-error" data-testid="af-error">error: {html.escape(text)}</p>'
    return f"<p>{html.escape(text)}</p>"


def _component(gr: Any, field: FormField, value: Any, settings: AppSettings) -> Any:
    """The Gradio component of one form field (``elem_id`` ``af-<name>``), holding ``value``."""
    common = {"label": field.label, "value": value, "elem_id": "af-" + field.name.replace("_", "-")}
    info = field_info(field)
    if info and field.widget not in ("check", "slider", "number"):
        common["info"] = info
    if field.widget == "check":
        return gr.Checkbox(**common)
    if field.widget == "choice":
        return gr.Dropdown(choices=field_choices(field), allow_custom_value=bool(field.choices), **common)
    if field.widget in ("slider", "number"):
        low, high, step = field.limits or (None, None, 1)
        high = getattr(settings, high) if isinstance(high, str) else high
        if field.widget == "slider":
            return gr.Slider(low, high, step=step, **common)
        return gr.Number(precision=0 if isinstance(value, int) else None, minimum=low, maximum=high, **common)
    return gr.Textbox(lines=3 if field.widget == "lines" else 1, **common)


def build_app(session: EditSession) -> Any:
    """The ``gr.Blocks`` page for ``session`` (not launched). Needs gradio."""
    gr = _import_gradio()
    d = session.defaults
    s = session.settings
    file_types = list(UPLOAD_VIDEO_TYPES + UPLOAD_IMAGE_TYPES)

    os.environ["GRADIO_TEMP_DIR"] = str(session.upload_cache)  # gradio's upload cache: ours to prune and remove
    with gr.Blocks(title="AttentionFlow", analytics_enabled=False, delete_cache=(600, 3600)) as demo:
        gr.Markdown("## AttentionFlow: text-driven video editing with Motion Map Injection\n"
                    f"Model: `{s.model}`. Upload a short video (or frames) or use the toy example, describe it, "
                    f"write one target prompt per line and press **Edit**. Limits: {s.max_upload_mb:g} MiB, "
                    f"{s.max_frames} frames, {s.max_size}px.")
        input_path = gr.State(None)  # server-side only: never a path sent by the browser
        # the form is one mapping: EditForm's field name -> its component (a set input hands the edit handler
        # {component: value})
        form: dict[str, Any] = {}
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(label="video (mp4/avi/mov/webm/mkv/gif) or png/jpg frames", file_count="multiple",
                                 file_types=file_types, type="filepath", elem_id="af-upload")
                toy = gr.Button("Toy example", elem_id="af-toy")
                preview = gr.Video(label="input video", interactive=False, elem_id="af-input-preview", loop=True)
            with gr.Column(scale=2):
                rows: dict[str, list[FormField]] = {}
                for field in FORM:
                    rows.setdefault(field.row, []).append(field)

                def add_rows(advanced: bool) -> None:
                    for row, fields in rows.items():
                        if row.startswith("advanced") == advanced:
                            with gr.Row():
                                form.update({f.name: _component(gr, f, getattr(d, f.name), s) for f in fields})

                add_rows(advanced=False)
                with gr.Accordion("advanced: inversion and prompt-to-prompt", open=False, elem_id="af-advanced"):
                    add_rows(advanced=True)
                run = gr.Button("Edit", variant="primary", elem_id="af-edit")
        status = gr.HTML(_status("upload a video or click 'Toy example'"), elem_id="af-status")
        summary = gr.Markdown(elem_id="af-summary")
        grid = gr.Video(label="input | reconstruction | edits", interactive=False, elem_id="af-grid", loop=True,
                        autoplay=True)
        with gr.Row():
            in_video = gr.Video(label="input", interactive=False, elem_id="af-input", loop=True)
            rec_video = gr.Video(label="reconstruction", interactive=False, elem_id="af-reconstruction", loop=True)
            overlay = gr.Video(label="motion maps (overlay; the edit region when one is set)", interactive=False,
                               elem_id="af-motion", loop=True)
        edit_videos = gr.Gallery(label="edits", columns=3, elem_id="af-edits", interactive=False)
        attention = gr.Gallery(label="per-word attention maps (without | with MMI)", columns=1,
                               elem_id="af-attention", interactive=False, object_fit="contain", height="auto")
        archive = gr.File(label="download all outputs (zip)", elem_id="af-download", interactive=False)

        assert set(form) == {f.name for f in dataclasses.fields(EditForm)}, "every EditForm field has a component"
        session_key = gr.State(lambda: uuid.uuid4().hex)  # one per browser session: no handler needs gr.Request

        def on_upload(files: Any, key: str) -> tuple[Any, ...]:
            keep = gr.update()
            if not files:
                return None, None, _status("upload a video or click 'Toy example'"), keep, keep, keep
            try:
                path, msg = session.accept_upload(files, demo.GRADIO_CACHE, session=key)
                size = session.frame_size(path)
            except AttentionFlowError as exc:
                # the failed file leaves the upload box, so the next upload replaces it instead of joining it
                return None, None, _status(str(exc), error=True), None, keep, keep
            playable = path if path.suffix.lower() in (".mp4", ".webm") else None
            return str(path), playable, _status(msg), keep, size[0], size[1]

        def on_toy() -> dict[Any, Any]:
            path, values, msg = session.toy_example()
            shown = {input_path: str(path), preview: str(path), status: _status(msg), upload: None}
            return shown | {component: getattr(values, name) for name, component in form.items()}

        def precheck() -> tuple[str, str]:
            busy = session.busy_message()
            return (_status(busy) if busy else _status("edit queued")), ""

        def on_edit(values: dict[Any, Any], progress: Any = gr.Progress()) -> list[Any]:
            request = EditForm(**{name: values[component] for name, component in form.items()})

            def cb(stage: str, step: int, total: int) -> None:
                if total <= 1:  # a stage without steps (loading the model, packing the zip)
                    progress(0.0, desc=stage)
                else:
                    progress((step, total), desc=stage, unit="steps")

            empty = [None] * 7
            try:
                result = session.run_edit(request, values[input_path], progress=cb, session=values[session_key])
            except AttentionFlowError as exc:
                return [_status(str(exc), error=True), ""] + empty
            except Exception as exc:  # the server keeps running; details go to the log
                logger.exception("edit failed")
                return [_status(f"internal error ({type(exc).__name__}: {first_line(exc)})", error=True), ""] + empty
            return [_status("done"), result.summary, str(result.grid), str(result.input), str(result.reconstruction),
                    str(result.motion_overlay) if result.motion_overlay else None,
                    [(str(p), c) for p, c in result.edits], [(str(p), c) for p, c in result.attention],
                    str(result.archive)]

        upload.upload(on_upload, inputs=[upload, session_key],
                      outputs=[input_path, preview, status, upload, form["width"], form["height"]])
        upload.clear(lambda: (None, None, _status("upload a video or click 'Toy example'")),
                     outputs=[input_path, preview, status])
        toy.click(on_toy, outputs=[input_path, preview, status, upload, *form.values()])
        results = [status, summary, grid, in_video, rec_video, overlay, edit_videos, attention, archive]
        run.click(precheck, outputs=[status, summary], concurrency_limit=None, queue=False).then(
            on_edit, inputs={input_path, session_key, *form.values()}, outputs=results, concurrency_limit=1,
            concurrency_id="edit")
    demo.queue(default_concurrency_limit=1)
    return demo


def launch_app(settings: AppSettings, *, host: str = "127.0.0.1", port: int = 7860, block: bool = True,
               auth: tuple[str, str] | None = None) -> tuple[Any, EditSession]:
    """Build and launch the app; returns (the Blocks, the session). ``block=False`` returns at once.

    ``auth``: (user, password) that the page asks for (gradio's login form). Prints nothing: the command says
    where the app runs (:func:`startup_line`)."""
    _import_gradio()
    from attentionflow import jobs  # noqa: F401  (import torch/diffusers now, not during the first request)

    session = EditSession(settings)
    demo = build_app(session)
    # gradio's own start-up lines include "To create a public link, set share=True", which does not apply here
    # (public serving is --host with --auth): they are kept quiet
    demo.launch(server_name=host, server_port=port, share=False, max_file_size=int(settings.max_upload_mb * 2**20),
                allowed_paths=[str(session.workdir)], ssr_mode=False, quiet=True, prevent_thread_lock=True,
                show_error=False, css=_CSS, mcp_server=False, auth=auth)
    if block:
        try:
            demo.block_thread()
        finally:
            session.close()
    return demo, session


def startup_line(demo: Any) -> str:
    """What ``attentionflow app`` says once the server is up."""
    return f"AttentionFlow app running on {demo.local_url} (Ctrl-C to stop)"
