"""Video input: read, sample, resize + center-crop (writers: :mod:`attentionflow.io.writers`; grids:
:mod:`attentionflow.io.grid`).

Every frame array in this module is RGB ``uint8``: one frame is ``(H, W, 3)``, a video is
``(N, H, W, 3)``.

Sources accepted by :func:`probe_video` and :func:`read_frames`:

* a video file decoded with PyAV (``.mp4 .avi .mov .webm .mkv``; other containers FFmpeg can read
  work too). A display-rotation (phone videos) is applied, as FFmpeg's ``autorotate`` does;
* an animated ``.gif`` decoded with Pillow (full composited frames; transparent pixels are
  composited onto white);
* a folder of ``.png`` / ``.jpg`` / ``.jpeg`` frames in natural order (``frame2`` before
  ``frame10``).

Sampling follows vid2vid-zero: frames ``start, start + stride, ...``, ``n_frames`` of them
(``None`` = every frame from ``start`` on). Only frames up to the last needed one are decoded.
"""

from __future__ import annotations

import logging
import operator
import os
import re
import stat
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Union

import av
import cv2
import numpy as np
from PIL import Image, ImageSequence

from attentionflow.errors import InputError, shown

__all__ = [
    "VIDEO_EXTENSIONS",
    "IMAGE_EXTENSIONS",
    "DEFAULT_FOLDER_FPS",
    "VideoInfo",
    "probe_video",
    "frame_files",
    "read_frames",
    "read_image",
    "resize_center_crop",
    "check_video",
]

logger = logging.getLogger(__name__)
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # OpenCV's own [ WARN ] lines: our one line says it

PathLike = Union[str, "os.PathLike[str]"]

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".webm", ".mkv", ".gif")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
DEFAULT_FOLDER_FPS = 8.0
"""Frame rate reported for a frame folder (it carries none); vid2vid-zero writes its videos at 8 fps."""
_DEFAULT_GIF_FPS = 10.0  # browsers play a GIF frame with no delay at ~100 ms
_ACCEPTED = (
    "a video file (" + ", ".join(e for e in VIDEO_EXTENSIONS if e != ".gif") + "), "
    "an animated .gif, or a folder of " + "/".join(IMAGE_EXTENSIONS) + " frames"
)

FrameThunk = Callable[[], np.ndarray]
"""Zero-argument callable that decodes one frame to ``(H, W, 3)`` uint8 RGB (call it at once)."""


@dataclass
class VideoInfo:
    """What :func:`probe_video` learns about a source without keeping its frames."""

    num_frames: int
    """Number of decodable frames (>= 1)."""
    fps: float
    """Frames per second (:data:`DEFAULT_FOLDER_FPS` for a frame folder)."""
    width: int
    """Frame width in pixels, after any display rotation."""
    height: int
    """Frame height in pixels, after any display rotation."""
    source: str
    """The path that was probed, as a string."""
    kind: str = "video"
    """``"video"`` (decoded with PyAV), ``"gif"`` (Pillow) or ``"frames"`` (image folder)."""


# --------------------------------------------------------------------------------------------
# source discovery
# --------------------------------------------------------------------------------------------


def natural_key(name: str) -> list[int | str]:
    """Sort key putting ``frame2`` before ``frame10``: digit runs compare as integers.

    ``re.split`` with a capturing group alternates text and digit runs, so two keys always hold
    the same type at the same position.
    """
    parts: list[int | str] = []
    for i, part in enumerate(re.split(r"(\d+)", name)):
        parts.append(int(part) if i % 2 else part.casefold())
    return parts


def frame_files(folder: Path) -> list[Path]:
    """The image files of ``folder`` (non-hidden, extension in :data:`IMAGE_EXTENSIONS`), natural order."""
    files = [
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    ]
    if not files:
        raise InputError(f"no {'/'.join(IMAGE_EXTENSIONS)} frames in folder {folder}; expected {_ACCEPTED}")
    return sorted(files, key=lambda p: natural_key(p.name))


def _is_pillow_gif(path: Path) -> bool:
    """True if ``path`` has a .gif suffix and Pillow identifies it as a GIF."""
    if path.suffix.lower() != ".gif":
        return False
    try:
        with Image.open(path) as im:
            return im.format == "GIF"
    except (OSError, ValueError, SyntaxError, EOFError):
        return False


def _resolve(path: PathLike) -> tuple[Path, str]:
    """Check the path exists and classify it as ``"frames"``, ``"gif"`` or ``"video"``.

    Only a regular file or a folder is ever opened: a FIFO would block forever, a device never ends."""
    p = Path(path)
    try:
        mode = p.stat().st_mode
    except FileNotFoundError:
        if p.is_symlink():
            raise InputError(f"video {p} is a symlink to {os.readlink(p)}, which does not exist") from None
        raise InputError(f"video not found: {p}") from None
    except OSError as exc:  # a loop of symlinks, a name over the OS limit, no permission
        name = os.fspath(p)
        raise InputError(f"cannot open video {shown(name)}: {exc.strerror}; "
                         f"expected {_ACCEPTED}") from None
    if stat.S_ISDIR(mode):
        return p, "frames"
    if not stat.S_ISREG(mode):
        raise InputError(f"video {p} is not a regular file or folder (a FIFO, device or socket); expected {_ACCEPTED}")
    if _is_pillow_gif(p):
        return p, "gif"
    return p, "video"


def _undecodable(path: Path, detail: object) -> InputError:
    """InputError naming the path, the decoder's reason (one line) and the accepted kinds."""
    reason = getattr(detail, "strerror", None) or str(detail)  # FFmpegError: reason without errno/path
    detail_line = " ".join(str(reason).split())  # keep the message on one line
    return InputError(f"cannot decode {path} ({detail_line}); expected {_ACCEPTED}")


#: Largest frame accepted (8192 x 8192): frames are resized to at most a few hundred pixels, and a header that
#: claims more (a PNG may claim 100000 x 100000) is refused before any pixel is decoded.
MAX_FRAME_PIXELS = 8192 * 8192


def _check_frame_size(path: Path, width: int, height: int) -> None:
    if width * height > MAX_FRAME_PIXELS:
        raise InputError(f"{path} has frames of {width}x{height} pixels; the largest accepted is "
                         f"{MAX_FRAME_PIXELS // 2**20} Mpx (8192x8192): scale it down first")


def read_image(path: Path) -> np.ndarray:
    """One image file -> ``(H, W, 3)`` uint8 RGB (EXIF orientation applied, 16-bit scaled, alpha dropped)."""
    try:
        with Image.open(path) as im:  # reads the header only
            size = im.size
    except Image.DecompressionBombError:  # Pillow's own guard: more than twice its limit
        raise InputError(f"{path} claims a frame of over {2 * Image.MAX_IMAGE_PIXELS // 10**6} Mpx; the largest "
                         f"accepted is {MAX_FRAME_PIXELS // 2**20} Mpx (8192x8192): scale it down first") from None
    except (OSError, ValueError, SyntaxError, EOFError):
        size = (0, 0)  # not an image Pillow knows: OpenCV decides below
    _check_frame_size(path, *size)
    try:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    except cv2.error:
        bgr = None
    if bgr is None:
        raise InputError(f"cannot read frame image {path}; expected a readable {'/'.join(IMAGE_EXTENSIONS)} file")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _rotate_for_display(rgb: np.ndarray, rotation: int) -> np.ndarray:
    """Apply a display-matrix rotation (degrees counter-clockwise, as PyAV reports it)."""
    quarter_turns = int(round(rotation / 90.0)) % 4
    if quarter_turns == 0:
        return rgb
    return np.ascontiguousarray(np.rot90(rgb, k=quarter_turns))  # np.rot90 turns counter-clockwise


@contextmanager
def _frame_thunks(path: Path, kind: str) -> Iterator[Iterator[FrameThunk]]:
    """Yield an iterator of per-frame decode thunks, in display order; closes the source after.

    Iterating without calling the thunks only counts frames (no RGB conversion is done). A thunk
    must be called before advancing the iterator.
    """
    if kind == "frames":
        files = frame_files(path)
        yield iter([(lambda f=f: read_image(f)) for f in files])
        return

    if kind == "gif":
        try:
            im = Image.open(path)
        except Image.DecompressionBombError:
            raise InputError(f"{path} has frames over {MAX_FRAME_PIXELS // 2**20} Mpx; scale it down first") from None
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            raise _undecodable(path, exc) from exc
        try:
            yield _gif_thunks(im, path)
        finally:
            im.close()
        return

    try:
        container = av.open(str(path), mode="r")
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise _undecodable(path, exc) from exc
    try:
        if not container.streams.video:
            raise _undecodable(path, "no video stream")
        stream = container.streams.video[0]
        _check_frame_size(path, stream.codec_context.width or 0, stream.codec_context.height or 0)
        stream.thread_type = "AUTO"
        yield _pyav_thunks(container, stream, path)
    finally:
        container.close()


def _pyav_thunks(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, path: Path
) -> Iterator[FrameThunk]:
    frames = container.decode(stream)
    logged = False
    while True:
        try:
            frame = next(frames)
        except StopIteration:
            return
        except (av.FFmpegError, ValueError) as exc:
            raise _undecodable(path, exc) from exc

        rotation = frame.rotation
        if rotation and not logged:
            logger.debug("applying display rotation of %s degrees to %s", rotation, path)
            logged = True

        def thunk(frame: av.VideoFrame = frame, rotation: int = rotation) -> np.ndarray:
            rgb = frame.to_ndarray(format="rgb24")  # (H, W, 3) uint8
            return _rotate_for_display(rgb, rotation)

        yield thunk


def _gif_thunks(im: Image.Image, path: Path) -> Iterator[FrameThunk]:
    index = 0
    while True:
        try:
            im.seek(index)
        except EOFError:
            return
        except (OSError, ValueError, SyntaxError) as exc:
            raise _undecodable(path, exc) from exc

        def thunk() -> np.ndarray:
            rgba = im.convert("RGBA")  # Pillow composites disposal/partial frames into full frames
            canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return np.asarray(Image.alpha_composite(canvas, rgba).convert("RGB"))  # (H, W, 3)

        yield thunk
        index += 1


def check_video(frames: object, what: str = "frames", *, uint8: bool = True) -> np.ndarray:
    """Raise a one-line InputError unless ``frames`` is a non-empty ``(N, H, W, 3)`` array (uint8 when
    ``uint8``); returns it. The one check of a video array every module uses."""
    shape = getattr(frames, "shape", type(frames).__name__)
    if not isinstance(frames, np.ndarray) or frames.ndim != 4 or frames.shape[-1] != 3:
        raise InputError(f"{what} have shape {shape}; expected (N, H, W, 3) {'uint8 ' if uint8 else ''}RGB")
    if uint8 and frames.dtype != np.uint8:
        raise InputError(f"{what} have dtype {frames.dtype}; expected (N, H, W, 3) uint8 RGB")
    if frames.shape[0] < 1:
        raise InputError(f"{what} hold no frames; expected at least one")
    return frames


# --------------------------------------------------------------------------------------------
# probing and reading
# --------------------------------------------------------------------------------------------


def probe_video(path: PathLike) -> VideoInfo:
    """Check a source and report its frame count, fps and size, keeping no frames in memory.

    Cheap enough to run before any heavy compute. Frame counting decodes the video (containers
    often lack or misreport frame counts) but converts only the first frame.

    Raises:
        InputError: the path is missing, not decodable, an empty folder, or has zero frames.
    """
    p, kind = _resolve(path)
    if kind == "frames":
        files = frame_files(p)
        first = read_image(files[0])
        return VideoInfo(len(files), DEFAULT_FOLDER_FPS, first.shape[1], first.shape[0], str(p), kind)

    if kind == "gif":
        try:
            with Image.open(p) as im:
                width, height = im.size
                _check_frame_size(p, width, height)
                total_ms = 0.0
                count = 0
                for count, frame in enumerate(ImageSequence.Iterator(im), start=1):
                    total_ms += float(frame.info.get("duration", 0) or 0)
        except Image.DecompressionBombError:
            raise InputError(f"{p} has frames over {MAX_FRAME_PIXELS // 2**20} Mpx; scale it down first") from None
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            raise _undecodable(p, exc) from exc
        if count == 0:
            raise InputError(f"video {p} has zero frames; expected {_ACCEPTED}")
        fps = 1000.0 * count / total_ms if total_ms > 0 else _DEFAULT_GIF_FPS
        return VideoInfo(count, fps, width, height, str(p), kind)

    count = 0
    width = height = 0
    with _frame_thunks(p, kind) as thunks:
        for count, thunk in enumerate(thunks, start=1):
            if count == 1:  # size after display rotation; later frames are only counted
                height, width = thunk().shape[:2]
    if count == 0:
        raise InputError(f"video {p} has zero frames; expected {_ACCEPTED}")
    fps = _pyav_fps(p)
    return VideoInfo(count, fps, width, height, str(p), kind)


def _pyav_fps(path: Path) -> float:
    """Frame rate of the first video stream (average, then guessed, then base rate)."""
    try:
        with av.open(str(path), mode="r") as container:
            stream = container.streams.video[0]
            for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
                if rate:
                    return float(rate)
    except (av.FFmpegError, OSError, ValueError, IndexError):
        pass
    return DEFAULT_FOLDER_FPS


def _as_index(name: str, value: object) -> int:
    if isinstance(value, bool):
        raise InputError(f"{name} must be an integer, got {value!r}")
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise InputError(f"{name} must be an integer, got {value!r}") from None


def _check_target_size(width: int | None, height: int | None) -> tuple[int, int] | None:
    if width is None and height is None:
        return None
    if width is None or height is None:
        raise InputError(f"width and height must be given together, got width={width} height={height}")
    w = _as_index("width", width)
    h = _as_index("height", height)
    for name, value in (("width", w), ("height", h)):
        if value <= 0 or value % 8:
            raise InputError(f"{name} must be a positive multiple of 8, got {value}")
    return w, h


def read_frames(
    path: PathLike,
    n_frames: int | None = None,
    start: int = 0,
    stride: int = 1,
    width: int | None = None,
    height: int | None = None,
    names: tuple[str, str, str] = ("n_frames", "stride", "start"),
) -> np.ndarray:
    """Read and sample frames from a video file, gif or frame folder.

    Args:
        path: video file, animated gif, or folder of png/jpg frames.
        n_frames: number of frames to return; ``None`` = every frame from ``start`` on.
        start: index of the first frame (vid2vid-zero ``sample_start_idx``).
        stride: step between sampled frames (vid2vid-zero ``sample_frame_rate``).
        width, height: optional output size (both, positive multiples of 8); frames are resized
            preserving aspect ratio to cover it, then center-cropped (:func:`resize_center_crop`).
        names: what the user calls ``n_frames``, ``stride`` and ``start`` (a command's flags, a config's keys),
            for the too-few-frames messages.

    Returns:
        ``(N, H, W, 3)`` uint8 RGB, frames ``start, start + stride, ...``.

    Raises:
        InputError: bad path, undecodable source, bad sampling or size, or too few frames.
    """
    if n_frames is not None:
        n_frames = _as_index("n_frames", n_frames)
        if n_frames < 1:
            raise InputError(f"n_frames must be >= 1 (or None for all frames), got {n_frames}")
    start = _as_index("start", start)
    if start < 0:
        raise InputError(f"start must be >= 0, got {start}")
    stride = _as_index("stride", stride)
    if stride < 1:
        raise InputError(f"stride must be >= 1, got {stride}")
    target = _check_target_size(width, height)
    p, kind = _resolve(path)

    last_needed = None if n_frames is None else start + (n_frames - 1) * stride
    picked: list[np.ndarray] = []
    total = 0
    with _frame_thunks(p, kind) as thunks:
        for index, thunk in enumerate(thunks):
            total = index + 1
            if index < start or (index - start) % stride:
                continue
            frame = thunk()
            if target is not None:
                frame = resize_center_crop(frame[None], target[0], target[1])[0]
            picked.append(frame)
            if last_needed is not None and index >= last_needed:
                break

    n_name, stride_name, start_name = names
    sampling = f"{start_name}={start}, {stride_name}={stride}"
    if n_frames is not None and len(picked) < n_frames:
        raise InputError(
            f"{p} has {total} frames but {n_frames} were requested ({sampling}, needs "
            f"{last_needed + 1} frames); lower {n_name}, {stride_name} or {start_name}"
        )
    if not picked:
        if total == 0:
            raise InputError(f"video {p} has zero frames; expected {_ACCEPTED}")
        raise InputError(f"{p} has {total} frames, none at or after {start_name}={start}; use {start_name} < {total}")

    shapes = {f.shape for f in picked}
    if len(shapes) > 1:
        raise InputError(
            f"frame size changes within {p} ({sorted(s[:2] for s in shapes)} as (H, W)); pass width and height"
        )
    return np.stack(picked)  # (N, H, W, 3)


# --------------------------------------------------------------------------------------------
# resizing
# --------------------------------------------------------------------------------------------


def _resize(frames: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize every frame of ``(N, H, W, 3)`` to ``(N, height, width, 3)`` (AREA down, CUBIC up)."""
    n, h, w = frames.shape[:3]
    if (h, w) == (height, width):
        return frames
    interp = cv2.INTER_AREA if width * height < w * h else cv2.INTER_CUBIC
    out = np.empty((n, height, width, frames.shape[3]), dtype=frames.dtype)
    for i in range(n):
        out[i] = cv2.resize(frames[i], (width, height), interpolation=interp)
    return out


def resize_center_crop(frames: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize preserving aspect ratio so the frames cover ``(height, width)``, then center-crop.

    Args:
        frames: ``(N, H, W, 3)`` uint8 (a single ``(H, W, 3)`` frame is accepted too).
        width, height: positive target size in pixels.

    Returns:
        ``(N, height, width, 3)`` (or ``(height, width, 3)`` for a single frame), same dtype.
    """
    width = _as_index("width", width)
    height = _as_index("height", height)
    if width <= 0 or height <= 0:
        raise InputError(f"width and height must be positive, got width={width} height={height}")
    arr = np.asarray(frames)
    single = arr.ndim == 3
    if single:
        arr = arr[None]  # (1, H, W, 3)
    if arr.ndim != 4:
        raise ValueError(f"frames must be (N, H, W, C) or (H, W, C), got shape {np.shape(frames)}")
    h, w = arr.shape[1:3]
    scale = max(width / w, height / h)
    new_w = max(width, int(round(w * scale)))
    new_h = max(height, int(round(h * scale)))
    resized = _resize(arr, new_w, new_h)  # (N, new_h, new_w, C)
    y0 = (new_h - height) // 2
    x0 = (new_w - width) // 2
    out = np.ascontiguousarray(resized[:, y0 : y0 + height, x0 : x0 + width])  # (N, height, width, C)
    return out[0] if single else out


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------
