"""Room geometry: layouts of walls, round and box obstacles; distances and lidar ray casts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]

#: A circle slot parked here is out of every ray's and every robot's reach.
FAR_AWAY = 1e6


@dataclass(frozen=True)
class Layout:
    """One room: axis-aligned walls [0, width] x [0, height] and convex obstacles inside."""

    width: float
    height: float
    circles: F64
    """(K, 3) rows of centre x, centre y, radius (m)."""
    boxes: F64
    """(M, 4) rows of x0, y0, x1, y1 (m), x0 < x1 and y0 < y1."""


def distance(layout: Layout, x: npt.ArrayLike, y: npt.ArrayLike, circles: F64 | None = None) -> F64:
    """Signed distance (m) from points to the nearest wall or obstacle surface; < 0 inside one.

    `circles` overrides the layout's circles (the world adds its moving obstacle that way).
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    d: F64 = np.minimum(np.minimum(x, layout.width - x), np.minimum(y, layout.height - y))
    circ = layout.circles if circles is None else circles
    if len(circ):
        dc = np.hypot(x[..., None] - circ[:, 0], y[..., None] - circ[:, 1]) - circ[:, 2]
        d = np.minimum(d, dc.min(axis=-1))
    if len(layout.boxes):
        b = layout.boxes
        dx = np.maximum(b[:, 0] - x[..., None], x[..., None] - b[:, 2])
        dy = np.maximum(b[:, 1] - y[..., None], y[..., None] - b[:, 3])
        outside = np.hypot(np.maximum(dx, 0.0), np.maximum(dy, 0.0))
        inside = np.minimum(np.maximum(dx, dy), 0.0)
        d = np.minimum(d, (outside + inside).min(axis=-1))
    return d


def raycast(
    layout: Layout,
    x: float,
    y: float,
    angles: npt.ArrayLike,
    max_range: float,
    circles: F64 | None = None,
) -> F64:
    """Distance (m) along each world-frame ray angle from (x, y) to the first surface hit.

    Exact for walls, circles and boxes; rays that hit nothing within `max_range` read
    `max_range`, as a real lidar reports its range limit.
    """
    c = np.cos(np.asarray(angles, np.float64))
    s = np.sin(np.asarray(angles, np.float64))
    # Rays are never exactly axis-parallel in practice; nudging zeros keeps the slabs finite.
    c = np.where(np.abs(c) < 1e-12, 1e-12, c)
    s = np.where(np.abs(s) < 1e-12, 1e-12, s)
    tx = np.where(c > 0, (layout.width - x) / c, -x / c)
    ty = np.where(s > 0, (layout.height - y) / s, -y / s)
    t = np.minimum(tx, ty)
    circ = layout.circles if circles is None else circles
    if len(circ):
        ox = circ[:, 0] - x
        oy = circ[:, 1] - y
        b = c[:, None] * ox + s[:, None] * oy
        cc = ox * ox + oy * oy - circ[:, 2] ** 2
        disc = b * b - cc
        hit = (disc >= 0.0) & (b > 0.0)
        th = np.where(hit, b - np.sqrt(np.maximum(disc, 0.0)), np.inf)
        # Inside a circle (cc < 0) never happens to a robot that cannot enter one; clamp anyway.
        t = np.minimum(t, np.maximum(th, 0.0).min(axis=1))
    if len(layout.boxes):
        bx = layout.boxes
        t0x = (bx[:, 0] - x) / c[:, None]
        t1x = (bx[:, 2] - x) / c[:, None]
        t0y = (bx[:, 1] - y) / s[:, None]
        t1y = (bx[:, 3] - y) / s[:, None]
        near = np.maximum(np.minimum(t0x, t1x), np.minimum(t0y, t1y))
        far = np.minimum(np.maximum(t0x, t1x), np.maximum(t0y, t1y))
        th = np.where((near <= far) & (far > 0.0), np.maximum(near, 0.0), np.inf)
        t = np.minimum(t, th.min(axis=1))
    return np.minimum(t, max_range)


def generate_layout(
    rng: np.random.Generator,
    *,
    size: tuple[float, float] = (5.5, 8.0),
    obstacles: tuple[int, int] = (5, 9),
    gap: float = 0.9,
) -> Layout:
    """A random room with isolated convex obstacles at least `gap` m from each other and walls.

    Keeping obstacles apart leaves no concave pockets, so every free point is reachable and a
    reactive controller that follows free space can always get around.
    """
    width = float(rng.uniform(*size))
    height = float(rng.uniform(*size))
    want = int(rng.integers(obstacles[0], obstacles[1] + 1))
    circles: list[tuple[float, float, float]] = []
    boxes: list[tuple[float, float, float, float]] = []
    for _ in range(want * 30):
        if len(circles) + len(boxes) >= want:
            break
        cx = float(rng.uniform(0.5, width - 0.5))
        cy = float(rng.uniform(0.5, height - 0.5))
        if rng.random() < 0.5:
            r = float(rng.uniform(0.2, 0.55))
            cand_c, cand_b = [(cx, cy, r)], []
        else:
            hw, hh = (float(v) for v in rng.uniform(0.15, 0.6, 2))
            cand_c, cand_b = [], [(cx - hw, cy - hh, cx + hw, cy + hh)]
        trial = Layout(width, height, _rows(circles + cand_c, 3), _rows(boxes + cand_b, 4))
        # The candidate must keep `gap` to the walls and to every obstacle already placed.
        if _clearance_ok(trial, Layout(width, height, _rows(circles, 3), _rows(boxes, 4)), gap):
            circles += cand_c
            boxes += cand_b
    return Layout(width, height, _rows(circles, 3), _rows(boxes, 4))


def _rows(items: Sequence[tuple[float, ...]], n: int) -> F64:
    return np.asarray(items, np.float64).reshape(-1, n)


def _clearance_ok(trial: Layout, before: Layout, gap: float) -> bool:
    """True when the one new obstacle of `trial` stays `gap` away from walls and `before`'s."""
    new = Layout(
        trial.width,
        trial.height,
        trial.circles[len(before.circles) :],
        trial.boxes[len(before.boxes) :],
    )
    # Outlines both ways: one obstacle swallowing another has its outline far from the other's.
    nx, ny = _outline(new)
    if distance(before, nx, ny).min() < gap:
        return False
    ox, oy = _outline(before)
    return len(ox) == 0 or bool(distance(new, ox, oy).min() >= gap)


def _outline(layout: Layout) -> tuple[F64, F64]:
    """Points every few centimetres along the outline of each obstacle of `layout`."""
    xs: list[F64] = []
    ys: list[F64] = []
    a = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    for cx, cy, r in layout.circles:
        xs.append(cx + r * np.cos(a))
        ys.append(cy + r * np.sin(a))
    u = np.linspace(0.0, 1.0, 16)
    for x0, y0, x1, y1 in layout.boxes:
        along_x = x0 + (x1 - x0) * u
        along_y = y0 + (y1 - y0) * u
        xs.append(np.concatenate([along_x, along_x, np.full(16, x0), np.full(16, x1)]))
        ys.append(np.concatenate([np.full(16, y0), np.full(16, y1), along_y, along_y]))
    if not xs:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(xs), np.concatenate(ys)


def sample_free_point(
    rng: np.random.Generator, layout: Layout, clearance: float, tries: int = 500
) -> tuple[float, float]:
    """A uniformly drawn point at least `clearance` m from every surface."""
    for _ in range(tries):
        x = float(rng.uniform(0.0, layout.width))
        y = float(rng.uniform(0.0, layout.height))
        if float(distance(layout, np.array(x), np.array(y))) >= clearance:
            return x, y
    raise RuntimeError("room too crowded to place a point")  # layouts are built to avoid this


def segment_clearance(layout: Layout, a: tuple[float, float], b: tuple[float, float]) -> float:
    """Smallest distance to any surface along the straight segment a-b (sampled every 2 cm)."""
    n = max(2, int(np.hypot(b[0] - a[0], b[1] - a[1]) / 0.02))
    u = np.linspace(0.0, 1.0, n)
    return float(distance(layout, a[0] + (b[0] - a[0]) * u, a[1] + (b[1] - a[1]) * u).min())
