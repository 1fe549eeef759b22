"""Problem 1's generated data (self-supervised pre-training, then classification), in the real layout::

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
Office images do not depend on how many are generated; a mini image's class does, as it comes from one
seeded shuffle of all mini images.

Kind "shapes" swaps the latent classes for the DINO sanity set's upright light shapes on a dark ground
(``p1_sanity_image``) in both mini and office, the kind on which a short CPU run of DINO learns.
"""
import colorsys
import math
from pathlib import Path
from typing import Callable, Sequence, Tuple, Union

import numpy as np
from PIL import Image

from tools.toydata.output import MIN_SIZE, PathLike, _Output, _save_jpeg

# Keys p1's per-image random streams (p2's part id is 2, tools/toydata/p2.py), so the two never share a stream.
P1_PART_ID = 1

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
