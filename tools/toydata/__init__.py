"""Synthetic stand-in for the homework data, written in exactly the real directory layout.

The real data cannot be downloaded here, so tests and the demo run on images this module generates.
Problem 1 (self-supervised pre-training, then classification) mimics::

    OUT/p1_data/mini/train/00000.jpg, ...        unlabeled RGB 84x84 (real: 38,400 images, 64 classes x 600)
    OUT/p1_data/office/train/{label}_{k}.jpg     labeled, sizes vary (real: 3,951 images, 65 classes)
    OUT/p1_data/office/val/{label}_{k}.jpg       (real: 406 images)
    OUT/p1_data/office/train.csv, val.csv        header ``id,filename,label``

Every p1 image shows one object of a *latent class*; a class is a combination of shape, hue and texture
(no single cue separates all classes) under heavy nuisance variation (position, scale, rotation,
background, lighting, clutter). The same latent classes generate the unlabeled "mini" images and the
labeled "office" images (label == latent class), so features learned on mini transfer to office; the
office domain has plain, light, desk-like backgrounds and varying non-square sizes. Mini files are
named by a zero-padded index and their classes are shuffled, so a name reveals nothing about the class.

Problem 2 (land-cover segmentation) mimics::

    OUT/p2_data/train/0000_sat.jpg, 0000_mask.png, ...       (real: 2000 pairs, 512x512)
    OUT/p2_data/validation/0000_sat.jpg, 0000_mask.png, ...  (real: 257 pairs)

Each tile is a warped Voronoi partition whose cells get land-cover classes; the satellite image
renders every class with its own mean colour *and* texture, so a small network can learn it while a
pure colour lookup cannot solve it completely. Generation is deterministic: every image draws from its
own ``numpy.random.default_rng`` keyed by (seed, part, split, index), so the same seed gives
byte-identical files and images are independent of each other. p2 tiles and office images do not depend
on how many are generated either; a mini image's class does, as it comes from one seeded shuffle of all
mini images.

Usage::

    python -m tools.toydata --out DIR [--parts p1 p2] [--seed S] [--p1-kind objects|shapes]
        [--p1-classes K] [--p1-mini-per-class N] [--p1-office-per-class N] [--p1-office-val-per-class N]
        [--p1-mini-size PX] [--size PX] [--num N] [--num-val M]

``--p1-kind shapes`` swaps the latent classes for the DINO sanity set's upright light shapes on a dark ground
(``p1_sanity_image``) in both mini and office, the kind on which a short CPU run of DINO learns.

DIR must be new, empty, or a folder this module made: it refuses anything else (a file, or a non-empty folder
such as the course's data) with a one-line error and touches nothing. The marker file it writes first,
``GENERATED_BY_TOYDATA.txt``, lists every file it writes; a rerun deletes those files of the parts it rewrites
and nothing else.

New parts plug in by adding a ``make_*`` function and an entry in ``PART_MAKERS``.
"""
import argparse
import colorsys
import math
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image, ImageFilter

from utils.masks import NUM_CLASSES, write_mask

PathLike = Union[str, Path]

# Ids that key the per-image random streams; each part has its own id so streams never collide.
P1_PART_ID = 1
P2_PART_ID = 2
SPLIT_IDS = {"train": 0, "validation": 1}
P2_SPLITS = ("train", "validation")
JPEG_QUALITY = 90
MIN_SIZE = 16  # below this the textures (periods of several pixels) stop meaning anything

# Class priors, roughly like real land cover: agriculture and urban dominate, unknown is rare.
# Order: urban, agriculture, rangeland, forest, water, barren, unknown.
P2_CLASS_PROBS = np.array([0.22, 0.34, 0.11, 0.12, 0.09, 0.09, 0.03])

# Mean RGB per class. Rangeland, green-ish crops and urban/barren sit close on purpose, so that
# colour alone is ambiguous and texture has to disambiguate.
_URBAN_RGB = np.array([128.0, 126.0, 130.0])
_AGRI_DRY_RGB = np.array([186.0, 166.0, 96.0])  # ripe / bare fields
_AGRI_GREEN_RGB = np.array([138.0, 150.0, 82.0])  # growing crops, overlaps rangeland
_RANGE_RGB = np.array([158.0, 150.0, 106.0])
_FOREST_RGB = np.array([56.0, 86.0, 46.0])
_WATER_RGB = np.array([40.0, 64.0, 80.0])  # greenish-dark, near forest
_BARREN_RGB = np.array([196.0, 181.0, 146.0])
_UNKNOWN_RGB = np.array([12.0, 12.0, 14.0])


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cell: float) -> np.ndarray:
    """Return an (H, W) float32 field of unit-std value noise with features about ``cell`` pixels wide."""
    cell = max(float(cell), 1.0)
    gh = int(np.ceil(height / cell)) + 2
    gw = int(np.ceil(width / cell)) + 2
    grid = rng.standard_normal((gh, gw)).astype(np.float32)
    # A random sub-cell phase so the lattice of the coarse grid does not line up across fields.
    ys = (np.arange(height, dtype=np.float32) + rng.uniform(0, cell)) / cell
    xs = (np.arange(width, dtype=np.float32) + rng.uniform(0, cell)) / cell
    y0 = np.floor(ys).astype(np.int64)
    x0 = np.floor(xs).astype(np.int64)
    fy = ys - y0
    fx = xs - x0
    # Smoothstep weights avoid the visible creases of plain bilinear interpolation.
    fy = (fy * fy * (3 - 2 * fy))[:, None]
    fx = (fx * fx * (3 - 2 * fx))[None, :]
    g00 = grid[y0][:, x0]
    g01 = grid[y0][:, x0 + 1]
    g10 = grid[y0 + 1][:, x0]
    g11 = grid[y0 + 1][:, x0 + 1]
    out = (g00 * (1 - fx) + g01 * fx) * (1 - fy) + (g10 * (1 - fx) + g11 * fx) * fy
    return (out - out.mean()) / (out.std() + 1e-6)


def _p2_cells(rng: np.random.Generator, size: int,
              force_class: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Return (cell id map (H, W), class per cell): warped Voronoi cells, each with a land-cover class."""
    num_cells = int(rng.integers(3, 8))
    seeds = rng.uniform(0, size, (num_cells, 2)).astype(np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    # Coarse warp bends the straight Voronoi edges; a finer one makes them ragged like real borders.
    py = yy + 0.12 * size * _smooth_noise(rng, size, size, size / 3) \
        + 0.025 * size * _smooth_noise(rng, size, size, size / 12)
    px = xx + 0.12 * size * _smooth_noise(rng, size, size, size / 3) \
        + 0.025 * size * _smooth_noise(rng, size, size, size / 12)
    d2 = (py[..., None] - seeds[:, 0]) ** 2 + (px[..., None] - seeds[:, 1]) ** 2
    cells = np.argmin(d2, axis=-1)
    cell_classes = rng.choice(NUM_CLASSES, size=num_cells, p=P2_CLASS_PROBS)
    if force_class is not None:
        # The largest cell is certainly non-empty, so the forced class is certainly present.
        counts = np.bincount(cells.ravel(), minlength=num_cells)
        cell_classes[int(np.argmax(counts))] = force_class
    return cells, cell_classes.astype(np.uint8)


def _render_cell(rng: np.random.Generator, cls: int, yy: np.ndarray, xx: np.ndarray, fine: np.ndarray,
                 med: np.ndarray, low: np.ndarray, scale: float) -> np.ndarray:
    """Return (N, 3) float colours for the N pixels of one cell of class ``cls``."""
    # Per-cell tint so two fields of one class are not identical.
    tint = rng.normal(0.0, 10.0, 3)
    if cls == 0:  # urban: grey rooftops on a rotated block grid, darker roads between blocks
        period = rng.uniform(5.0, 9.0) * scale
        theta = rng.uniform(0, np.pi / 2)
        u = (xx * np.cos(theta) + yy * np.sin(theta)) / period + rng.uniform(0, 1)
        v = (-xx * np.sin(theta) + yy * np.cos(theta)) / period + rng.uniform(0, 1)
        roof = rng.normal(0.0, 24.0, (16, 16))
        bu = np.floor(u).astype(np.int64) % 16
        bv = np.floor(v).astype(np.int64) % 16
        road = ((u - np.floor(u)) < 0.2) | ((v - np.floor(v)) < 0.2)
        lum = np.where(road, -38.0, roof[bu, bv]) + 6.0 * fine
        base = _URBAN_RGB
    elif cls == 1:  # agriculture: parallel furrows of a random orientation and period
        period = rng.uniform(3.5, 7.0) * scale
        theta = rng.uniform(0, np.pi)
        u = xx * np.cos(theta) + yy * np.sin(theta)
        lum = 16.0 * np.sin(2 * np.pi * u / period + rng.uniform(0, 2 * np.pi)) + 5.0 * med
        base = _AGRI_DRY_RGB + rng.uniform(0, 1) * (_AGRI_GREEN_RGB - _AGRI_DRY_RGB)
    elif cls == 2:  # rangeland: grass with scattered dark shrubs (about 1 pixel in 12)
        lum = 10.0 * med + 8.0 * low + 4.0 * fine - 36.0 * (fine > 1.4)
        base = _RANGE_RGB
    elif cls == 3:  # forest: dark, high-frequency canopy noise
        lum = 18.0 * fine + 10.0 * med
        base = _FOREST_RGB
    elif cls == 4:  # water: dark and smooth, only a faint large-scale gradient
        lum = 6.0 * low + 1.5 * fine
        base = _WATER_RGB
    elif cls == 5:  # barren: light sand with gentle dunes
        lum = 12.0 * low + 5.0 * med + 3.0 * fine
        base = _BARREN_RGB
    else:  # unknown: near-black no-data
        lum = 3.0 * fine
        base = _UNKNOWN_RGB
        tint = tint * 0.25
    return (base + tint)[None, :] + lum[:, None]


def p2_tile(size: int, seed: int, split: str, index: int) -> Tuple[np.ndarray, np.ndarray]:
    """Return one (image (H, W, 3) uint8, classes (H, W) uint8) pair, fixed by (seed, split, index)."""
    rng = np.random.default_rng([seed, P2_PART_ID, SPLIT_IDS[split], index])
    # The first NUM_CLASSES tiles of every split each force one class, so each split has all of them.
    force = index if index < NUM_CLASSES else None
    cells, cell_classes = _p2_cells(rng, size, force_class=force)
    classes = cell_classes[cells]
    # Texture periods are in pixels of a 128 px tile; bigger tiles get proportionally bigger features.
    scale = max(1.0, size / 128.0)
    fine = rng.standard_normal((size, size)).astype(np.float32)
    med = _smooth_noise(rng, size, size, 2.5 * scale)
    low = _smooth_noise(rng, size, size, size / 2.0)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    flat = cells.ravel()
    image = np.empty((size * size, 3), dtype=np.float64)
    # Each cell gets its own texture instance (e.g. its own furrow direction), so neighbouring fields
    # of one class still look like separate fields, as in real imagery.
    for cell, cls in enumerate(cell_classes):
        idx = np.flatnonzero(flat == cell)
        if idx.size == 0:
            continue  # a seed can be warped out of the tile entirely
        image[idx] = _render_cell(rng, int(cls), yy.ravel()[idx], xx.ravel()[idx], fine.ravel()[idx],
                                  med.ravel()[idx], low.ravel()[idx], scale)
    # Whole-tile lighting: brightness gain and a slight colour cast, like different acquisitions.
    image = image * rng.uniform(0.8, 1.2) + rng.normal(0.0, 6.0, 3)
    img = Image.fromarray(np.clip(image, 0, 255).reshape(size, size, 3).astype(np.uint8))
    # A little blur softens region edges the way optics and resampling do in real imagery.
    img = img.filter(ImageFilter.GaussianBlur(radius=0.6 * scale))
    noisy = np.asarray(img, dtype=np.float32) + rng.normal(0.0, 4.0, (size, size, 3)).astype(np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8), classes


# ---------------------------------------------------------------------------------------------------
# The output folder: never one this module did not make, and a rerun deletes only what it wrote
# ---------------------------------------------------------------------------------------------------

GENERATED_MARKER = "GENERATED_BY_TOYDATA.txt"  # in the output root: lets reports say "generated data"
_MARKER_NOTE = "Generated by tools.toydata: synthetic data in the real layout, not the course's data."
_MANIFEST_HEADER = "Files written by tools.toydata, relative to this folder (a rerun deletes these and only these):"


class OutputError(ValueError):
    """The output root cannot be written: an existing file, or a non-empty folder this module did not make."""


class _Output:
    """The output root of one maker call, checked before anything is written.

    A new or empty folder becomes ours: the marker ``GENERATED_BY_TOYDATA.txt`` goes in first, and every file is
    listed in it before it is written. A folder whose marker has that list is ours too; anything else (a file, a
    non-empty folder without the marker such as the course's data, or a folder marked by an older version that
    kept no list) raises OutputError. Rewriting a part deletes only the files the list names under that part."""

    def __init__(self, out_dir: PathLike) -> None:
        self.root = Path(out_dir)
        self.marker = self.root / GENERATED_MARKER
        self.files = []  # type: List[str]
        if self.root.exists() and not self.root.is_dir():
            raise OutputError("--out {} is an existing file; give a new or empty folder".format(self.root))
        if self.root.is_dir() and any(self.root.iterdir()):
            lines = self.marker.read_text().splitlines() if self.marker.is_file() else []
            if _MANIFEST_HEADER not in lines:
                raise OutputError("{} is not empty and holds no list of files written by tools.toydata ({}): "
                                  "refusing to write into it (it may be real data); give a new or empty folder"
                                  .format(self.root, GENERATED_MARKER))
            self.files = [f for f in lines[lines.index(_MANIFEST_HEADER) + 1:] if f]
        self.root.mkdir(parents=True, exist_ok=True)
        self._save()

    def _save(self) -> None:
        self.marker.write_text("\n".join([_MARKER_NOTE, _MANIFEST_HEADER] + self.files) + "\n")

    def replace_part(self, part: str) -> Path:
        """Delete the files an earlier run listed under ROOT/PART (nothing else); return ROOT/PART."""
        keep = []
        for name in self.files:
            rel = Path(name)
            if rel.parts[:1] != (part,):
                keep.append(name)
            elif not rel.is_absolute() and ".." not in rel.parts and (self.root / rel).is_file():
                (self.root / rel).unlink()
        self.files = keep
        self._save()
        return self.root / part

    def add(self, path: Path) -> Path:
        """List ``path`` (inside the root) in the marker before the caller writes it; returns ``path``."""
        name = path.relative_to(self.root).as_posix()
        self.files.append(name)
        with open(str(self.marker), "a") as f:
            f.write(name + "\n")
        return path


def is_generated(path: PathLike) -> bool:
    """True when ``path`` lies in (or is) a folder written by this module: a marker in it or an ancestor."""
    path = Path(path).resolve()
    return any((p / GENERATED_MARKER).is_file() for p in [path] + list(path.parents))


def make_p2_data(out_dir: PathLike, size: int = 64, num_train: int = 24, num_val: int = 8,
                 seed: int = 0) -> Path:
    """Write OUT/p2_data/{train,validation}/NNNN_sat.jpg + NNNN_mask.png and return the p2_data path."""
    if size < MIN_SIZE:
        raise ValueError("size must be at least {} px, got {}".format(MIN_SIZE, size))
    if num_train < 0 or num_val < 0:
        raise ValueError("tile counts must be non-negative, got {} and {}".format(num_train, num_val))
    if seed < 0:
        raise ValueError("seed must be non-negative, got {}".format(seed))
    out = _Output(out_dir)
    root = out.replace_part("p2_data")
    for split, count in zip(P2_SPLITS, (num_train, num_val)):
        split_dir = root / split
        split_dir.mkdir(parents=True, exist_ok=True)
        for index in range(count):
            image, classes = p2_tile(size, seed, split, index)
            _save_jpeg(image, out.add(split_dir / "{:04d}_sat.jpg".format(index)))
            write_mask(out.add(split_dir / "{:04d}_mask.png".format(index)), classes)
    return root


# ---------------------------------------------------------------------------------------------------
# Problem 1: latent object classes, unlabeled "mini" images and labeled "office" images
# ---------------------------------------------------------------------------------------------------

P1_SHAPES = ("circle", "square", "triangle", "cross", "ring", "star", "crescent")
# Hue of each colour, as a fraction of the hue circle: red, yellow, green, cyan, blue, magenta.
P1_HUES = (0.0, 0.15, 0.33, 0.5, 0.64, 0.83)
P1_TEXTURES = ("solid", "striped", "dotted", "checker")
# Class c is (shape c % 7, hue c % 6, texture c % 4): unique for c < lcm(7, 6, 4) = 84, which covers
# the real 64 (mini) and 65 (office) classes, while every single cue is shared by several classes.
P1_MAX_CLASSES = 84
P1_DOMAINS = ("mini", "office")
# Random-stream ids of the p1 splits (the part id P1_PART_ID keeps them apart from p2's streams).
P1_SPLIT_IDS = {"mini/train": 0, "office/train": 1, "office/val": 2}
P1_OFFICE_SPLITS = ("train", "val")
P1_STANDIN_LABELS = "standin_mini_labels.csv"  # generated data only: labels for the stand-in SL backbone
P1_KINDS = ("objects", "shapes")  # make_p1_data(kind=...): p1_image's latent classes, or p1_sanity_image's shapes
P1_OFFICE_SIDE = (64, 160)  # office widths and heights are drawn independently from this range
CSV_HEADER = "id,filename,label"
_BICUBIC = getattr(Image, "Resampling", Image).BICUBIC  # Pillow >= 9.1 moved the constant


def p1_class_attributes(latent_class: int) -> Tuple[str, float, str]:
    """Return the (shape, hue in [0, 1), texture) that define latent class ``latent_class``."""
    if not 0 <= latent_class < P1_MAX_CLASSES:
        raise ValueError("latent class must be in 0..{}, got {}".format(P1_MAX_CLASSES - 1, latent_class))
    return (P1_SHAPES[latent_class % len(P1_SHAPES)], P1_HUES[latent_class % len(P1_HUES)],
            P1_TEXTURES[latent_class % len(P1_TEXTURES)])


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    """Return an RGB colour in 0..255 as a float32 (3, 1, 1) column that broadcasts over (3, H, W) images."""
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32).reshape(3, 1, 1) * 255.0


def _shape_score(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Return an approximate signed distance (positive inside) to ``shape`` in object units (radius 1)."""
    r = np.sqrt(u * u + v * v)
    if shape == "circle":
        return 1.0 - r
    if shape == "square":
        return 0.8 - np.maximum(np.abs(u), np.abs(v))
    if shape == "triangle":  # equilateral, circumradius 1.1, one vertex pointing along -v
        angles = [math.pi / 2 + k * 2 * math.pi / 3 for k in range(3)]
        faces = [0.55 - (u * math.cos(a) + v * math.sin(a)) for a in angles]
        return np.minimum(np.minimum(faces[0], faces[1]), faces[2])
    if shape == "cross":
        au, av = np.abs(u), np.abs(v)
        return np.maximum(np.minimum(0.3 - au, 0.95 - av), np.minimum(0.3 - av, 0.95 - au))
    if shape == "ring":
        return np.minimum(1.0 - r, r - 0.55)
    if shape == "star":  # five points, outer radius 1, inner radius 0.45
        frac = (np.arctan2(v, u) * (5.0 / (2.0 * math.pi))) % 1.0
        return 0.6 * (0.45 + 0.55 * np.abs(2.0 * frac - 1.0) - r)
    if shape == "crescent":  # a disc with an offset disc bitten out of one side
        return np.minimum(1.0 - r, np.sqrt((u - 0.5) ** 2 + v * v) - 0.75)
    raise ValueError("unknown shape {!r}".format(shape))


def _texture_mix(texture: str, rng: np.random.Generator, u: np.ndarray, v: np.ndarray,
                 radius: float) -> np.ndarray:
    """Return the (H, W) weight in [0, 1] of the second (pattern) colour of ``texture`` on the object."""
    if texture == "solid":
        return np.zeros_like(u)
    period = {"striped": 0.42, "dotted": 0.46, "checker": 0.56}[texture] * rng.uniform(0.85, 1.15)
    pu = u * (1.0 / period) + rng.uniform(0, 1)  # lattice coordinates: one unit per texture period
    pv = v * (1.0 / period) + rng.uniform(0, 1)
    sharp = max(1.0, 0.25 * period * radius)  # about one pixel of soft edge whatever the object size
    if texture == "striped":
        return np.clip(0.5 + sharp * np.sin(2.0 * math.pi * pu), 0.0, 1.0)
    if texture == "checker":
        return np.clip(0.5 + 2.0 * sharp * np.sin(2.0 * math.pi * pu) * np.sin(2.0 * math.pi * pv), 0.0, 1.0)
    # dotted: round dots on a square lattice, dot radius 0.27 of the lattice period
    du = pu % 1.0 - 0.5
    dv = pv % 1.0 - 0.5
    return np.clip((0.27 - np.sqrt(du * du + dv * dv)) * (period * radius) + 0.5, 0.0, 1.0)


def _p1_noise(rng: np.random.Generator, height: int, width: int, cell: float) -> np.ndarray:
    """Return an (H, W) float32 field of about unit-std smooth noise with blobs about ``cell`` px wide."""
    # Like _smooth_noise, but upsampled by PIL's bicubic resize: several times faster at these sizes.
    cell = max(float(cell), 1.0)
    gh = int(math.ceil(height / cell)) + 3
    gw = int(math.ceil(width / cell)) + 3
    grid = Image.fromarray(rng.standard_normal((gh, gw), dtype=np.float32))  # a float32 2-D array: mode "F"
    oy, ox = rng.uniform(0.5, 1.5, 2)  # random sub-cell phase; stays inside the grid's interior
    box = (ox, oy, ox + width / cell, oy + height / cell)
    out = np.asarray(grid.resize((width, height), _BICUBIC, box=box), dtype=np.float32)
    return (out - out.mean()) / (out.std() + 1e-6)


def _p1_background(rng: np.random.Generator, height: int, width: int, domain: str,
                   yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Return a (3, H, W) float32 background: busy and colourful for mini, plain and light for office."""
    theta = rng.uniform(0, 2 * math.pi)
    ramp = (xx * math.cos(theta) + yy * math.sin(theta)) / max(height, width)
    ramp = (ramp - ramp.min()) / (np.ptp(ramp) + 1e-6)
    if domain == "mini":
        # Two colours of any hue blended along a gradient, plus large blotches and finer "scene" noise.
        c1 = _hsv(rng.uniform(), rng.uniform(0.05, 0.7), rng.uniform(0.2, 0.9))
        c2 = _hsv(rng.uniform(), rng.uniform(0.05, 0.7), rng.uniform(0.2, 0.9))
        image = c1 + ramp * (c2 - c1)
        blotch = _p1_noise(rng, height, width, max(height, width) / rng.uniform(2.0, 5.0))
        tint = _hsv(rng.uniform(), rng.uniform(0.2, 0.8), 1.0) / 255.0 - 0.5
        image += rng.uniform(8.0, 30.0) * blotch * (1.0 + tint)
        image += rng.uniform(0.0, 14.0) * _p1_noise(rng, height, width, rng.uniform(2.0, 6.0))
        return image
    # office: a light, low-saturation wall with a soft lighting gradient, often a wooden desk below.
    wall = _hsv(rng.uniform(0.0, 1.0), rng.uniform(0.0, 0.15), rng.uniform(0.72, 0.97))
    image = wall * (1.0 - rng.uniform(0.0, 0.2) * ramp)
    if rng.uniform() < 0.6:
        edge = rng.uniform(0.55, 0.85) * height + rng.uniform(-0.08, 0.08) * (xx - width / 2.0)
        desk = _hsv(rng.uniform(0.05, 0.11), rng.uniform(0.25, 0.6), rng.uniform(0.4, 0.8))
        grain = _p1_noise(rng, 1, width, rng.uniform(1.5, 4.0))  # vertical grain lines
        image = np.where(yy > edge, desk * (1.0 + 0.06 * grain), image)
    image += 2.5 * _p1_noise(rng, height, width, max(height, width) / 3.0)
    return image


def _paint_blob(rng: np.random.Generator, image: np.ndarray, side: int, colourful: bool) -> None:
    """Paint one small soft-edged ellipse of a random colour (a distractor) into (3, H, W) ``image``."""
    height, width = image.shape[1:]
    ry, rx = rng.uniform(0.03, 0.09, 2) * side + 1.0
    cy, cx = rng.uniform(0, height), rng.uniform(0, width)
    colour = _hsv(rng.uniform(), rng.uniform(0.1, 0.9 if colourful else 0.4), rng.uniform(0.15, 0.95))
    y0, y1 = max(0, int(cy - ry) - 1), min(height, int(cy + ry) + 2)
    x0, x1 = max(0, int(cx - rx) - 1), min(width, int(cx + rx) + 2)
    if y0 >= y1 or x0 >= x1:
        return
    yy = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5
    xx = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5
    dist = np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)
    alpha = np.clip((1.0 - dist) * min(ry, rx) + 0.5, 0.0, 1.0)
    box = image[:, y0:y1, x0:x1]
    image[:, y0:y1, x0:x1] = box + alpha * (colour - box)


def p1_image(latent_class: int, rng: np.random.Generator, size: Union[int, Tuple[int, int]],
             domain: str) -> np.ndarray:
    """Return an (H, W, 3) uint8 image of one object of ``latent_class``; size is a side or (H, W)."""
    if domain not in P1_DOMAINS:
        raise ValueError("domain must be one of {}, got {!r}".format(P1_DOMAINS, domain))
    height, width = (size, size) if isinstance(size, (int, np.integer)) else size
    height, width = int(height), int(width)
    if min(height, width) < MIN_SIZE:
        raise ValueError("image sides must be at least {} px, got {}x{}".format(MIN_SIZE, height, width))
    shape, hue, texture = p1_class_attributes(latent_class)
    mini = domain == "mini"
    side = min(height, width)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
    image = _p1_background(rng, height, width, domain, yy, xx)
    # Clutter: a few small blobs, most behind the object, some in front of it (partial occlusion).
    num_blobs = int(rng.integers(2, 7) if mini else rng.integers(0, 4))
    num_front = int(rng.binomial(num_blobs, 0.25))
    for _ in range(num_blobs - num_front):
        _paint_blob(rng, image, side, mini)
    # The object: diameter 30-70% of the short side, near the centre as in photos but often off it (a
    # little may leave the frame; office product shots are more centred), at any angle, slightly
    # stretched, lit from a random side.
    radius = rng.uniform(0.15, 0.35) * side
    spread = 0.12 if mini else 0.07
    cy = min(max(height * (0.5 + rng.normal(0.0, spread)), 0.8 * radius), height - 0.8 * radius)
    cx = min(max(width * (0.5 + rng.normal(0.0, spread)), 0.8 * radius), width - 0.8 * radius)
    theta = rng.uniform(0, 2 * math.pi)
    stretch = rng.uniform(0.85, 1.15)
    # Shapes reach at most ~1.13 object units from the centre, 1.34 radii once stretched: paint that box only.
    reach = 1.4 * radius + 2.0
    y0, y1 = max(0, int(cy - reach)), min(height, int(cy + reach) + 1)
    x0, x1 = max(0, int(cx - reach)), min(width, int(cx + reach) + 1)
    dy, dx = yy[y0:y1, x0:x1] - cy, xx[y0:y1, x0:x1] - cx
    u = (dx * math.cos(theta) + dy * math.sin(theta)) / (radius * stretch)
    v = (-dx * math.sin(theta) + dy * math.cos(theta)) * stretch / radius
    alpha = np.clip(_shape_score(shape, u, v) * radius + 0.5, 0.0, 1.0)
    colour = _hsv(hue + rng.normal(0.0, 0.015), rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.0))
    if rng.uniform() < 0.5:  # the pattern is a dark or a light version of the object colour
        pattern = colour * rng.uniform(0.2, 0.45)
    else:
        pattern = colour + (255.0 - colour) * rng.uniform(0.55, 0.8)
    mix = _texture_mix(texture, rng, u, v, radius)
    light_dir = rng.uniform(0, 2 * math.pi)
    shade = 1.0 + rng.uniform(0.0, 0.2) * (u * math.cos(light_dir) + v * math.sin(light_dir))
    obj = (colour + mix * (pattern - colour)) * shade
    box = image[:, y0:y1, x0:x1]
    image[:, y0:y1, x0:x1] = box + alpha * (obj - box)
    for _ in range(num_front):
        _paint_blob(rng, image, side, mini)
    # Camera: global brightness, a colour cast and sensor noise.
    gain = rng.uniform(0.7, 1.25) if mini else rng.uniform(0.85, 1.15)
    image = image * gain + rng.normal(0.0, 6.0 if mini else 3.0, (3, 1, 1)).astype(np.float32)
    # Uniform sensor noise (std 4 or 2 grey levels): as good as Gaussian here and several times cheaper.
    image += (rng.random((3, height, width), dtype=np.float32) - 0.5) * (13.9 if mini else 6.9)
    # Painting works channel-first (3, H, W), which numpy broadcasts much faster than (H, W, 3).
    return np.ascontiguousarray(np.clip(np.rint(image), 0, 255).astype(np.uint8).transpose(1, 2, 0))


def p1_mini_classes(num_classes: int, per_class: int, seed: int) -> np.ndarray:
    """Return the latent class of every mini image: ``per_class`` of each class, shuffled by ``seed``."""
    rng = np.random.default_rng([seed, P1_PART_ID, P1_SPLIT_IDS["mini/train"]])
    return rng.permutation(np.repeat(np.arange(num_classes), per_class))


def p1_sanity_image(latent_class: int, rng: np.random.Generator, size: Union[int, Tuple[int, int]]) -> np.ndarray:
    """An (H, W, 3) uint8 image of the DINO sanity set: one upright light-grey shape on a dark-grey ground.

    Only the shape (``P1_SHAPES[latent_class]``) and its place and size vary; colours, brightness and
    orientation are the same in every image. So the one thing two random crops of an image share, once DINO's
    augmentations have acted, is their shape: what a working DINO must learn, and what random features only
    partly see. (The main toy set ties classes to colour, which DINO's colour augmentations teach it to ignore.)
    ``size`` is a side or (H, W); the shape's size follows the short side, its place the middle of the frame.
    """
    height, width = (size, size) if isinstance(size, (int, np.integer)) else size
    height, width = int(height), int(width)
    if min(height, width) < MIN_SIZE:
        raise ValueError("image sides must be at least {} px, got {}x{}".format(MIN_SIZE, height, width))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
    radius = rng.uniform(0.2, 0.42) * min(height, width)
    cy = height / 2.0 + rng.uniform(-0.15 * height, 0.15 * height)
    cx = width / 2.0 + rng.uniform(-0.15 * width, 0.15 * width)
    u, v = (xx - cx) / radius, (yy - cy) / radius
    alpha = np.clip(_shape_score(P1_SHAPES[latent_class % len(P1_SHAPES)], u, v) * radius + 0.5,
                    0.0, 1.0)
    image = 0.1 * 255.0 + alpha * (0.8 * 255.0) + rng.normal(0.0, 4.0, (3, height, width))
    return np.ascontiguousarray(np.clip(np.rint(image), 0, 255).astype(np.uint8).transpose(1, 2, 0))


def _write_mini(out: "_Output", root: Path, classes: Sequence[int],
                draw: Callable[[int, int], np.ndarray]) -> None:
    """Write ROOT/mini/train/{index}.jpg (zero-padded, at least 5 digits): ``draw(class, index)`` for each."""
    folder = root / "mini" / "train"
    folder.mkdir(parents=True, exist_ok=True)
    digits = max(5, len(str(len(classes) - 1)))
    for index, cls in enumerate(classes):
        _save_jpeg(draw(int(cls), index), out.add(folder / "{:0{}d}.jpg".format(index, digits)))


def _write_office_split(out: "_Output", root: Path, split: str, num_classes: int, per_class: int,
                        first_k: int, draw: Callable[[int, int], np.ndarray]) -> None:
    """Write ROOT/office/SPLIT/{label}_{k}.jpg (``draw(label, j)``, k = first_k + j) and ROOT/office/SPLIT.csv
    (header ``id,filename,label``), labels in turn."""
    folder = root / "office" / split
    folder.mkdir(parents=True, exist_ok=True)
    lines = [CSV_HEADER]
    for label in range(num_classes):
        for j in range(per_class):
            name = "{}_{}.jpg".format(label, first_k + j)
            _save_jpeg(draw(label, j), out.add(folder / name))
            lines.append("{},{},{}".format(len(lines) - 1, name, label))
    out.add(root / "office" / "{}.csv".format(split)).write_text("\n".join(lines) + "\n")


def make_p1_sanity_data(out_dir: PathLike, size: int = 32, num_classes: int = 7, num_unlabeled: int = 512,
                        train_per_class: int = 30, val_per_class: int = 30, seed: int = 0) -> Path:
    """Write the DINO sanity set in the problem-1 layout: OUT/p1_data/mini/train (unlabeled, the shapes in
    turn) and OUT/p1_data/office/{train,val} + csv (the labeled k-NN probe). Returns the p1_data path."""
    if not 1 <= num_classes <= len(P1_SHAPES):
        raise ValueError("num_classes must be in 1..{}, got {}".format(len(P1_SHAPES), num_classes))
    out = _Output(out_dir)
    root = out.replace_part("p1_data")
    rng = np.random.default_rng([seed, P1_PART_ID, 7])  # one stream, drawn in file order

    def draw(cls: int, _: int) -> np.ndarray:
        return p1_sanity_image(cls, rng, size)

    _write_mini(out, root, [i % num_classes for i in range(num_unlabeled)], draw)
    for split, per_class in zip(P1_OFFICE_SPLITS, (train_per_class, val_per_class)):
        _write_office_split(out, root, split, num_classes, per_class, 0, draw)
    return root


def _save_jpeg(image: np.ndarray, path: Path) -> None:
    """Write an (H, W, 3) uint8 image as a JPEG of the project's quality."""
    Image.fromarray(image).save(str(path), format="JPEG", quality=JPEG_QUALITY)


def make_p1_data(out_dir: PathLike, mini_size: int = 84, num_classes: int = 8, mini_per_class: int = 40,
                 office_train_per_class: int = 12, office_val_per_class: int = 4, seed: int = 0,
                 kind: str = "objects") -> Path:
    """Write OUT/p1_data/{mini/train, office/train, office/val, office/*.csv} and return the p1_data path.

    ``kind`` "objects" (default): the latent classes of ``p1_image`` (shape x hue x texture, heavy nuisance),
    busy mini and plain office backgrounds. "shapes": ``p1_sanity_image``'s upright light shapes on a dark
    ground, one class per shape (at most 7), in both sets; office images of varied sizes as with "objects".
    """
    if kind not in P1_KINDS:
        raise ValueError("kind must be one of {}, got {!r}".format(P1_KINDS, kind))
    max_classes = P1_MAX_CLASSES if kind == "objects" else len(P1_SHAPES)
    if mini_size < MIN_SIZE:
        raise ValueError("mini_size must be at least {} px, got {}".format(MIN_SIZE, mini_size))
    if not 1 <= num_classes <= max_classes:
        raise ValueError("num_classes must be in 1..{} for kind {}, got {}".format(max_classes, kind, num_classes))
    if min(mini_per_class, office_train_per_class, office_val_per_class) < 0:
        raise ValueError("per-class counts must be non-negative")
    if seed < 0:
        raise ValueError("seed must be non-negative, got {}".format(seed))
    out = _Output(out_dir)
    root = out.replace_part("p1_data")
    classes = p1_mini_classes(num_classes, mini_per_class, seed).tolist()

    def draw(cls: int, rng: np.random.Generator, size: Union[int, Tuple[int, int]], domain: str) -> np.ndarray:
        return p1_image(cls, rng, size, domain) if kind == "objects" else p1_sanity_image(cls, rng, size)

    def draw_mini(cls: int, index: int) -> np.ndarray:
        rng = np.random.default_rng([seed, P1_PART_ID, P1_SPLIT_IDS["mini/train"], index])
        return draw(cls, rng, mini_size, "mini")

    _write_mini(out, root, classes, draw_mini)
    # Generated data only (not in the real layout): the hidden classes of the mini images, e.g. for training a
    # labeled backbone (the 2024 edition's pretrain_model_SL.pt) with p1_finetune.py in tests.
    digits = max(5, len(str(len(classes) - 1)))
    lines = [CSV_HEADER] + ["{},{:0{}d}.jpg,{}".format(i, i, digits, c) for i, c in enumerate(classes)]
    out.add(root / P1_STANDIN_LABELS).write_text("\n".join(lines) + "\n")
    # Office file names are {label}_{k}.jpg as in the real data; val continues k after train, so a
    # file name is unique across the two splits and a mixed-up folder cannot go unnoticed.
    first_k = {"train": 0, "val": office_train_per_class}
    for split, per_class in zip(P1_OFFICE_SPLITS, (office_train_per_class, office_val_per_class)):
        def draw_office(label: int, j: int, split: str = split) -> np.ndarray:
            rng = np.random.default_rng([seed, P1_PART_ID, P1_SPLIT_IDS["office/" + split], label, j])
            low, high = P1_OFFICE_SIDE
            height, width = (int(x) for x in rng.integers(low, high + 1, 2))
            return draw(label, rng, (height, width), "office")

        _write_office_split(out, root, split, num_classes, per_class, first_k[split], draw_office)
    return root


def _make_p1_from_args(args: argparse.Namespace) -> str:
    """Run make_p1_data for the CLI and return its part of the summary line."""
    root = make_p1_data(args.out, mini_size=args.p1_mini_size, num_classes=args.p1_classes,
                        mini_per_class=args.p1_mini_per_class,
                        office_train_per_class=args.p1_office_per_class,
                        office_val_per_class=args.p1_office_val_per_class, seed=args.seed, kind=args.p1_kind)
    return "p1 ({}): {} classes, {} mini {}x{} + {} office train + {} office val images in {}".format(
        args.p1_kind, args.p1_classes, args.p1_classes * args.p1_mini_per_class, args.p1_mini_size, args.p1_mini_size,
        args.p1_classes * args.p1_office_per_class, args.p1_classes * args.p1_office_val_per_class, root)


def _make_p2_from_args(args: argparse.Namespace) -> str:
    """Run make_p2_data for the CLI and return its part of the summary line."""
    root = make_p2_data(args.out, size=args.size, num_train=args.num, num_val=args.num_val, seed=args.seed)
    return "p2: {} train + {} validation {}x{} pairs in {}".format(args.num, args.num_val, args.size,
                                                                  args.size, root)


# CLI part name -> maker, in the order the parts are written by default.
PART_MAKERS: Dict[str, Callable[[argparse.Namespace], str]] = {"p1": _make_p1_from_args,
                                                               "p2": _make_p2_from_args}


def build_parser() -> argparse.ArgumentParser:
    """Return the command-line parser."""
    parser = argparse.ArgumentParser(prog="python -m tools.toydata",
                                     description="Generate synthetic data in the homework's layout.")
    parser.add_argument("--out", required=True,
                        help="output root; p1_data/ and p2_data/ are created inside it")
    parser.add_argument("--seed", type=int, default=0, help="non-negative seed; same seed, same bytes")
    parser.add_argument("--parts", nargs="+", default=list(PART_MAKERS), choices=sorted(PART_MAKERS),
                        help="which problems' data to write (default: all)")
    p1 = parser.add_argument_group("problem 1 (mini / office classification data)")
    p1.add_argument("--p1-kind", choices=P1_KINDS, default="objects",
                    help="objects: classes of shape x colour x texture under heavy nuisance (default); shapes: "
                         "upright light shapes on a dark ground, one class per shape (at most 7), the kind on "
                         "which a short DINO run learns")
    p1.add_argument("--p1-classes", type=int, default=8,
                    help="latent classes, 1..{} (real: 64 mini, 65 office)".format(P1_MAX_CLASSES))
    p1.add_argument("--p1-mini-per-class", type=int, default=40,
                    help="unlabeled mini images per class (real: 600)")
    p1.add_argument("--p1-office-per-class", type=int, default=12,
                    help="labeled office train images per class (real: ~61)")
    p1.add_argument("--p1-office-val-per-class", type=int, default=4,
                    help="labeled office val images per class (real: ~6)")
    p1.add_argument("--p1-mini-size", type=int, default=84, help="mini image side in pixels (real: 84)")
    p2 = parser.add_argument_group("problem 2 (satellite segmentation data)")
    p2.add_argument("--size", type=int, default=64, help="tile side in pixels (real data: 512)")
    p2.add_argument("--num", type=int, default=24, help="number of training pairs")
    p2.add_argument("--num-val", type=int, default=8, help="number of validation pairs")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.size < MIN_SIZE or args.num < 0 or args.num_val < 0 or args.seed < 0:
        parser.error("need --size >= {} and non-negative --num, --num-val and --seed".format(MIN_SIZE))
    max_classes = P1_MAX_CLASSES if args.p1_kind == "objects" else len(P1_SHAPES)
    if not 1 <= args.p1_classes <= max_classes or args.p1_mini_size < MIN_SIZE \
            or min(args.p1_mini_per_class, args.p1_office_per_class, args.p1_office_val_per_class) < 0:
        parser.error("need --p1-classes in 1..{} (--p1-kind {}), --p1-mini-size >= {} and non-negative p1 "
                     "counts".format(max_classes, args.p1_kind, MIN_SIZE))
    try:
        _Output(args.out)  # refuse a file or a folder that is not ours before any part writes
        # dict.fromkeys drops repeated parts while keeping the order they were given in.
        summaries = [PART_MAKERS[part](args) for part in dict.fromkeys(args.parts)]
    except OutputError as e:
        print("toydata: error: {}".format(e), file=sys.stderr)
        return 2
    print("toydata: seed {}; {}".format(args.seed, "; ".join(summaries)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
