"""SynthRef scenes: what is in a clip (objects, motions, background, camera, occluders) before rendering.

A scene is sampled from a :class:`numpy.random.Generator` only, so the same generator state gives the same
scene. Vocabulary (high-contrast colours on dark backgrounds, objects 12-40 px across at 128 px):

- shapes: circle, square, triangle, star, diamond, cross;
- colours: red, green, blue, yellow, purple, cyan;
- sizes: small (radius 7-9 px at 128 px), large (radius 14-18 px);
- backgrounds: plain (a dark grey tone) or textured (smooth dark noise); a textured background may pan;
- occluders: light-grey vertical bars that sweep across the frame in front of everything.

Planted difficulties (each planted with some probability; the tags written out are measured on the rendered
clip, not taken from this plan): ``distractor`` (a look-alike differing only in motion or position), ``multi``
(two or three identical objects), ``fast``, ``reentry`` (leaves the frame and comes back), ``late`` (appears after
frame 0) and ``occlusion`` (an occluder bar sweeps over an object).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sparrow.data.synthref.motion import MOTIONS, make_trajectory

SHAPES = ("circle", "square", "triangle", "star", "diamond", "cross")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40),
    "green": (40, 200, 60),
    "blue": (60, 100, 255),
    "yellow": (245, 220, 30),
    "purple": (180, 70, 230),
    "cyan": (40, 225, 225),
}
SIZES: dict[str, tuple[float, float]] = {"small": (7.0, 9.0), "large": (14.0, 18.0)}  # radius at 128 px
OCCLUDER_COLOUR = (170, 170, 170)
DIFFICULTIES = ("occlusion", "reentry", "distractor", "fast", "late", "multi")
PLANT_PROBABILITY = {"occlusion": 0.3, "reentry": 0.25, "distractor": 0.4, "fast": 0.25, "late": 0.25, "multi": 0.25}
_BACKGROUND_MOTIONS = ("static", "linear", "bounce", "zigzag", "stop_and_go")


@dataclass
class ObjectSpec:
    """One object: appearance, world trajectory ``centres [T, 2]``, first frame ``appear``, depth ``z``."""

    shape: str
    colour: str
    size: str
    radius: float
    motion: str
    centres: np.ndarray
    direction: str | None = None
    appear: int = 0
    z: int = 0
    angle: float = 0.0  # rotation of the shape (radians), fixed over the clip


@dataclass
class Occluder:
    """A vertical bar of ``width`` px whose centre x (world) is ``xs[t]``; it covers the full height."""

    xs: np.ndarray
    width: float


@dataclass
class SceneSpec:
    """Everything needed to render one clip of ``num_frames`` frames of ``size`` x ``size`` px."""

    size: int
    num_frames: int
    objects: list[ObjectSpec]
    background: str  # "plain" or "textured"
    background_seed: int
    background_level: int
    camera: np.ndarray  # [T, 2] int: world offset of the frame's top-left corner (frame = world - camera)
    occluders: list[Occluder] = field(default_factory=list)
    planted: dict[str, list[int]] = field(default_factory=dict)  # difficulty -> object indices


def _far_enough(centre: np.ndarray, radius: float, placed: list[ObjectSpec]) -> bool:
    for other in placed:
        if other.appear == 0 and np.hypot(*(centre - other.centres[0])) < 0.9 * (radius + other.radius):
            return False
    return True


def _new_object(
    rng: np.random.Generator,
    appearance: tuple[str, str, str],
    motion: str,
    size: int,
    num_frames: int,
    placed: list[ObjectSpec],
    *,
    outside: bool = False,
    start: tuple[float, float] | None = None,
) -> ObjectSpec:
    shape, colour, size_name = appearance
    lo, hi = SIZES[size_name]
    radius = float(rng.uniform(lo, hi) * size / 128.0)
    centres, direction = make_trajectory(rng, motion, radius, size, num_frames, outside=outside, start=start)
    for _ in range(8):  # a few tries to avoid heavy overlap on the first frame
        if _far_enough(centres[0], radius, placed):
            break
        centres, direction = make_trajectory(rng, motion, radius, size, num_frames, outside=outside, start=start)
    angle = float(rng.uniform(-0.3, 0.3)) if shape in ("square", "triangle", "star") else 0.0
    return ObjectSpec(shape, colour, size_name, radius, motion, centres, direction, angle=angle)


def _appearances(rng: np.random.Generator, count: int) -> list[tuple[str, str, str]]:
    """``count`` distinct (shape, colour, size) triples."""
    combos = [(s, c, z) for s in SHAPES for c in COLOURS for z in SIZES]
    order = rng.permutation(len(combos))[:count]
    return [combos[i] for i in order]


def sample_scene(
    rng: np.random.Generator, size: int = 128, num_frames: int = 24, force: tuple[str, ...] = ()
) -> SceneSpec:
    """Sample a scene with 2-6 objects and planted difficulties (see the module docstring).

    ``force`` names difficulties planted whatever the draw (the generator state advances exactly as without it,
    so ``force=()`` gives the scenes of the written splits).
    """
    unknown = sorted(set(force) - set(DIFFICULTIES))
    if unknown:
        raise ValueError(f"unknown difficulties {unknown}; known: {list(DIFFICULTIES)}")
    plant = [d for d in DIFFICULTIES if rng.random() < PLANT_PROBABILITY[d] or d in force]
    n_objects = int(rng.integers(2, 7))
    group_sizes: list[int] = []  # objects sharing one appearance
    if "distractor" in plant:
        group_sizes.append(2)
    if "multi" in plant:
        group_sizes.append(int(rng.integers(2, 4)))
    need = sum(group_sizes)
    if need > 6:
        plant.remove("multi")
        group_sizes = group_sizes[:1]
        need = sum(group_sizes)
    n_objects = max(n_objects, need + (1 if need < 6 else 0))
    n_groups = len(group_sizes) + (n_objects - need)
    looks = _appearances(rng, n_groups)

    objects: list[ObjectSpec] = []
    planted: dict[str, list[int]] = {}
    look_iter = iter(looks)
    if "distractor" in plant:
        look = next(look_iter)
        if rng.random() < 0.5:  # differ by motion
            m1, m2 = rng.choice(_BACKGROUND_MOTIONS, size=2, replace=False)
            objects.append(_new_object(rng, look, str(m1), size, num_frames, objects))
            objects.append(_new_object(rng, look, str(m2), size, num_frames, objects))
        else:  # differ by position: both static, on opposite sides
            r_max = SIZES[look[2]][1] * size / 128.0 + 2.0
            y1, y2 = rng.uniform(r_max, size - r_max, size=2)
            x1 = rng.uniform(r_max, 0.32 * size)
            x2 = rng.uniform(0.68 * size, size - r_max)
            if rng.random() < 0.5:
                x1, x2 = x2, x1
            objects.append(_new_object(rng, look, "static", size, num_frames, objects, start=(x1, y1)))
            objects.append(_new_object(rng, look, "static", size, num_frames, objects, start=(x2, y2)))
        planted["distractor"] = [0, 1]
    if "multi" in plant:
        look = next(look_iter)
        first = len(objects)
        for _ in range(group_sizes[-1]):
            objects.append(_new_object(rng, look, str(rng.choice(_BACKGROUND_MOTIONS)), size, num_frames, objects))
        planted["multi"] = list(range(first, len(objects)))
    singles = list(range(len(objects), n_objects))
    special = {}
    free = list(singles)
    rng.shuffle(free)
    for difficulty in ("fast", "reentry", "late"):
        if difficulty in plant and free:
            special[free.pop()] = difficulty
    for idx in singles:
        look = next(look_iter)
        kind = special.get(idx)
        if kind == "fast":
            obj = _new_object(rng, look, "fast", size, num_frames, objects)
        elif kind == "reentry":
            obj = _new_object(rng, look, str(rng.choice(("bounce", "fast"))), size, num_frames, objects, outside=True)
        else:
            weights = np.array([0.25, 0.25, 0.15, 0.15, 0.15, 0.05])
            obj = _new_object(rng, look, str(rng.choice(MOTIONS, p=weights)), size, num_frames, objects)
        if kind == "late":
            obj.appear = int(rng.integers(max(1, num_frames // 8), max(2, num_frames // 2) + 1))
        if kind is not None:
            planted[kind] = [idx]
        objects.append(obj)
    for z, idx in enumerate(rng.permutation(len(objects))):
        objects[int(idx)].z = z

    background = "textured" if rng.random() < 0.5 else "plain"
    camera = np.zeros((num_frames, 2), dtype=np.int64)
    if background == "textured" and rng.random() < 0.4:
        angle = rng.uniform(0, 2 * np.pi)
        speed = rng.uniform(0.3, 0.8) * size / 128.0
        t = np.arange(num_frames)[:, None]
        camera = np.rint(t * speed * np.array([np.cos(angle), np.sin(angle)])).astype(np.int64)
    occluders: list[Occluder] = []
    if "occlusion" in plant:
        victim = int(rng.integers(0, len(objects)))
        obj = objects[victim]
        t_mid = int(rng.integers(max(obj.appear, num_frames // 4), max(obj.appear + 1, 3 * num_frames // 4)))
        x_mid = obj.centres[t_mid, 0]
        speed = rng.uniform(1.5, 3.0) * size / 128.0 * (1 if rng.random() < 0.5 else -1)
        xs = x_mid + speed * (np.arange(num_frames) - t_mid)
        occluders.append(Occluder(xs=xs, width=float(rng.uniform(1.0, 1.6) * obj.radius)))
        planted["occlusion"] = [victim]
    return SceneSpec(
        size=size,
        num_frames=num_frames,
        objects=objects,
        background=background,
        background_seed=int(rng.integers(0, 2**31 - 1)),
        background_level=int(rng.integers(25, 70)),
        camera=camera,
        occluders=occluders,
        planted=planted,
    )
