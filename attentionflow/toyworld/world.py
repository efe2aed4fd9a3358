"""The procedural toy world: textured backgrounds, coloured shapes, captions and moving-object videos.

Pure NumPy/Pillow and fully seeded. Every frame is ``(H, W, 3) uint8``; object masks are
``(H, W) bool`` (anti-aliased coverage >= 0.5) and the ground-truth forward flow of frame ``i`` is
``(H, W, 2) float32`` ``(dx, dy)`` (x to the right, y down) on the object's pixels, 0 elsewhere.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw

from attentionflow.errors import InputError, PromptError

#: Object colours (name -> RGB). Chosen far from every background colour.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 210, 70),
    "blue": (40, 80, 235),
    "yellow": (245, 225, 40),
    "white": (250, 250, 250),
    "purple": (150, 60, 205),
}

#: Object shapes.
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")

#: Background classes (name -> mean RGB of the texture).
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "road": (92, 92, 98),
    "grass": (80, 125, 45),
    "snow": (192, 204, 222),
    "sand": (205, 172, 118),
    "water": (35, 98, 148),
}

#: Motion verbs used in captions ("moving" dominates training captions).
VERBS: tuple[str, ...] = ("moving", "sliding", "rolling")
VERB_WEIGHTS: tuple[float, ...] = (0.8, 0.1, 0.1)

#: Every word the captions use (the toy tokenizer gives each its own token, except ``purple``).
WORLD_WORDS: tuple[str, ...] = (
    ("a", "is", "on", "the") + tuple(COLOURS) + SHAPES + tuple(BACKGROUNDS) + VERBS
)

PathKind = Literal["straight", "curved"]


@dataclass
class ToyVideo:
    """A rendered toy video.

    Attributes:
        frames: ``(N, H, W, 3) uint8``.
        masks: ``(N, H, W) bool`` object masks.
        flows: ``(N-1, H, W, 2) float32`` forward flow ``frame i -> i+1`` (dx, dy) on object pixels
            of frame ``i``, 0 on the background.
        positions: ``(N, 2) float32`` object centre ``(x, y)`` per frame, in pixels.
        caption, colour, shape, background: the scene description.
        radius: object size (circle radius / half side) in pixels.
    """

    frames: np.ndarray
    masks: np.ndarray
    flows: np.ndarray
    caption: str
    colour: str
    shape: str
    background: str
    positions: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))
    radius: float = 0.0


def make_caption(colour: str, shape: str, background: str, verb: str = "moving") -> str:
    """``"a {colour} {shape} is {verb} on the {background}"``."""
    return f"a {colour} {shape} is {verb} on the {background}"


def parse_caption(caption: str) -> tuple[str, str, str]:
    """Find the colour, shape and background words of a caption.

    Raises:
        PromptError: if the caption lacks exactly one known colour, shape or background word.
    """
    words = re.findall(r"[a-z]+", caption.lower())
    found: list[str] = []
    for kind, vocab in (("colour", COLOURS), ("shape", SHAPES), ("background", BACKGROUNDS)):
        hits = list(dict.fromkeys(w for w in words if w in vocab))
        if len(hits) != 1:
            what = "no" if not hits else "more than one"
            raise PromptError(
                f"caption {caption!r} has {what} {kind} word; valid {kind}s: {', '.join(vocab)}"
            )
        found.append(hits[0])
    return found[0], found[1], found[2]


def random_caption(rng: np.random.Generator, verb: str | None = None) -> str:
    """A random world caption (verb drawn with :data:`VERB_WEIGHTS` unless given)."""
    colour = str(rng.choice(list(COLOURS)))
    shape = str(rng.choice(list(SHAPES)))
    background = str(rng.choice(list(BACKGROUNDS)))
    if verb is None:
        verb = str(rng.choice(list(VERBS), p=list(VERB_WEIGHTS)))
    return make_caption(colour, shape, background, verb)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth noise ``(size, size) float32`` in about [-1, 1]: a ``cells x cells`` grid, bicubic-upsampled."""
    grid = rng.uniform(-1.0, 1.0, (cells, cells)).astype(np.float32)
    img = Image.fromarray(grid, mode="F").resize((size, size), Image.BICUBIC)
    return np.asarray(img, dtype=np.float32)


def render_background(background: str, size: int = 64, seed: int | np.random.Generator = 0) -> np.ndarray:
    """A textured background ``(size, size, 3) float32`` in [0, 255].

    Textures are smooth and low-contrast (road: fine grain, grass: blotches, snow: soft drifts,
    sand: diagonal ripples, water: horizontal waves) so the VAE can reconstruct them.
    """
    if background not in BACKGROUNDS:
        raise PromptError(f"unknown background {background!r}; valid: {', '.join(BACKGROUNDS)}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    base = np.asarray(BACKGROUNDS[background], np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size  # (size, size) each, in [0, 1)
    phase = rng.uniform(0, 2 * np.pi)
    if background == "road":
        tex = 6.0 * _smooth_noise(rng, size, max(4, size // 6)) + 3.0 * _smooth_noise(rng, size, max(2, size // 16))
        shade = tex[..., None] * np.ones(3, np.float32)
    elif background == "grass":
        tex = 14.0 * _smooth_noise(rng, size, max(4, size // 6)) + 6.0 * _smooth_noise(rng, size, max(4, size // 3))
        shade = tex[..., None] * np.array([0.7, 1.0, 0.5], np.float32)
    elif background == "snow":
        tex = 7.0 * _smooth_noise(rng, size, 4)
        shade = tex[..., None] * np.array([1.0, 1.0, 0.8], np.float32)
    elif background == "sand":
        freq = rng.uniform(5.0, 8.0)
        tex = 10.0 * np.sin(2 * np.pi * freq * (xx + 0.6 * yy) + phase) + 4.0 * _smooth_noise(rng, size, 4)
        shade = tex[..., None] * np.array([1.0, 0.9, 0.7], np.float32)
    else:  # water
        freq = rng.uniform(4.0, 7.0)
        wobble = 0.05 * np.sin(2 * np.pi * 2.0 * xx + phase)
        tex = 14.0 * np.sin(2 * np.pi * freq * (yy + wobble) + phase) + 4.0 * _smooth_noise(rng, size, 4)
        shade = tex[..., None] * np.array([0.6, 0.9, 1.0], np.float32)
    return np.clip(base + shade, 0, 255).astype(np.float32)


def render_shape_alpha(shape: str, centre: tuple[float, float], radius: float, size: int = 64,
                       supersample: int = 4) -> np.ndarray:
    """Anti-aliased coverage ``(size, size) float32`` in [0, 1] of a shape.

    ``circle``: radius ``radius``; ``square``: axis-aligned, half side ``radius``; ``triangle``:
    upright isosceles, base ``2 * radius`` and height ``2 * radius``, centred on its bounding box.
    """
    if shape not in SHAPES:
        raise PromptError(f"unknown shape {shape!r}; valid: {', '.join(SHAPES)}")
    s = supersample
    img = Image.new("L", (size * s, size * s), 0)
    draw = ImageDraw.Draw(img)
    cx, cy, r = centre[0] * s, centre[1] * s, radius * s
    # Pixel centres sit at (i + 0.5); PIL coordinates address pixel corners.
    cx, cy = cx + 0.5 * s - 0.5, cy + 0.5 * s - 0.5
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    elif shape == "square":
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=255)
    else:
        draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=255)
    small = img.resize((size, size), Image.BOX)
    return np.asarray(small, np.float32) / 255.0


def render_frame(colour: str, shape: str, background: str | np.ndarray, centre: tuple[float, float],
                 radius: float, size: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Render one frame.

    Args:
        colour, shape: object description (keys of :data:`COLOURS`, :data:`SHAPES`).
        background: a background name, or a pre-rendered ``(size, size, 3)`` float background.
        centre: object centre ``(x, y)`` in pixels; radius: object size in pixels.
        seed: background texture seed (ignored for a pre-rendered background).

    Returns:
        ``frame (size, size, 3) uint8`` and ``mask (size, size) bool``.
    """
    if colour not in COLOURS:
        raise PromptError(f"unknown colour {colour!r}; valid: {', '.join(COLOURS)}")
    bg = render_background(background, size, seed) if isinstance(background, str) else background
    alpha = render_shape_alpha(shape, centre, radius, size)[..., None]  # (H, W, 1)
    frame = bg * (1.0 - alpha) + np.asarray(COLOURS[colour], np.float32) * alpha
    return np.clip(np.rint(frame), 0, 255).astype(np.uint8), alpha[..., 0] >= 0.5


def _fold(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Reflect coordinates into ``[lo, hi]`` (an object bouncing off the walls)."""
    span = hi - lo
    if span <= 0:
        return np.full_like(x, (lo + hi) / 2)
    t = np.mod(x - lo, 2 * span)
    return lo + np.where(t > span, 2 * span - t, t)


def object_path(frames: int, size: int, radius: float, rng: np.random.Generator,
                path: PathKind = "straight", speed: float | None = None) -> np.ndarray:
    """Object centres ``(frames, 2) float32`` along a straight line or a circular arc.

    With ``speed=None`` the speed (pixels/frame) is drawn so that the whole path fits in the frame;
    an explicit speed that leaves the frame bounces off its edges.
    """
    margin = radius + 1.0
    lo, hi = margin, size - 1 - margin
    span = max(hi - lo, 0.0)
    if speed is None:
        speed = float(rng.uniform(1.5, 3.0))
        if frames > 1:
            speed = min(speed, 0.8 * span / (frames - 1))
    t = np.arange(frames, dtype=np.float64)
    if path == "straight":
        angle = rng.uniform(0, 2 * np.pi)
        d = np.array([np.cos(angle), np.sin(angle)])
        length = speed * max(frames - 1, 0)
        # Start so that the path is centred in the frame when it fits.
        start = np.array([(lo + hi) / 2, (lo + hi) / 2]) - d * length / 2
        start = start + rng.uniform(-1, 1, 2) * max(0.0, (span - length) / 2) * np.abs(d[::-1])
        pos = start[None, :] + t[:, None] * speed * d[None, :]
    elif path == "curved":
        big = max(span / 2, 4.0)
        turn_radius = rng.uniform(0.35, 0.6) * big
        omega = speed / turn_radius * rng.choice([-1.0, 1.0])
        theta0 = rng.uniform(0, 2 * np.pi)
        sweep = omega * max(frames - 1, 0)
        centre = np.array([(lo + hi) / 2, (lo + hi) / 2]) - turn_radius * np.array(
            [np.cos(theta0 + sweep / 2), np.sin(theta0 + sweep / 2)]) * 0.5
        theta = theta0 + omega * t
        pos = centre[None, :] + turn_radius * np.stack([np.cos(theta), np.sin(theta)], axis=1)
    else:
        raise InputError(f"unknown path {path!r}; valid: straight, curved")
    return _fold(pos, lo, hi).astype(np.float32)


def make_video(caption: str, frames: int = 8, size: int = 64, seed: int = 0,
               path: PathKind = "straight", speed: float | None = None,
               radius: float | None = None) -> ToyVideo:
    """Render a video of the caption's object moving over its (static) background.

    Args:
        caption: e.g. ``"a red circle is moving on the road"`` (see :func:`parse_caption`).
        frames: number of frames N >= 1; size: frame side in pixels (>= 16).
        seed: seeds the texture, size, start point and direction.
        path: ``"straight"`` or ``"curved"``; speed: pixels per frame (None: random, path fits).
        radius: object size in pixels (None: random, about 11-22% of ``size``).

    Returns:
        :class:`ToyVideo` with frames ``(N, size, size, 3)``, masks ``(N, size, size)`` and flows
        ``(N-1, size, size, 2)``.
    """
    if frames < 1:
        raise InputError(f"frames={frames} is invalid; use an integer >= 1")
    if size < 16:
        raise InputError(f"size={size} is invalid; use an integer >= 16")
    if speed is not None and not (math.isfinite(speed) and speed >= 0):
        raise InputError(f"speed={speed} is invalid; use a finite number of pixels per frame >= 0")
    colour, shape, background = parse_caption(caption)
    rng = np.random.default_rng(seed)
    if radius is None:
        radius = float(rng.uniform(0.11, 0.2) * size)
    bg = render_background(background, size, rng)
    positions = object_path(frames, size, radius, rng, path, speed)
    out_frames = np.empty((frames, size, size, 3), np.uint8)
    masks = np.empty((frames, size, size), bool)
    for i, (x, y) in enumerate(positions):
        out_frames[i], masks[i] = render_frame(colour, shape, bg, (float(x), float(y)), radius, size)
    flows = np.zeros((max(frames - 1, 0), size, size, 2), np.float32)
    for i in range(frames - 1):
        flows[i][masks[i]] = positions[i + 1] - positions[i]  # (dx, dy) on the object's pixels
    return ToyVideo(frames=out_frames, masks=masks, flows=flows, caption=caption, colour=colour,
                    shape=shape, background=background, positions=positions, radius=radius)


@dataclass
class TrainingSample:
    """One training image: ``image (H, W, 3) uint8``, its mask, caption and labels.

    ``mask``: the captioned object's pixels; ``objects_mask``: every object's (the same in a one-object scene)."""

    image: np.ndarray
    mask: np.ndarray
    caption: str
    colour: str
    shape: str
    background: str
    objects_mask: np.ndarray | None = None


def sample_scene(rng: np.random.Generator, size: int = 64, multi_object: float = 0.0) -> TrainingSample:
    """A random still scene (uniform colour/shape/background, random size, position and texture).

    With probability ``multi_object`` the scene also holds 1-2 static objects beside the captioned one (half of
    them look-alikes: its own colour and shape), none overlapping; the caption still names only the first object,
    as the multi-object videos' captions do (:func:`make_scene`). ``mask`` is the captioned object's.
    """
    colour = str(rng.choice(list(COLOURS)))
    shape = str(rng.choice(list(SHAPES)))
    background = str(rng.choice(list(BACKGROUNDS)))
    verb = str(rng.choice(list(VERBS), p=list(VERB_WEIGHTS)))
    caption = make_caption(colour, shape, background, verb)
    if multi_object > 0 and rng.uniform() < multi_object:
        specs = [ObjectSpec(colour, shape, radius=float(rng.uniform(0.11, 0.17) * size))]
        for _ in range(int(rng.integers(1, 3))):
            if rng.uniform() < 0.5:
                specs.append(ObjectSpec(colour, shape))
            else:
                specs.append(ObjectSpec(str(rng.choice(list(COLOURS))), str(rng.choice(list(SHAPES)))))
        scene = make_scene(specs, background, frames=1, size=size, seed=int(rng.integers(1 << 31)))
        return TrainingSample(scene.frames[0], scene.objects[0].masks[0], caption, colour, shape, background,
                              scene.object_masks[0])
    radius = float(rng.uniform(0.11, 0.2) * size)
    margin = radius + 1.0
    centre = (float(rng.uniform(margin, size - 1 - margin)), float(rng.uniform(margin, size - 1 - margin)))
    bg = render_background(background, size, rng)
    image, mask = render_frame(colour, shape, bg, centre, radius, size)
    return TrainingSample(image, mask, caption, colour, shape, background, mask)


def sample_training_batch(rng: np.random.Generator, n: int, size: int = 64,
                          multi_object: float = 0.0) -> tuple[np.ndarray, list[str]]:
    """``n`` random scenes (:func:`sample_scene`): images ``(n, size, size, 3) uint8`` and their captions."""
    images, captions, _ = sample_training_masks(rng, n, size, multi_object)
    return images, captions


def sample_training_masks(rng: np.random.Generator, n: int, size: int = 64,
                          multi_object: float = 0.0) -> tuple[np.ndarray, list[str], np.ndarray]:
    """As :func:`sample_training_batch`, plus every object's pixels ``(n, size, size) bool`` (the same draws)."""
    samples = [sample_scene(rng, size, multi_object) for _ in range(n)]
    return (np.stack([s.image for s in samples]), [s.caption for s in samples],
            np.stack([s.objects_mask for s in samples]))


# -------------------------------------------------------------------------------------------------
# multi-object scenes


@dataclass(frozen=True)
class ObjectSpec:
    """One object of a multi-object scene.

    Attributes:
        colour, shape: keys of :data:`COLOURS` / :data:`SHAPES`.
        moving: True for a mover (a straight path), False for a static object.
        direction: a mover's heading in degrees counter-clockwise from east (north = up on screen = 90);
            None draws one at random.
        speed: a mover's speed in pixels per frame; None draws one (1.5-3 px) that keeps the path in frame.
        radius: see below.
    """

    colour: str
    shape: str
    moving: bool = False
    direction: float | None = None
    speed: float | None = None
    radius: float | None = None
    """Size in pixels (circle radius / half side); None draws one from the scene's ``radius_range``."""


def object_boxes(positions: np.ndarray, radius: float, size: tuple[int, int], margin: float = 2.0) -> np.ndarray:
    """``(N, H, W) bool``: pixels within ``radius + margin`` (max-norm) of the centre ``positions (N, 2)``, per frame.

    Every shape of the world with this radius (circle, square, triangle) fits inside, so the box also bounds the
    object after a shape edit, and "outside every box" is background."""
    h, w = size
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)  # (H, W) each
    r = radius + margin
    px = positions[:, 0][:, None, None]  # (N, 1, 1)
    py = positions[:, 1][:, None, None]
    return (np.abs(xs[None] - px) <= r) & (np.abs(ys[None] - py) <= r)


@dataclass
class SceneObject:
    """Ground truth of one rendered object: its spec, size, path and per-frame visible mask.

    Attributes:
        colour, shape, moving: as the :class:`ObjectSpec`.
        radius: size in pixels (circle radius / half side).
        positions: ``(N, 2) float32`` centre ``(x, y)`` per frame (constant for a static object).
        masks: ``(N, H, W) bool`` the object's visible pixels (coverage >= 0.5, not hidden by a later object).
    """

    colour: str
    shape: str
    moving: bool
    radius: float
    positions: np.ndarray
    masks: np.ndarray

    def boxes(self, margin: float = 2.0) -> np.ndarray:
        """``(N, H, W) bool``: :func:`object_boxes` of this object."""
        return object_boxes(self.positions, self.radius, self.masks.shape[1:], margin)


@dataclass
class ToyScene:
    """A rendered multi-object video: frames and per-object ground truth.

    Attributes:
        frames: ``(N, H, W, 3) uint8``.
        objects: one :class:`SceneObject` per object, in the order given (movers first in the caption).
        flows: ``(N-1, H, W, 2) float32`` forward flow ``frame i -> i+1`` on every object's visible pixels of frame
            ``i`` (0 on static objects and the background).
        caption: describes the first mover (``"a red circle is moving on the road"``), as :func:`make_caption`.
        background: the background name.
    """

    frames: np.ndarray
    objects: list[SceneObject]
    flows: np.ndarray
    caption: str
    background: str

    @property
    def moving_masks(self) -> np.ndarray:
        """``(N, H, W) bool``: union of the movers' visible pixels per frame."""
        out = np.zeros(self.frames.shape[:3], bool)
        for obj in self.objects:
            if obj.moving:
                out |= obj.masks
        return out

    @property
    def object_masks(self) -> np.ndarray:
        """``(N, H, W) bool``: union of every object's visible pixels per frame."""
        out = np.zeros(self.frames.shape[:3], bool)
        for obj in self.objects:
            out |= obj.masks
        return out


def _directed_path(frames: int, lo: float, hi: float, angle: float, speed: float,
                   rng: np.random.Generator) -> np.ndarray:
    """Centres ``(frames, 2) float64`` of a straight path with heading ``angle`` (degrees, screen compass: y up)
    that stays inside ``[lo, hi]^2``; the start is drawn among those that fit."""
    rad = math.radians(angle)
    d = np.array([math.cos(rad), -math.sin(rad)])  # image coordinates: y points down
    travel = d * speed * max(frames - 1, 0)
    start_lo = np.maximum(lo, lo - travel)
    start_hi = np.minimum(hi, hi - travel)
    if np.any(start_hi < start_lo):
        raise InputError(f"a path of {speed:.2f} px/frame over {frames} frames does not fit in the frame; "
                         "use a lower speed or fewer frames")
    start = rng.uniform(start_lo, start_hi)
    return start[None, :] + np.arange(frames)[:, None] * (travel / max(frames - 1, 1))[None, :]


def _far_enough(path: np.ndarray, radius: float, placed: list[tuple[np.ndarray, float]], gap: float) -> bool:
    """True when every centre of ``path (N, 2)`` keeps ``radius + r + gap`` (max-norm: the boxes do not touch)
    from every centre of every placed path."""
    for other, r in placed:
        dist = np.abs(path[:, None, :] - other[None, :, :]).max(axis=-1)  # (N, M) Chebyshev distances
        if dist.min() < radius + r + gap:
            return False
    return True


def make_scene(specs: list[ObjectSpec] | tuple[ObjectSpec, ...], background: str, frames: int = 8,
               size: int = 64, seed: int = 0, radius_range: tuple[float, float] = (0.11, 0.15),
               gap: float = 4.0, verb: str = "moving") -> ToyScene:
    """Render several objects (movers on straight paths, static ones still) over a static background.

    Objects never overlap: their boxes (radius + 2 px, see :meth:`SceneObject.boxes`) keep ``gap`` pixels apart on
    every frame, so each one's mask and box belong to it alone. Movers are drawn last.

    Args:
        specs: the objects; the caption describes the first mover (or the first object when none moves).
        background: a key of :data:`BACKGROUNDS`; frames: N >= 1; size: frame side (>= 32).
        seed: seeds sizes, directions, speeds, placements and texture.
        radius_range: object radius as a fraction of ``size``.
        gap: pixels kept free between object boxes.

    Raises:
        InputError / PromptError: bad arguments, or a layout that does not fit after many tries.
    """
    if frames < 1:
        raise InputError(f"frames={frames} is invalid; use an integer >= 1")
    if size < 32:
        raise InputError(f"size={size} is invalid; a scene needs an integer >= 32")
    if not specs:
        raise InputError("a scene needs at least one object")
    for spec in specs:
        if spec.colour not in COLOURS:
            raise PromptError(f"unknown colour {spec.colour!r}; valid: {', '.join(COLOURS)}")
        if spec.shape not in SHAPES:
            raise PromptError(f"unknown shape {spec.shape!r}; valid: {', '.join(SHAPES)}")
        if spec.speed is not None and not (math.isfinite(spec.speed) and spec.speed >= 0):
            raise InputError(f"speed={spec.speed} is invalid; use a finite number of pixels per frame >= 0")
        if spec.radius is not None and not (math.isfinite(spec.radius) and 1.0 <= spec.radius <= size / 4):
            raise InputError(f"radius={spec.radius} is invalid; use pixels in [1, {size / 4:g}]")
    if background not in BACKGROUNDS:
        raise PromptError(f"unknown background {background!r}; valid: {', '.join(BACKGROUNDS)}")
    rng = np.random.default_rng(seed)
    bg = render_background(background, size, rng)
    order = sorted(range(len(specs)), key=lambda i: not specs[i].moving)  # movers are placed first
    for _attempt in range(200):
        placed: list[tuple[np.ndarray, float]] = []
        paths: dict[int, tuple[np.ndarray, float]] = {}
        ok = True
        for i in order:
            spec = specs[i]
            radius = float(spec.radius) if spec.radius is not None else float(rng.uniform(*radius_range) * size)
            lo, hi = radius + 2.0, size - 3.0 - radius
            for _ in range(100):
                if spec.moving:
                    angle = float(spec.direction) if spec.direction is not None else float(rng.uniform(0, 360))
                    speed = spec.speed if spec.speed is not None else float(rng.uniform(1.5, 3.0))
                    path = _directed_path(frames, lo, hi, angle, speed, rng)
                else:
                    path = np.repeat(rng.uniform(lo, hi, (1, 2)), frames, axis=0)
                if _far_enough(path, radius + 2.0, placed, gap):
                    break
            else:
                ok = False
                break
            placed.append((path, radius + 2.0))
            paths[i] = (path, radius)
        if ok:
            break
    else:
        raise InputError(f"{len(specs)} objects do not fit apart in a {size}x{size} frame over {frames} frames; "
                         "use fewer objects, slower movers or a larger size")
    out = np.repeat(bg[None], frames, axis=0)  # (N, H, W, 3) float
    masks = [np.zeros((frames, size, size), bool) for _ in specs]
    draw_order = sorted(range(len(specs)), key=lambda i: specs[i].moving)  # static first, movers on top
    for t in range(frames):
        for i in draw_order:
            path, radius = paths[i]
            alpha = render_shape_alpha(specs[i].shape, (float(path[t, 0]), float(path[t, 1])), radius, size)
            out[t] = (
                out[t] * (1.0 - alpha[..., None]) + np.asarray(COLOURS[specs[i].colour], np.float32) * alpha[..., None]
            )
            hit = alpha >= 0.5
            for m in masks:
                m[t] &= ~hit  # a later object hides the earlier ones
            masks[i][t] = hit
    objects = [SceneObject(colour=s.colour, shape=s.shape, moving=s.moving, radius=paths[i][1],
                           positions=paths[i][0].astype(np.float32), masks=masks[i]) for i, s in enumerate(specs)]
    flows = np.zeros((max(frames - 1, 0), size, size, 2), np.float32)
    for obj in objects:
        if obj.moving:
            for t in range(frames - 1):
                flows[t][obj.masks[t]] = obj.positions[t + 1] - obj.positions[t]  # (dx, dy)
    first = next((s for s in specs if s.moving), specs[0])
    caption = make_caption(first.colour, first.shape, background, verb)
    return ToyScene(frames=np.clip(np.rint(out), 0, 255).astype(np.uint8), objects=objects, flows=flows,
                    caption=caption, background=background)
