"""Video I/O: readers (PyAV video, Pillow gif, frame folders), sampling, resize + crop, writers, grids,
atomic output folders. Every video is synthetic and made in ``tmp_path``."""

from __future__ import annotations

import functools
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from attentionflow.errors import AttentionFlowError, InputError
from attentionflow.io import (
    atomic_output_dir,
    check_output_dir,
    make_grid,
    probe_video,
    read_frames,
    resize_center_crop,
    write_frames,
    write_gif,
    write_mp4,
)
from attentionflow.io import video as video_mod
from attentionflow.io.outputs import seal_output

LEVEL_STEP = 30  # gray level per frame index: frame i is flat gray i * LEVEL_STEP


def indexed_video(n: int, height: int = 32, width: int = 48) -> np.ndarray:
    """(n, H, W, 3) uint8 where frame i is flat gray ``i * LEVEL_STEP`` (frame index readable back)."""
    return np.stack([np.full((height, width, 3), i * LEVEL_STEP, np.uint8) for i in range(n)])


def decoded_indices(frames: np.ndarray) -> list[int]:
    """Recover the frame indices written by :func:`indexed_video` (robust to lossy codecs)."""
    return [int(round(float(f.mean()) / LEVEL_STEP)) for f in frames]


def smooth_video(n: int, height: int = 48, width: int = 64) -> np.ndarray:
    """(n, H, W, 3) uint8 smooth moving gradients (easy content for a lossy codec)."""
    yy, xx = np.mgrid[:height, :width].astype(np.float32)
    frames = []
    for i in range(n):
        r = 128 + 100 * np.sin((xx + 3 * i) / 12.0)
        g = 128 + 100 * np.cos((yy - 2 * i) / 10.0)
        b = np.full_like(xx, 90.0 + 5 * i)
        frames.append(np.stack([r, g, b], axis=-1))
    return np.clip(np.stack(frames), 0, 255).astype(np.uint8)


def encode_with_pyav(path: Path, codec: str, frames: np.ndarray, fps: int = 8, rotation: int | None = None) -> Path:
    """Encode (N, H, W, 3) RGB frames with PyAV directly (independent of write_mp4)."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def write_png_folder(folder: Path, names_and_levels: dict[str, int], size: tuple[int, int] = (16, 24)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, level in names_and_levels.items():
        Image.fromarray(np.full((*size, 3), level, np.uint8)).save(folder / name)
    return folder


# ----------------------------------------------------------------------------------------------
# round trips
# ----------------------------------------------------------------------------------------------


def test_mp4_round_trip_preserves_count_shape_pixels_and_leaves_no_temp(tmp_path: Path) -> None:
    video = smooth_video(10)
    out = write_mp4(video, tmp_path / "clip.mp4", fps=12)
    assert out == tmp_path / "clip.mp4"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]  # no temp file left behind

    info = probe_video(out)
    assert (info.num_frames, info.width, info.height, info.kind) == (10, 64, 48, "video")
    assert info.fps == pytest.approx(12.0)

    back = read_frames(out)
    assert back.shape == (10, 48, 64, 3) and back.dtype == np.uint8
    assert np.abs(back.astype(np.int16) - video).mean() < 8
    with av.open(str(out)) as container:  # really H.264 in yuv420p
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"


def test_mp4_odd_size_is_padded_to_even_keeping_content(tmp_path: Path) -> None:
    video = smooth_video(3, height=33, width=47)
    back = read_frames(write_mp4(video, tmp_path / "odd.mp4"))
    assert back.shape == (3, 34, 48, 3)
    assert np.abs(back[:, :33, :47].astype(np.int16) - video).mean() < 8


def test_write_mp4_failure_leaves_no_file_and_keeps_old_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "clip.mp4"
    target.write_bytes(b"previous")
    calls = {"n": 0}
    real = av.VideoFrame.from_ndarray

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(video_mod.av.VideoFrame, "from_ndarray", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        write_mp4(smooth_video(5), target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]
    assert target.read_bytes() == b"previous"


def test_gif_round_trip_exact_flat_colours_full_frames_and_loops(tmp_path: Path) -> None:
    palette = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [250, 250, 20], [10, 10, 10]], np.uint8)
    video = np.zeros((4, 32, 40, 3), np.uint8)
    video[:] = palette[4]
    video[1, 4:12, 4:12] = palette[0]  # later frames change only small regions ...
    video[2, 4:12, 4:12] = palette[0]
    video[2, 20:30, 25:35] = palette[1]
    video[3, :, :20] = palette[2]
    video[3, 0:5, 30:40] = palette[3]
    path = write_gif(video, tmp_path / "clip.gif", fps=10)

    with Image.open(path) as im:
        assert im.info.get("loop") == 0  # loop forever
        im.seek(1)
        assert im.tile[0].extents != (0, 0, 40, 32)  # ... so the file stores a partial frame to composite
    back = read_frames(path)
    assert back.shape == video.shape
    np.testing.assert_array_equal(back, video)
    info = probe_video(path)
    assert (info.num_frames, info.width, info.height, info.kind) == (4, 40, 32, "gif")
    assert info.fps == pytest.approx(10.0, rel=0.05)


def test_write_frames_names_and_round_trip_through_folder(tmp_path: Path) -> None:
    video = smooth_video(3, height=16, width=24)
    paths = write_frames(video, tmp_path / "frames")
    assert [p.name for p in paths] == ["frame_0000.png", "frame_0001.png", "frame_0002.png"]
    assert sorted(p.name for p in (tmp_path / "frames").iterdir()) == [p.name for p in paths]
    np.testing.assert_array_equal(read_frames(tmp_path / "frames"), video)


@pytest.mark.parametrize(
    ("suffix", "codec"),
    [(".avi", "mpeg4"), (".mov", "mpeg4"), (".mkv", "mpeg4"), (".webm", "libvpx-vp9")],
)
def test_other_containers_decode_with_right_frames(tmp_path: Path, suffix: str, codec: str) -> None:
    path = encode_with_pyav(tmp_path / f"clip{suffix}", codec, indexed_video(6))
    back = read_frames(path, n_frames=3, start=1, stride=2)
    assert back.shape == (3, 32, 48, 3)
    assert decoded_indices(back) == [1, 3, 5]
    assert probe_video(path).num_frames == 6


def test_display_rotation_is_applied(tmp_path: Path) -> None:
    frames = np.zeros((2, 32, 48, 3), np.uint8)
    frames[:, :8, :8] = 255  # marker at the stored top-left corner
    path = encode_with_pyav(tmp_path / "rot.mp4", "libx264", frames, rotation=90)
    back = read_frames(path)
    # 90 degrees counter-clockwise (FFmpeg autorotate): stored top-left ends at displayed bottom-left.
    assert back.shape == (2, 48, 32, 3)
    assert back[0, -4, 3].mean() > 200 and back[0, 3, 3].mean() < 50
    info = probe_video(path)
    assert (info.width, info.height) == (32, 48)


# ----------------------------------------------------------------------------------------------
# frame folders and sampling
# ----------------------------------------------------------------------------------------------


def test_frame_folder_natural_sort_ignores_other_files(tmp_path: Path) -> None:
    folder = write_png_folder(tmp_path / "frames", {"10.png": 200, "2.png": 100, "1.png": 50})
    Image.fromarray(np.full((16, 24, 3), 150, np.uint8)).save(folder / "3.JPG", quality=100)
    (folder / "notes.txt").write_text("not a frame")
    frames = read_frames(folder)
    assert frames.shape == (4, 16, 24, 3)
    means = [round(float(f.mean())) for f in frames]
    assert means[0] == 50 and means[1] == 100 and abs(means[2] - 150) <= 2 and means[3] == 200
    info = probe_video(folder)
    assert (info.num_frames, info.width, info.height, info.kind) == (4, 24, 16, "frames")


def test_sampling_start_stride_count_picks_right_frames(tmp_path: Path) -> None:
    video = indexed_video(8, height=16, width=16)
    folder = tmp_path / "frames"
    write_frames(video, folder)
    mp4 = write_mp4(video, tmp_path / "clip.mp4")
    for source in (folder, mp4):
        assert decoded_indices(read_frames(source, n_frames=3, start=1, stride=3)) == [1, 4, 7]
        assert decoded_indices(read_frames(source, start=2, stride=2)) == [2, 4, 6]
        assert decoded_indices(read_frames(source, n_frames=2)) == [0, 1]
        assert decoded_indices(read_frames(source, start=7)) == [7]


def test_only_frames_up_to_the_last_needed_are_decoded(tmp_path: Path) -> None:
    folder = write_png_folder(tmp_path / "frames", {f"{i}.png": 10 * i for i in range(4)})
    (folder / "4.png").write_bytes(b"broken, never needed")
    assert read_frames(folder, n_frames=2, stride=2).shape[0] == 2  # frames 0 and 2 only
    with pytest.raises(InputError, match="4.png"):
        read_frames(folder)  # all frames: reaches the broken one


# ----------------------------------------------------------------------------------------------
# resize + center crop
# ----------------------------------------------------------------------------------------------


def test_resize_center_crop_non_square_keeps_marker_in_place() -> None:
    frame = np.zeros((64, 64, 3), np.uint8)
    frame[28:36, 40:56] = (255, 0, 0)  # centre-right marker: survives the crop
    frame[0:8, 0:8] = (0, 255, 0)  # top-left marker: cropped away
    out = resize_center_crop(frame[None], width=48, height=32)
    assert out.shape == (1, 32, 48, 3)
    # 64x64 -> scale 0.75 -> 48x48, crop rows 8..40: marker rows 21..27 -> 13..19, cols 30..42.
    red = (out[0, :, :, 0] > 128) & (out[0, :, :, 1] < 100)
    ys, xs = np.nonzero(red)
    assert ys.min() >= 12 and ys.max() <= 20 and xs.min() >= 29 and xs.max() <= 43
    assert red[14:19, 31:41].all()
    assert out[0, :, :, 1].max() < 60  # no green left


def test_resize_center_crop_upscales_to_cover() -> None:
    frame = np.zeros((24, 40, 3), np.uint8)
    frame[:, :20] = 255  # left half white
    out = resize_center_crop(frame, width=48, height=32)  # single frame in, single frame out
    assert out.shape == (32, 48, 3)
    # scale 4/3 -> 53x32, crop 2 columns from the left: the white/black edge moves to ~24.7.
    assert out[:, :22].min() > 200 and out[:, 28:].max() < 50


def test_read_frames_resizes_and_crops(tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    frame = np.zeros((64, 64, 3), np.uint8)
    frame[28:36, 40:56] = 255
    write_frames(np.stack([frame, frame]), folder)
    out = read_frames(folder, width=48, height=32)
    assert out.shape == (2, 32, 48, 3)
    np.testing.assert_array_equal(out, resize_center_crop(np.stack([frame, frame]), 48, 32))


# ----------------------------------------------------------------------------------------------
# user errors
# ----------------------------------------------------------------------------------------------


def _one_line_error(fn, *args, **kwargs) -> str:
    with pytest.raises(InputError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    assert isinstance(info.value, AttentionFlowError)
    return message


def test_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.mp4"
    for fn in (probe_video, read_frames):
        assert _one_line_error(fn, missing) == f"video not found: {missing}"


def test_text_file_renamed_mp4(tmp_path: Path) -> None:
    fake = tmp_path / "fake.mp4"
    fake.write_text("this is not a video\n" * 10)
    for fn in (probe_video, read_frames):
        message = _one_line_error(fn, fake)
        assert str(fake) in message and ".mp4" in message and "folder" in message


def test_header_only_video_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "empty.mkv"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        container.start_encoding()
    message = _one_line_error(probe_video, path)
    assert str(path) in message


def test_empty_folder(tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    (folder / "readme.txt").write_text("no frames here")
    for fn in (probe_video, read_frames):
        message = _one_line_error(fn, folder)
        assert str(folder) in message and ".png" in message


def test_too_few_frames_states_counts_and_sampling(tmp_path: Path) -> None:
    mp4 = write_mp4(indexed_video(5), tmp_path / "clip.mp4")
    message = _one_line_error(read_frames, mp4, n_frames=4, start=1, stride=2)
    assert "has 5 frames" in message and "4 were requested" in message
    assert "start=1" in message and "stride=2" in message
    message = _one_line_error(read_frames, mp4, start=5)
    assert "has 5 frames" in message and "start=5" in message


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"width": 500, "height": 512}, "width must be a positive multiple of 8, got 500"),
        ({"width": 512, "height": 0}, "height must be a positive multiple of 8, got 0"),
        ({"width": 512}, "width and height must be given together"),
        ({"start": -1}, "start must be >= 0, got -1"),
        ({"stride": 0}, "stride must be >= 1, got 0"),
        ({"n_frames": 0}, "n_frames must be >= 1"),
    ],
)
def test_bad_sampling_and_size_arguments(tmp_path: Path, kwargs: dict, expected: str) -> None:
    folder = write_png_folder(tmp_path / "frames", {"0.png": 0, "1.png": 30})
    assert expected in _one_line_error(read_frames, folder, **kwargs)


# ----------------------------------------------------------------------------------------------
# grids
# ----------------------------------------------------------------------------------------------


def test_make_grid_shapes_gaps_and_height_matching() -> None:
    a = np.full((3, 32, 40, 3), 10, np.uint8)
    b = np.full((3, 16, 16, 3), 100, np.uint8)  # half height: resized to 32x32
    c = np.full((3, 32, 24, 3), 200, np.uint8)
    grid = make_grid([a, b, c], gap=4)
    assert grid.shape == (3, 32, 40 + 4 + 32 + 4 + 24, 3)
    assert (grid[:, :, :40] == 10).all()
    assert (grid[:, :, 40:44] == 255).all()  # white gap
    assert (grid[:, :, 44:76] == 100).all()
    assert (grid[:, :, 76:80] == 255).all()
    assert (grid[:, :, 80:] == 200).all()
    assert make_grid([a, c], gap=0).shape == (3, 32, 64, 3)


def test_make_grid_labels_add_a_strip_above_each_column() -> None:
    a = np.full((2, 64, 64, 3), 128, np.uint8)
    plain = make_grid([a, a], gap=4)
    labelled = make_grid([a, a], labels=["source", "edit"], gap=4)
    strip = labelled.shape[1] - plain.shape[1]
    assert strip > 0 and labelled.shape[2] == plain.shape[2]
    np.testing.assert_array_equal(labelled[:, strip:], plain)  # the videos sit below the strip
    text = labelled[0, :strip].min(axis=-1) < 100  # dark text pixels in the strip
    assert text[:, :64].any() and text[:, 68:].any()  # one label over each column
    assert not text[:, 64:68].any()
    np.testing.assert_array_equal(labelled[0, :strip], labelled[1, :strip])  # same strip every frame


@pytest.mark.parametrize("text", [
    "a blue circle is moving on the road",
    "a red circle is moving on the snow under a very cloudy evening sky",
    "supercalifragilisticexpialidocious circle",  # a word wider than the column is broken, not cut
])
def test_grid_labels_wrap_instead_of_being_cut(text) -> None:
    from PIL import Image, ImageDraw, ImageFont

    from attentionflow.io.grid import wrap_label

    font = ImageFont.load_default(size=10)
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    lines = wrap_label(text, 62, draw, font)
    assert "".join(lines).replace(" ", "") == text.replace(" ", "")  # nothing dropped
    assert all(draw.textlength(line, font=font) <= 62 for line in lines) and len(lines) > 1


def test_grid_labels_of_similar_prompts_can_be_told_apart() -> None:
    a = np.zeros((2, 64, 64, 3), np.uint8)
    one = make_grid([a, a], labels=["a blue circle is moving on the road", "a blue circle is moving on the snow"])
    two = make_grid([a, a], labels=["a blue circle is moving on the road", "a blue circle is moving on the sand"])
    strip = one.shape[1] - 64
    assert strip > 20  # several lines
    assert not np.array_equal(one[0, :strip, 68:], two[0, :strip, 68:])  # the endings differ on screen
    assert np.array_equal(one[0, :strip, :64], two[0, :strip, :64])


def test_make_grid_rejects_mismatched_frame_counts() -> None:
    with pytest.raises(ValueError, match="frames"):
        make_grid([np.zeros((3, 8, 8, 3), np.uint8), np.zeros((2, 8, 8, 3), np.uint8)])


# ----------------------------------------------------------------------------------------------
# atomic output folders
# ----------------------------------------------------------------------------------------------


def test_atomic_output_dir_success_creates_and_overwrite_replaces(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with atomic_output_dir(out) as tmp:
        assert tmp != out and tmp.parent == out.parent and tmp.is_dir()
        assert not out.exists()  # nothing visible until success
        (tmp / "a.txt").write_text("first")
        seal_output(tmp, {})  # what marks a folder as this tool's output
    assert sorted(p.name for p in out.iterdir()) == ["a.txt", "manifest.json"]

    with atomic_output_dir(out, overwrite=True) as tmp:
        (tmp / "b.txt").write_text("second")
        assert (out / "a.txt").read_text() == "first"  # old contents kept until the end
    assert sorted(p.name for p in out.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no temp/backup left


def test_atomic_output_dir_exception_leaves_old_content_untouched(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh"
    with pytest.raises(RuntimeError):
        with atomic_output_dir(fresh) as tmp:
            (tmp / "partial.txt").write_text("half")
            raise RuntimeError("boom")
    assert not fresh.exists()

    old = tmp_path / "old"
    old.mkdir()
    (old / "keep.txt").write_text("keep me")
    seal_output(old, {})
    with pytest.raises(RuntimeError):
        with atomic_output_dir(old, overwrite=True) as tmp:
            (tmp / "partial.txt").write_text("half")
            raise RuntimeError("boom")
    assert sorted(p.name for p in old.iterdir()) == ["keep.txt", "manifest.json"]
    assert (old / "keep.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old"]


def test_output_dir_refused_when_not_empty_without_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    check_output_dir(out)  # empty folder is fine
    (out / "x.txt").write_text("x")
    assert "was not written by attentionflow" in _one_line_error(check_output_dir, out, False)
    with pytest.raises(InputError, match="left alone"):
        with atomic_output_dir(out):
            pass
    assert "not written by attentionflow" in _one_line_error(check_output_dir, out, True)  # no manifest.json
    (out / "manifest.json").write_text("{}")  # a manifest that does not name the tool and its files
    assert "not written by attentionflow" in _one_line_error(check_output_dir, out, True)
    seal_output(out, {})
    expected = f"output folder {out} holds an earlier output; pass --overwrite to replace it"
    assert _one_line_error(check_output_dir, out, False) == expected
    assert check_output_dir(out, overwrite=True) == out
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    assert "not a folder" in _one_line_error(check_output_dir, a_file, True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt", "run"]


@pytest.mark.parametrize("writer", ["mp4", "gif"])
def test_writers_take_frames_one_at_a_time_and_write_the_same_file(tmp_path: Path, writer: str) -> None:
    """A generator of frames (never a whole array) gives the same video as the array; it is consumed once.

    The mp4 is written lossless (crf 0): at crf > 0 x264 sometimes makes different rate decisions for the same
    frames in two encodes within one process (measured: 2 distinct files in 10-40% of 100 encodes of this clip,
    pixels up to 10 apart), so only a lossless encode's pictures are set by the input alone.
    """
    video = smooth_video(6)
    write = functools.partial(write_mp4, crf=0) if writer == "mp4" else write_gif
    whole = write(video, tmp_path / f"whole.{writer}")
    pulled: list[int] = []

    def frames():
        for i, frame in enumerate(video):
            pulled.append(i)
            yield frame

    streamed = write(frames(), tmp_path / f"streamed.{writer}")
    assert pulled == list(range(6))
    assert np.array_equal(read_frames(streamed), read_frames(whole))


def test_grid_frames_are_the_grid_one_frame_at_a_time() -> None:
    from attentionflow.io.grid import grid_frames

    a = smooth_video(4)
    b = smooth_video(4, height=24, width=20)  # another height: resized
    frames = grid_frames([a, b], labels=["input", "edit"], gap=3)
    assert not isinstance(frames, np.ndarray)
    assert np.array_equal(np.stack(list(frames)), make_grid([a, b], labels=["input", "edit"], gap=3))
    with pytest.raises(ValueError, match="frames"):
        grid_frames([a, b[:2]])  # checked before the first frame


def test_writers_refuse_an_empty_stream_and_frames_of_changing_size(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one frame"):
        write_mp4(iter([]), tmp_path / "none.mp4")
    with pytest.raises(ValueError, match="one size"):
        write_gif(iter([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 10, 3), np.uint8)]), tmp_path / "mixed.gif")
    assert not list(tmp_path.iterdir())  # nothing half-written
