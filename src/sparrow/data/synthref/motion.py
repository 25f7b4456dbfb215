"""Trajectories of SynthRef objects and the measurements that motion expressions are judged on.

A trajectory is an array of object centres ``[T, 2]`` (x, y) in *world* pixels (the camera may pan over the
world; see :mod:`sparrow.data.synthref.scene`). All speeds below are in pixels per frame at 128 px and scale
with the frame size.

Motions (``MOTIONS``):

- ``static``: never moves;
- ``linear``: constant velocity along one of the four directions (1-2 px/frame);
- ``bounce``: diagonal motion reflected by walls (1.8-2.5 px/frame);
- ``zigzag``: moves along one direction (1-1.3 px/frame) while swinging 10-14 px across it every 12 frames
  (triangle wave), ~2-2.7 px/frame in all;
- ``stop_and_go``: moves, stops for at least 4 frames, moves on (2-3 px/frame while moving);
- ``fast``: like ``bounce`` but 4-6 px/frame.

With ``outside=True``, ``bounce`` and ``fast`` reflect on walls beyond the frame border, so the object leaves
the frame and comes back (the ``reentry`` difficulty).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MOTIONS = ("static", "linear", "bounce", "zigzag", "stop_and_go", "fast")
DIRECTIONS = ("left", "right", "up", "down")
_UNIT = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}

STILL_STEP = 0.05  # a step shorter than this (px) counts as standing still


def _reflect(start: np.ndarray, velocity: np.ndarray, lo: np.ndarray, hi: np.ndarray, num_frames: int) -> np.ndarray:
    """Positions ``[T, 2]`` of a point moving at ``velocity`` and reflected by the box ``[lo, hi]`` (vectorised)."""
    t = np.arange(num_frames, dtype=np.float64)[:, None]
    span = hi - lo
    raw = (start - lo) + velocity * t  # unfolded coordinate
    period = 2.0 * span
    folded = np.mod(raw, period)
    folded = np.where(folded > span, period - folded, folded)
    return lo + folded


def make_trajectory(
    rng: np.random.Generator,
    motion: str,
    radius: float,
    size: int,
    num_frames: int,
    *,
    outside: bool = False,
    start: tuple[float, float] | None = None,
) -> tuple[np.ndarray, str | None]:
    """Sample a trajectory of ``motion`` for an object of ``radius`` px in a ``size`` x ``size`` frame.

    Returns ``(centres [T, 2] float64, direction or None)``; ``start`` fixes the first centre of static objects
    (used to place look-alikes apart). Objects start fully inside the frame.
    """
    s = size / 128.0
    margin = radius + 2.0
    lo_in, hi_in = margin, size - margin
    T = num_frames
    if motion == "static":
        if start is not None:
            pos = np.asarray(start, dtype=np.float64)
        else:
            pos = rng.uniform(lo_in, hi_in, size=2)
        return np.repeat(pos[None, :], T, axis=0), None
    if motion in ("linear", "stop_and_go", "zigzag"):
        direction = str(rng.choice(DIRECTIONS))
        unit = np.asarray(_UNIT[direction])
        axis = 0 if unit[0] != 0 else 1
        if motion == "linear":
            speed = rng.uniform(1.0, 2.0) * s
            steps = np.full(T - 1, speed)
        elif motion == "stop_and_go":
            speed = rng.uniform(2.0, 3.0) * s
            stop_len = int(rng.integers(max(4, T // 5), max(5, T // 3) + 1))
            stop_at = int(rng.integers(max(2, T // 5), max(3, T - 1 - stop_len - 2) + 1))
            steps = np.full(T - 1, speed)
            steps[stop_at : stop_at + stop_len] = 0.0
        else:
            speed = rng.uniform(1.0, 1.3) * s
            steps = np.full(T - 1, speed)
        travel = float(steps.sum())
        room = hi_in - lo_in
        if travel > room:  # long clips: slow down so the object stays inside
            steps *= room / travel
            travel = room
        along = np.concatenate([[0.0], np.cumsum(steps)])
        first = rng.uniform(lo_in, hi_in - travel) if room > travel else lo_in
        if unit[axis] < 0:
            first = size - first  # mirror so the object starts on the side it moves away from
        centres = np.zeros((T, 2))
        centres[:, axis] = first + unit[axis] * along
        amp = 0.0
        if motion == "zigzag":
            # swing of 10-14 px every 12 frames: ~2 px/frame across, so a zig-zag never reads as "fast"
            amp = rng.uniform(5.0, 7.0) * s
            period = 12.0
            phase = np.arange(T) / period
            wave = 4.0 * np.abs(phase - np.floor(phase + 0.5)) - 1.0  # triangle wave in [-1, 1]
        cross = rng.uniform(lo_in + amp, hi_in - amp)
        centres[:, 1 - axis] = cross + (amp * wave if motion == "zigzag" else 0.0)
        return centres, direction
    if motion in ("bounce", "fast"):
        speed = rng.uniform(1.8, 2.5) * s if motion == "bounce" else rng.uniform(4.0, 6.0) * s
        if outside:  # near an axis, towards a border, with walls beyond it: leaves the frame and comes back
            # fast enough to leave (2r), stay out (~4 frames) and come back (2r) within ~80% of the clip
            needed = (4.0 * radius + 4.0 * s) / max(0.8 * T - 6.0, 2.0)
            speed = min(max(speed, needed), 8.0 * s)
            direction = str(rng.choice(DIRECTIONS))
            unit = np.asarray(_UNIT[direction])
            angle = rng.uniform(-0.25, 0.25)
            c, sn = np.cos(angle), np.sin(angle)
            velocity = speed * np.array([c * unit[0] - sn * unit[1], sn * unit[0] + c * unit[1]])
            beyond = radius + 2.0 * speed + 2.0
            lo = np.array([lo_in, lo_in])
            hi = np.array([hi_in, hi_in])
            axis = 0 if unit[0] != 0 else 1
            if unit[axis] < 0:
                lo[axis] = -beyond
            else:
                hi[axis] = size + beyond
            exit_after = rng.uniform(2.0, max(3.0, T / 4.0))
            start_pos = rng.uniform(lo_in, hi_in, size=2)
            start_pos[axis] = (size + radius - exit_after * speed) if unit[axis] > 0 else (exit_after * speed - radius)
            start_pos[axis] = float(np.clip(start_pos[axis], lo_in, hi_in))
            return _reflect(start_pos, velocity, lo, hi, T), direction
        angle = rng.uniform(0.3, np.pi / 2 - 0.3) + (np.pi / 2) * int(rng.integers(0, 4))
        velocity = speed * np.array([np.cos(angle), np.sin(angle)])
        lo = np.array([lo_in, lo_in])
        hi = np.array([hi_in, hi_in])
        start_pos = rng.uniform(lo_in, hi_in, size=2)
        return _reflect(start_pos, velocity, lo, hi, T), None
    raise ValueError(f"unknown motion {motion!r}; expected one of {MOTIONS}")


@dataclass(frozen=True)
class MotionMeasure:
    """What the motion predicates look at, measured on the frames where the object exists.

    ``net``: displacement (dx, dy) first -> last; ``path``: total path length; ``speed``: mean step length;
    ``longest_still``: longest run of still steps; ``reversals``: direction reversals per axis (x, y).
    """

    net: tuple[float, float]
    path: float
    speed: float
    longest_still: int
    reversals: tuple[int, int]


def measure(centres: np.ndarray) -> MotionMeasure:
    """Measure a trajectory ``[T, 2]`` (world pixels) of the frames where the object exists."""
    if len(centres) < 2:
        return MotionMeasure((0.0, 0.0), 0.0, 0.0, 0, (0, 0))
    steps = np.diff(centres, axis=0)
    lengths = np.hypot(steps[:, 0], steps[:, 1])
    still = lengths < STILL_STEP
    longest, run = 0, 0
    for flag in still:
        run = run + 1 if flag else 0
        longest = max(longest, run)
    reversals = []
    for axis in (0, 1):
        signs = np.sign(np.where(np.abs(steps[:, axis]) < STILL_STEP, 0.0, steps[:, axis]))
        signs = signs[signs != 0]
        reversals.append(int(np.count_nonzero(signs[1:] != signs[:-1])))
    net = centres[-1] - centres[0]
    return MotionMeasure(
        net=(float(net[0]), float(net[1])),
        path=float(lengths.sum()),
        speed=float(lengths.mean()),
        longest_still=int(longest),
        reversals=(reversals[0], reversals[1]),
    )
