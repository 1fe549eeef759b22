"""Synthetic stand-in for the homework data, written in exactly the real directory layout.

The real data cannot be downloaded here, so tests and the demo run on images this package generates: problem 1's
unlabeled "mini" and labeled "office" images (``p1.py``), problem 2's satellite tiles and masks (``p2.py``).
Generation is deterministic: every image draws from its own ``numpy.random.default_rng`` keyed by (seed, part,
split, index), so the same seed gives byte-identical files and images are independent of each other.

Usage::

    python -m tools.toydata --out DIR [--parts p1 p2] [--seed S] [--p1-kind objects|shapes]
        [--p1-classes K] [--p1-mini-per-class N] [--p1-office-per-class N] [--p1-office-val-per-class N]
        [--p1-mini-size PX] [--size PX] [--num N] [--num-val M]

DIR must be new, empty, or a folder this package made; a rerun deletes only the files it wrote (``output.py``).

One module per subject; this package only gathers their public names:

    p1.py       problem 1: latent object classes (or the DINO sanity shapes), mini and office images, csv files
    p2.py       problem 2: Voronoi land-cover tiles and their masks
    output.py   the output folder: refusing real data, the marker file that lists every file written
    cli.py      the command line: one maker per part (``PART_MAKERS``; a new part plugs in there), the summary line
"""
from tools.toydata.cli import PART_MAKERS, build_parser, main
from tools.toydata.output import GENERATED_MARKER, JPEG_QUALITY, MIN_SIZE, OutputError, is_generated
from tools.toydata.p1 import (CSV_HEADER, P1_DOMAINS, P1_HUES, P1_KINDS, P1_MAX_CLASSES, P1_OFFICE_SIDE,
                              P1_OFFICE_SPLITS, P1_PART_ID, P1_SHAPES, P1_SPLIT_IDS, P1_STANDIN_LABELS, P1_TEXTURES,
                              make_p1_data, make_p1_sanity_data, p1_class_attributes, p1_image, p1_mini_classes,
                              p1_sanity_image)
from tools.toydata.p2 import P2_CLASS_PROBS, P2_PART_ID, P2_SPLITS, SPLIT_IDS, make_p2_data, p2_tile

__all__ = [
    "PART_MAKERS", "build_parser", "main",
    "GENERATED_MARKER", "JPEG_QUALITY", "MIN_SIZE", "OutputError", "is_generated",
    "CSV_HEADER", "P1_DOMAINS", "P1_HUES", "P1_KINDS", "P1_MAX_CLASSES", "P1_OFFICE_SIDE", "P1_OFFICE_SPLITS",
    "P1_PART_ID", "P1_SHAPES", "P1_SPLIT_IDS", "P1_STANDIN_LABELS", "P1_TEXTURES", "make_p1_data",
    "make_p1_sanity_data", "p1_class_attributes", "p1_image", "p1_mini_classes", "p1_sanity_image",
    "P2_CLASS_PROBS", "P2_PART_ID", "P2_SPLITS", "SPLIT_IDS", "make_p2_data", "p2_tile",
]
