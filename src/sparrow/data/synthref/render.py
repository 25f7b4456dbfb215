"""Rasterise a :class:`~sparrow.data.synthref.scene.SceneSpec` into frames, full masks and visible masks.

Shapes are drawn with OpenCV (sub-pixel vertices, no anti-aliasing, so a mask is exactly the pixels painted in
the object's colour before JPEG compression). Objects are painted back to front (``ObjectSpec.z``); occluder bars
are painted last. The *full* mask of an object is its whole shape inside the frame (amodal); its *visible* mask
is what remains after everything in front of it is painted.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from sparrow.data.synthref.scene import COLOURS, OCCLUDER_COLOUR, SceneSpec

_SHIFT = 4  # cv2 fractional bits for sub-pixel vertices
_ONE = 1 << _SHIFT


def _star(points: int, outer: float, inner: float) -> np.ndarray:
    angles = -np.pi / 2 + np.arange(2 * points) * np.pi / points
    radii = np.where(np.arange(2 * points) % 2 == 0, outer, inner)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


_ARM = 0.38
UNIT_POLYGONS: dict[str, np.ndarray] = {  # vertices for radius 1, centred on 0
    "square": np.array([[-0.85, -0.85], [0.85, -0.85], [0.85, 0.85], [-0.85, 0.85]]),
    "triangle": _star(3, 1.15, 1.15)[::2] * np.array([1.0, 1.0]) + np.array([0.0, 0.15]),
    "star": _star(5, 1.2, 0.5),
    "diamond": np.array([[0.0, -1.15], [0.8, 0.0], [0.0, 1.15], [-0.8, 0.0]]),
    "cross": np.array(
        [
            [-_ARM, -1.0],
            [_ARM, -1.0],
            [_ARM, -_ARM],
            [1.0, -_ARM],
            [1.0, _ARM],
            [_ARM, _ARM],
            [_ARM, 1.0],
            [-_ARM, 1.0],
            [-_ARM, _ARM],
            [-1.0, _ARM],
            [-1.0, -_ARM],
            [-_ARM, -_ARM],
        ]
    ),
}


@dataclass
class RenderedClip:
    """Frames ``[T, H, W, 3]`` uint8; ``full`` and ``visible`` masks ``[N, T, H, W]`` bool (N objects in scene order)."""

    frames: np.ndarray
    full: np.ndarray
    visible: np.ndarray


def shape_points(shape: str, centres: np.ndarray, radius: float, angle: float = 0.0) -> np.ndarray:
    """Fixed-point (``_SHIFT`` bits) drawing coordinates for centres ``[T, 2]``: polygon vertices ``[T, V, 2]``
    int32, or for a circle ``[T, 1, 2]`` centres (the radius is passed separately)."""
    if shape == "circle":
        return np.rint(centres[:, None, :] * _ONE).astype(np.int32)
    unit = UNIT_POLYGONS[shape]
    if angle:
        c, s = np.cos(angle), np.sin(angle)
        unit = unit @ np.array([[c, s], [-s, c]])
    return np.rint((unit[None] * radius + centres[:, None, :]) * _ONE).astype(np.int32)


def _paint(canvas: np.ndarray, shape: str, pts: np.ndarray, radius_fixed: int, value: int) -> None:
    if shape == "circle":
        cv2.circle(canvas, (int(pts[0, 0]), int(pts[0, 1])), radius_fixed, value, -1, cv2.LINE_8, _SHIFT)
    else:
        cv2.fillPoly(canvas, [pts], value, cv2.LINE_8, _SHIFT)


def draw_shape(
    canvas: np.ndarray, shape: str, centre: tuple[float, float], radius: float, angle: float = 0.0, value: int = 1
) -> None:
    """Paint ``shape`` with ``value`` into the uint8 ``canvas [H, W]`` in place."""
    pts = shape_points(shape, np.asarray([centre], dtype=np.float64), radius, angle)[0]
    _paint(canvas, shape, pts, int(round(radius * _ONE)), value)


def boxes_of(masks: np.ndarray) -> np.ndarray:
    """Tight boxes ``[..., 4]`` (x0, y0, x1, y1; x1/y1 exclusive, as ``rle.mask_to_box``) of masks ``[..., H, W]``;
    NaN rows where a mask is empty."""
    rows = masks.any(axis=-1)  # [..., H]
    cols = masks.any(axis=-2)  # [..., W]
    H, W = masks.shape[-2:]
    out = np.stack(
        [cols.argmax(-1), rows.argmax(-1), W - cols[..., ::-1].argmax(-1), H - rows[..., ::-1].argmax(-1)], axis=-1
    ).astype(np.float64)
    out[~rows.any(-1)] = np.nan
    return out


def render_background(scene: SceneSpec) -> np.ndarray:
    """The background of every frame ``[T, H, W, 3]`` uint8 (a panning crop of a larger canvas when textured)."""
    S, T = scene.size, scene.num_frames
    rng = np.random.default_rng(scene.background_seed)
    tint = rng.integers(-8, 9, size=3)
    level = scene.background_level
    if scene.background == "plain":
        out = np.empty((T, S, S, 3), dtype=np.uint8)
        out[:] = np.clip(level + tint, 0, 255).astype(np.uint8)
        return out
    pad = int(np.abs(scene.camera).max())
    side = S + 2 * pad
    coarse = rng.uniform(level - 22, level + 28, size=(8, 8, 3)).astype(np.float32)
    canvas = cv2.resize(coarse, (side, side), interpolation=cv2.INTER_CUBIC) + tint.astype(np.float32)
    grain = rng.integers(-5, 6, size=(side, side, 1), dtype=np.int16)  # fine grey grain
    canvas = np.clip(canvas.astype(np.int16) + grain, 0, 255).astype(np.uint8)
    out = np.empty((T, S, S, 3), dtype=np.uint8)
    for t in range(T):
        x0, y0 = pad + int(scene.camera[t, 0]), pad + int(scene.camera[t, 1])
        out[t] = canvas[y0 : y0 + S, x0 : x0 + S]
    return out


def render(scene: SceneSpec) -> RenderedClip:
    """Render every frame of ``scene``: see :class:`RenderedClip`."""
    S, T, N = scene.size, scene.num_frames, len(scene.objects)
    full = np.zeros((N, T, S, S), dtype=bool)
    full_u8 = full.view(np.uint8)  # cv2 paints 1 into the bool memory directly
    labels = np.zeros((T, S, S), dtype=np.uint8)  # 0 background, 1 occluder, k + 2 object k
    order = sorted(range(N), key=lambda k: scene.objects[k].z)
    points = [shape_points(o.shape, o.centres - scene.camera, o.radius, o.angle) for o in scene.objects]
    radii = [int(round(o.radius * _ONE)) for o in scene.objects]
    for t in range(T):
        cam = scene.camera[t]
        for k in order:
            obj = scene.objects[k]
            if t < obj.appear:
                continue
            _paint(full_u8[k, t], obj.shape, points[k][t], radii[k], 1)
            _paint(labels[t], obj.shape, points[k][t], radii[k], k + 2)
        for occ in scene.occluders:
            x0 = int(round(occ.xs[t] - cam[0] - occ.width / 2))
            x1 = int(round(occ.xs[t] - cam[0] + occ.width / 2))
            if x1 > 0 and x0 < S:
                labels[t, :, max(0, x0) : min(S, x1)] = 1
    visible = labels[None] == (np.arange(N, dtype=np.uint8) + 2)[:, None, None, None]
    palette = np.zeros((N + 2, 3), dtype=np.uint8)
    palette[1] = OCCLUDER_COLOUR
    for k, obj in enumerate(scene.objects):
        palette[k + 2] = COLOURS[obj.colour]
    frames = render_background(scene)
    fg = labels > 0
    frames[fg] = palette[labels[fg]]
    return RenderedClip(frames=frames, full=full, visible=visible)
