"""synthscapes: procedural landscapes rendered from their own label maps.

A built-in dataset for the quick start, the tests and quality measurement, deterministic for a
seed and fast (a few milliseconds per 128 x 128 pair on one core; ``scripts/bench_synthscapes.py``).

Label maps: a horizon with a mountain ridge above it, a lake touching the horizon with a sandy
shore, a perspective road, clouds, buildings and trees (the last two are instances: countable
things get their own ids in the instance map).

Photos: every class has its own colour and texture statistics; a per-image *style* (time of day,
season, haze) changes all colours consistently, so the multimodal / VAE path has something to
learn; and some effects reach across regions, so a per-pixel colour lookup cannot reproduce the
photo: water reflects what stands above the horizon, haze thickens toward the horizon, windows
light up at dusk and the sun's glow colours the sky around it.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
from PIL import Image

from spade_tf.fileio import atomic_path

CLASS_NAMES = ("sky", "cloud", "mountain", "grass", "tree", "water", "building", "road", "sand")
SKY, CLOUD, MOUNTAIN, GRASS, TREE, WATER, BUILDING, ROAD, SAND = range(len(CLASS_NAMES))
NUM_CLASSES = len(CLASS_NAMES)
# Preview colours (label maps), not photo colours.
PALETTE = ((120, 180, 250), (235, 235, 235), (130, 105, 85), (70, 170, 60), (25, 95, 35),
           (35, 80, 200), (200, 80, 60), (95, 95, 95), (230, 210, 140))
SPLIT_IDS = {"train": 0, "val": 1}


def _noise(rng, h, w, cells_y, cells_x, octaves=2):
    """Smooth value noise in about [-1, 1]: random grids upsampled bilinearly (PIL, in C)."""
    out = np.zeros((h, w), np.float32)
    amp, total = 1.0, 0.0
    for _ in range(octaves):
        grid = rng.standard_normal((max(2, cells_y), max(2, cells_x))).astype(np.float32)
        out += amp * np.asarray(Image.fromarray(grid, "F").resize((w, h), Image.BILINEAR))
        total += amp
        amp *= 0.5
        cells_y, cells_x = cells_y * 2, cells_x * 2
    return out / total


def _lerp(a, b, t):
    return np.asarray(a, np.float32) + (np.asarray(b, np.float32) - np.asarray(a, np.float32)) * t


def _style(rng):
    tod = float(rng.uniform(0, 1))  # 0 noon .. 0.55 sunset .. 1 dusk
    if tod < 0.55:
        t = tod / 0.55
        light = _lerp((1.0, 1.0, 1.0), (1.08, 0.78, 0.58), t)
        sky_top = _lerp((55, 115, 215), (75, 70, 150), t)
        sky_hor = _lerp((175, 210, 245), (250, 160, 90), t)
    else:
        t = (tod - 0.55) / 0.45
        light = _lerp((1.08, 0.78, 0.58), (0.42, 0.46, 0.7), t)
        sky_top = _lerp((75, 70, 150), (12, 16, 45), t)
        sky_hor = _lerp((250, 160, 90), (75, 60, 95), t)
    season = float(rng.uniform(0, 1))  # 0 spring green .. 1 autumn yellow-brown
    return {
        "tod": tod, "light": light, "sky_top": sky_top, "sky_hor": sky_hor,
        "grass": _lerp((70, 150, 55), (165, 140, 60), season),
        "tree": _lerp((30, 95, 35), (150, 80, 30), season ** 1.5),
        "haze": float(rng.uniform(0.0, 0.6)),
        "water": _lerp((30, 70, 130), (20, 60, 90), float(rng.uniform(0, 1))),
        "mountain": _lerp((115, 100, 90), (95, 105, 125), float(rng.uniform(0, 1))),
        "sand": _lerp((225, 205, 150), (200, 170, 115), float(rng.uniform(0, 1))),
        "desert": bool(rng.random() < 0.15),
    }


def _layout(rng, h, w, noise):
    """Label map, instance map and geometry of one scene."""
    ys = (np.arange(h, dtype=np.float32)[:, None] + 0.5) / h
    xs = (np.arange(w, dtype=np.float32)[None, :] + 0.5) / w
    horizon = float(rng.uniform(0.42, 0.62))
    # Ridge: a sum of a few random sines; sometimes flat land.
    ridge = np.full((1, w), horizon, np.float32)
    if rng.random() < 0.85:
        height = float(rng.uniform(0.08, 0.3))
        prof = np.zeros((1, w), np.float32)
        for k in range(1, 5):
            prof += rng.uniform(0.3, 1.0) / k * np.sin(2 * np.pi * (k * rng.uniform(0.7, 1.6) * xs
                                                                    + rng.uniform(0, 1)))
        prof = (prof - prof.min()) / max(float(np.ptp(prof)), 1e-6)
        ridge = horizon - height * (0.25 + 0.75 * prof)
    label = np.where(ys < ridge, SKY, MOUNTAIN).astype(np.uint8)
    label = np.where(ys >= horizon, GRASS, label).astype(np.uint8)

    water_bottom = np.full((1, w), horizon, np.float32)
    if rng.random() < 0.75:  # a lake touching the horizon, with a sandy shore
        x0, x1 = sorted(rng.uniform(-0.2, 1.2, size=2))
        x1 = max(x1, x0 + 0.35)
        depth = rng.uniform(0.08, 0.25) * (1 + 0.3 * _noise(rng, 1, w, 1, 4, 1))
        inside = (xs > x0) & (xs < x1)
        edge = np.clip(np.minimum(xs - x0, x1 - xs) / 0.12, 0, 1)
        water_bottom = np.where(inside, horizon + depth * np.sqrt(edge), horizon)
        water = (ys >= horizon) & (ys < water_bottom)
        shore = (ys >= water_bottom) & (ys < water_bottom + 0.035) & inside
        label[shore] = SAND
        label[water] = WATER
    if rng.random() < 0.6:  # a road from the bottom edge to a vanishing point on the horizon
        vx, bx, half = rng.uniform(0.2, 0.8), rng.uniform(0.1, 0.9), rng.uniform(0.08, 0.2)
        t = np.clip((ys - horizon) / (1 - horizon), 0, 1)
        centre = vx + (bx - vx) * t
        road = (ys > horizon) & (np.abs(xs - centre) < half * t) & (label != WATER)
        label[road] = ROAD
    else:
        vx = bx = half = None
    instance = np.zeros((h, w), np.int32)
    next_id = 1
    def box(x0, x1, y0, y1):
        """Row and column slices of the pixels whose centres may lie in [x0, x1] x [y0, y1]."""
        r = slice(max(0, int(y0 * h) - 1), min(h, int(y1 * h) + 2))
        c = slice(max(0, int(x0 * w) - 1), min(w, int(x1 * w) + 2))
        return r, c

    for _ in range(int(rng.integers(0, 5))):  # clouds (stuff): soft-edged ellipses in the sky
        cx, cy = rng.uniform(0, 1), rng.uniform(0.03, horizon * 0.6)
        rx, ry = rng.uniform(0.06, 0.2), rng.uniform(0.02, 0.06)
        r, c = box(cx - 1.3 * rx, cx + 1.3 * rx, cy - 1.3 * ry, cy + 1.3 * ry)
        d = ((xs[:, c] - cx) / rx) ** 2 + ((ys[r] - cy) / ry) ** 2
        sub = label[r, c]
        sub[(d < 1 + 0.35 * noise[0][r, c]) & (sub == SKY)] = CLOUD
    for _ in range(int(rng.integers(0, 5))):  # buildings standing on the ground near the horizon
        bw, bh = rng.uniform(0.05, 0.16), rng.uniform(0.08, 0.32)
        bx0 = rng.uniform(0, 1 - bw)
        base = horizon + rng.uniform(0.005, 0.05)
        r, c = box(bx0, bx0 + bw, base - bh, base)
        region = ((xs[:, c] >= bx0) & (xs[:, c] < bx0 + bw) & (ys[r] >= base - bh) & (ys[r] < base))
        base_row = min(int(base * h), h - 1)
        cols = slice(int(bx0 * w), max(int((bx0 + bw) * w), int(bx0 * w) + 1))
        if np.any(label[base_row, cols] == WATER) or not region.any():
            continue
        label[r, c][region] = BUILDING
        instance[r, c][region] = next_id
        next_id += 1
    trees = [(rng.uniform(0, 1), rng.uniform(horizon + 0.01, 0.97), rng.uniform(0.025, 0.07))
             for _ in range(int(rng.integers(0, 7)))]
    for tx, base, r in sorted(trees, key=lambda t: t[1]):  # far (higher) trees first
        r = r * (0.5 + (base - horizon) / (1 - horizon))  # nearer is bigger
        by = min(int(base * h), h - 1)
        bxp = min(int(tx * w), w - 1)
        if label[by, bxp] not in (GRASS, SAND):
            continue
        rs, cs = box(tx - r, tx + r, base - 2.9 * r, base)
        y, x = ys[rs], xs[:, cs]
        canopy = ((x - tx) / r) ** 2 + ((y - (base - 1.6 * r)) / (1.25 * r)) ** 2 < 1
        trunk = (np.abs(x - tx) < 0.18 * r) & (y >= base - 0.8 * r) & (y < base)
        region = canopy | trunk
        label[rs, cs][region] = TREE
        instance[rs, cs][region] = next_id
        next_id += 1
    geometry = {"horizon": horizon, "ridge": ridge, "water_bottom": water_bottom, "ys": ys,
                "xs": xs, "road": (vx, bx, half)}
    return label, instance, geometry


_WORK = threading.local()


def _work_buffers(h, w):
    """Three (3, H, W) float32 work buffers per thread, reused across scenes.

    Fresh arrays of this size come from mmap or a trimmed heap, so each allocation page-faults;
    reusing the buffers made rendering about 1.8x faster here.
    """
    bufs = getattr(_WORK, "bufs", None)
    if bufs is None or bufs[0].shape != (3, h, w):
        bufs = tuple(np.empty((3, h, w), np.float32) for _ in range(3))
        _WORK.bufs = bufs
    return bufs


def _blend(img, target, weight, tmp):
    """img += (target - img) * weight, in place (target and weight broadcast)."""
    np.subtract(target, img, out=tmp)
    tmp *= weight
    img += tmp


def _paint(rng, label, instance, geo, style, noise):
    # Speed notes (a 128 px pair takes a few ms on one core): the image is painted channel-first
    # (3, H, W), so (H, W) masks and maps broadcast over the leading axis (channel-last
    # broadcasting runs numpy's inner loops over 3 elements); per-class colours and texture
    # amplitudes are table lookups; regions are blended with float masks (boolean-masked writes
    # are several times slower); large temporaries are avoided (see _work_buffers).
    h, w = label.shape
    ys, xs, horizon = geo["ys"], geo["xs"], geo["horizon"]  # (H, 1), (1, W)
    coarse, mid, fine = noise
    f32 = np.float32
    img, tmp, scratch = _work_buffers(h, w)  # img is copied out by the final astype

    def rgb(c):
        return np.asarray(c, f32).reshape(3, 1, 1)

    def mask(c):
        return (label == c).astype(f32)

    light = rgb(style["light"])
    base = np.zeros((NUM_CLASSES, 3), f32)
    base[CLOUD] = _lerp((245, 245, 250), style["sky_hor"], 0.35)
    base[MOUNTAIN] = style["mountain"]
    base[GRASS] = style["sand"] if style["desert"] else style["grass"]
    base[TREE] = style["tree"]
    base[WATER] = style["water"]
    base[ROAD] = (95, 95, 95)
    base[SAND] = style["sand"]
    #                      sky  cloud  mount grass tree  water build road  sand
    amp = np.array([[0.0, 0.20, 0.00, 0.00, 0.00, 0.0, 0.0, 0.00, 0.00],   # coarse
                    [0.0, 0.00, 0.25, 0.00, 0.30, 0.0, 0.0, 0.00, 0.00],   # medium
                    [0.0, 0.00, 0.00, 0.35, 0.00, 0.0, 0.0, 0.20, 0.15]],  # fine
                   f32)
    tex = (1.0 + np.take(amp[0], label) * coarse + np.take(amp[1], label) * mid
           + np.take(amp[2], label) * fine)
    np.take(np.ascontiguousarray(base.T), label, axis=1, out=img)
    img *= tex
    img *= light  # the sky gets lit too, but is replaced below
    img += mask(CLOUD) * (20 * (0.5 - ys))  # clouds lit from above

    # Sky: vertical gradient, plus the sun's glow (strongest at sunset) around the sun.
    t = np.clip(ys / max(horizon, 1e-3), 0, 1) ** 0.8
    sun_x = rng.uniform(0.1, 0.9)
    sun_y = horizon - 0.05 - 0.35 * (1 - min(style["tod"] / 0.55, 1))
    glow = max(0.0, 90 * (1 - abs(style["tod"] - 0.55) / 0.55))
    np.multiply(glow * np.exp(-((xs - sun_x) ** 2 + (ys - sun_y) ** 2) / 0.02),
                rgb((1.0, 0.75, 0.4)), out=scratch)
    scratch += rgb(style["sky_top"]) + (rgb(style["sky_hor"]) - rgb(style["sky_top"])) * t
    sky_m = mask(SKY)
    _blend(img, scratch, sky_m, tmp)
    # Snow caps on high ridges.
    snow = mask(MOUNTAIN) * ((ys < geo["ridge"] + 0.04) & (geo["ridge"] < horizon - 0.17))
    _blend(img, rgb((240, 240, 245)), 0.7 * snow, tmp)
    # Road: a dashed centre line.
    vx, bx, _ = geo["road"]
    if vx is not None:
        tt = np.clip((ys - horizon) / (1 - horizon), 0, 1)
        centre = vx + (bx - vx) * tt
        dash = mask(ROAD) * ((np.abs(xs - centre) < 0.012 * tt + 0.002)
                             & (np.sin(40 * np.log(tt + 0.05)) > 0))
        _blend(img, rgb((235, 225, 180)) * light, dash, tmp)
    # Buildings: one wall colour each (a table by instance id), windows that glow at dusk.
    n_ids = int(instance.max()) + 1
    building = mask(BUILDING)
    if building.any():
        walls = np.array(((175, 70, 55), (150, 150, 155), (205, 190, 160), (110, 100, 95)), f32)
        wall_of = np.ascontiguousarray(walls[rng.integers(0, len(walls), size=n_ids)].T)
        dusk = min(1.0, max(0.0, (style["tod"] - 0.5) * 2.5))
        window_color = (rgb((255, 220, 120)) * dusk
                        + rgb(_lerp(style["sky_hor"], (60, 70, 90), 0.6)) * light * (1 - dusk))
        windows = ((np.sin(xs * w * 0.9) > 0.3) & (np.sin(ys * h * 0.8) > 0.2)).astype(f32)
        np.take(wall_of, instance, axis=1, out=scratch)
        scratch *= light
        _blend(scratch, window_color, windows, tmp)
        _blend(img, scratch, building, tmp)
    # Trees: a tint per tree, lit from the top of the tree down.
    tree = label == TREE
    if tree.any():
        r_idx, _ = np.nonzero(tree)  # row-major, so rows ascend within each tree
        ids = instance[tree]
        order = np.argsort(ids, kind="stable")
        uniq, first = np.unique(ids[order], return_index=True)
        last = np.r_[first[1:], len(ids)] - 1
        top = np.full(n_ids, h, np.int64)
        bottom = np.zeros(n_ids, np.int64)
        top[uniq] = r_idx[order][first]
        bottom[uniq] = r_idx[order][last] + 1
        tint = rng.uniform(0.8, 1.2, size=n_ids).astype(f32)
        t_top, t_bottom = np.take(top, instance), np.take(bottom, instance)
        shade = np.take(tint, instance) * (1.15 - 0.5 * (np.arange(h)[:, None] - t_top)
                                           / np.maximum(t_bottom - t_top, 1))
        img *= (1.0 + (shade - 1.0) * tree).astype(f32)
    # Water reflects the rows mirrored about the horizon, darkened, with ripples.
    water = mask(WATER)
    if water.any():
        mirror = np.clip(2 * int(horizon * h) - np.arange(h), 0, h - 1)
        np.take(img, mirror, axis=1, out=scratch)
        scratch *= 0.55
        scratch += rgb(style["water"]) * light * 0.45
        scratch *= 0.85 + 0.15 * np.sin(ys * h * 1.7 + 3 * coarse)  # ripples
        _blend(img, scratch, water, tmp)
    # Haze: thickest at the horizon, in the horizon colour of the sky.
    haze = (style["haze"] * np.exp(-np.abs(ys - horizon) / 0.09)) * (1.0 - sky_m)
    _blend(img, rgb(style["sky_hor"]), haze, tmp)
    np.clip(img, 0, 255, out=img)
    return img.transpose(1, 2, 0).astype(np.uint8)


def render(seed, height: int, width: int | None = None):
    """One scene: (photo uint8 [H, W, 3], label uint8 [H, W], instance int32 [H, W]).

    ``seed`` is anything ``numpy.random.default_rng`` takes (an int or a sequence of ints).
    """
    width = width or height
    rng = np.random.default_rng(seed)
    style = _style(rng)
    # Three smooth noise fields (coarse, medium, fine) shared by every class: regions are
    # disjoint, so sharing them costs no variety and saves most of the noise generation.
    noise = (_noise(rng, height, width, 4, 6, 1), _noise(rng, height, width, 12, 16, 1),
             _noise(rng, height, width, 32, 32, 1))
    label, instance, geo = _layout(rng, height, width, noise)
    photo = _paint(rng, label, instance, geo, style, noise)
    return photo, label, instance


def example_seed(split: str, index: int, dataset_seed: int = 0) -> list[int]:
    return [int(dataset_seed), SPLIT_IDS[split], int(index)]


def write_dataset(out_dir: str | os.PathLike, split: str, count: int, height: int,
                  width: int | None = None, dataset_seed: int = 0, progress: bool = True) -> Path:
    """Writes ``count`` pairs in the ``custom`` layout: ``{split}_img``, ``{split}_label``,
    ``{split}_inst`` (PNG), each file written to a temporary name and renamed."""
    from spade_tf.progress import progress as progress_bar

    out = Path(out_dir)
    dirs = {k: out / f"{split}_{k}" for k in ("img", "label", "inst")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    for i in progress_bar(range(count), desc=f"synthscapes {split}", enabled=progress, unit="pair"):
        photo, label, instance = render(example_seed(split, i, dataset_seed), height, width)
        inst_img = Image.fromarray(instance.astype(np.uint16 if instance.max() > 255 else np.uint8))
        for key, img in (("img", Image.fromarray(photo)), ("label", Image.fromarray(label)),
                         ("inst", inst_img)):
            with atomic_path(dirs[key] / f"{i:06d}.png") as tmp:
                img.save(tmp, format="PNG")
    return out
