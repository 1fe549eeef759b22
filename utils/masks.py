"""Land-cover mask colours, decoded exactly as the course's grader decodes them.

The grader thresholds every channel at >= 128 and computes ``code = 4R + 2G + B``. Seven of the eight
codes are classes; code 4 (pure red) is not a class and the grader leaves it undefined. We map it to
``IGNORE_INDEX`` so training skips such pixels and our mIoU leaves them out, and we never write it.
"""
from pathlib import Path
from typing import Optional, Union

import numpy as np
from PIL import Image

from utils.fileio import open_regular, write_atomic

NUM_CLASSES = 7  # six land-cover classes + "unknown"
NUM_EVAL_CLASSES = 6  # the grader averages IoU over classes 0..5 only
IGNORE_INDEX = 255
CLASS_NAMES = ("urban", "agriculture", "rangeland", "forest", "water", "barren", "unknown")

# class index -> RGB, the official colours
PALETTE = np.array(
    [
        [0, 255, 255],  # 0 urban, cyan, code 3
        [255, 255, 0],  # 1 agriculture, yellow, code 6
        [255, 0, 255],  # 2 rangeland, purple, code 5
        [0, 255, 0],  # 3 forest, green, code 2
        [0, 0, 255],  # 4 water, blue, code 1
        [255, 255, 255],  # 5 barren, white, code 7
        [0, 0, 0],  # 6 unknown, black, code 0
    ],
    dtype=np.uint8,
)

# grader code (4R + 2G + B) -> class index; code 4 (red) is not a class
CODE_TO_CLASS = np.array([6, 4, 3, 0, IGNORE_INDEX, 2, 1, 5], dtype=np.uint8)


def rgb_to_class(rgb: np.ndarray) -> np.ndarray:
    """Decode an (H, W, 3) uint8 mask to (H, W) class indices with the grader's threshold rule."""
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise ValueError("expected an (H, W, 3) RGB mask, got shape {}".format(rgb.shape))
    bits = (rgb[..., :3] >= 128).astype(np.uint8)
    code = 4 * bits[..., 0] + 2 * bits[..., 1] + bits[..., 2]
    return CODE_TO_CLASS[code]


def class_to_rgb(classes: np.ndarray) -> np.ndarray:
    """Encode (H, W) class indices 0..6 as an (H, W, 3) uint8 mask in the official colours."""
    classes = np.asarray(classes)
    if not np.issubdtype(classes.dtype, np.integer):
        raise ValueError("class indices must be integers, got dtype {}".format(classes.dtype))
    if classes.size and (classes.min() < 0 or classes.max() >= NUM_CLASSES):
        raise ValueError("class indices must lie in 0..{}; got {}..{}".format(
            NUM_CLASSES - 1, classes.min(), classes.max()))
    return PALETTE[classes]


COLOURS_HELP = ("docs/data.md#mask-colours, 'Mask colours': urban cyan, agriculture yellow, rangeland purple, forest "
                "green, water blue, barren white, unknown black; utils.masks.class_to_rgb does it")


def read_mask(path: Union[str, Path]) -> np.ndarray:
    """Read a colour mask file and return (H, W) uint8 class indices (IGNORE_INDEX for red). Only a regular file
    is opened (``open_regular``): a FIFO named like a mask is an error naming it, not a read that blocks. A mask
    holding class indices instead of colours (``looks_like_class_indices``, ``palette_index_problem``) is a
    ValueError naming the file and the colour table."""
    f = open_regular(path, what="mask")
    try:
        with f, Image.open(f) as img:
            img.load()
            palette_problem = palette_index_problem(img)
            # Palette, grayscale, RGBA and 16-bit masks all go through PIL's RGB conversion first.
            rgb = np.asarray(img.convert("RGB"))
    except MemoryError:  # out of memory, not a damaged file
        raise
    except Exception as exc:  # PIL raises several unrelated types for damaged files
        raise ValueError("cannot read mask {}: {}".format(path, exc)) from exc
    if palette_problem:
        raise ValueError("mask {} is a palette image holding class indices 0..{} ({}), not class colours: the grader "
                         "reads its colours, not its indices. Write each class in its colour ({})".format(
                             path, NUM_CLASSES - 1, palette_problem, COLOURS_HELP))
    if looks_like_class_indices(rgb):
        ignore = (", with {} as 'ignore'".format(IGNORE_INDEX), " (and {} as 'barren')".format(IGNORE_INDEX)) \
            if (rgb == IGNORE_INDEX).any() else ("", "")
        raise ValueError("mask {} holds class indices (grey levels 0..{}){}, not class colours: the grader would read "
                         "every index as 'unknown'{}. Write each class in its colour ({})".format(
                             path, NUM_CLASSES - 1, ignore[0], ignore[1], COLOURS_HELP))
    return rgb_to_class(rgb)


def looks_like_class_indices(rgb: np.ndarray) -> bool:
    """True for a mask holding class indices instead of colours: every pixel grey (R = G = B), every value in 0..6
    or 255 (the common 'ignore' value), and some value in 1..6. Colour masks have channels near 0 or 255, so the
    only grey colours are black and white: a grey mask of 0 and 255 alone is black 'unknown' and white 'barren'
    and decodes as such, and so does an all-zero mask (all 'unknown' in colours, all 'urban' in indices)."""
    if not rgb.size:
        return False
    grey = rgb[..., 0]
    if not ((grey == rgb[..., 1]).all() and (grey == rgb[..., 2]).all()):
        return False
    small = grey < NUM_CLASSES
    return bool((small | (grey == IGNORE_INDEX)).all() and (grey[small] > 0).any())


def palette_index_problem(img: Image.Image) -> Optional[str]:
    """For a palette ('P') image whose pixel values all lie in 0..6 (255 allowed as 'ignore'): why its values are
    class indices rather than colours -- a value with no palette entry, or one whose palette colour has a channel
    in 64..191 (the VOC and other index palettes: dark red 128,0,0 ...), neither clearly off nor clearly on under
    the grader's threshold at 128. None otherwise: a palette of the course's colours (in any order) decodes
    through it as before, and a grey palette is left to ``looks_like_class_indices``."""
    if img.mode != "P":
        return None
    counts = np.bincount(np.asarray(img).reshape(-1), minlength=256)
    used = np.flatnonzero(counts)
    if not used.size or not all(int(v) < NUM_CLASSES or int(v) == IGNORE_INDEX for v in used):
        return None
    flat = img.getpalette() or []
    entries = np.array(flat[:len(flat) // 3 * 3], dtype=np.uint8).reshape(-1, 3)
    for value in used:
        if value >= len(entries):
            return "value {} has no palette colour".format(value)
        colour = entries[value]
        if ((colour >= 64) & (colour < 192)).any():
            return "its palette gives value {} the colour ({}, {}, {}), none of the course's".format(
                value, *(int(c) for c in colour))
    return None


def write_mask(path: Union[str, Path], classes: np.ndarray) -> None:
    """Write (H, W) class indices as an RGB PNG in the official colours (never red), atomically (temp file in the
    same folder + os.replace): a symlink at ``path`` is replaced, not written through; a failed write (a full disk)
    keeps the mask already there and raises an OSError naming ``path``."""
    image = Image.fromarray(class_to_rgb(classes))
    write_atomic(path, lambda f: image.save(f, format="PNG"), what="mask")
