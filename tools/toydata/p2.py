"""Problem 2's generated data (land-cover segmentation), in the real layout::

    OUT/p2_data/train/0000_sat.jpg, 0000_mask.png, ...       (real: 2000 pairs, 512x512)
    OUT/p2_data/validation/0000_sat.jpg, 0000_mask.png, ...  (real: 257 pairs)

Each tile is a warped Voronoi partition whose cells get land-cover classes; the satellite image
renders every class with its own mean colour *and* texture, so a small network can learn it while a
pure colour lookup cannot solve it completely. A tile depends only on (seed, split, index), not on how many
are generated.
"""
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
from PIL import Image, ImageFilter

from tools.toydata.output import MIN_SIZE, PathLike, _Output, _save_jpeg
from utils.masks import NUM_CLASSES, write_mask

# Keys p2's per-image random streams (p1's part id is 1, tools/toydata/p1.py), so the two never share a stream.
P2_PART_ID = 2
SPLIT_IDS = {"train": 0, "validation": 1}
P2_SPLITS = ("train", "validation")

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
