"""Datasets and image reading with one-line errors that name the file.

Training datasets check every file when they are built, before the first step: each image (and mask) is decoded once,
in threads, and a file that cannot be used is skipped with one warning line naming it, or is an error when
``strict=True`` (the trainers' ``--strict``). Nothing fails hours into a run because of one bad file.
"""
import hashlib
import io
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image
from torchvision import tv_tensors

from utils.fileio import check_target, open_regular, write_atomic, write_text
from utils.masks import read_mask

PathLike = Union[str, Path]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def read_rgb(path: PathLike) -> np.ndarray:
    """Decode any image PIL reads (grayscale, RGBA, palette, CMYK, 16-bit) to (H, W, 3) uint8 RGB.

    Only regular files are opened (``open_regular``): a FIFO or device named like an image is an error naming it,
    never a read that blocks."""
    f = open_regular(path, what="image")
    try:
        with f, Image.open(f) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                # 16-bit grayscale: scale to 8 bits rather than clip (PIL's convert would saturate)
                arr = np.asarray(img, dtype=np.float64)
                # 16-bit modes span 0..65535 whatever the content; 32-bit "I" has no fixed range, so guess
                peak = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
                arr = np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
                return np.stack([arr] * 3, axis=-1)
            if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                # composite transparent pixels on black instead of keeping their hidden colour
                rgba = img.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
                return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
            return np.asarray(img.convert("RGB"))
    except MemoryError:  # out of memory, not a damaged file: run_cli's one line and exit 3
        raise
    except Exception as exc:  # PIL raises many unrelated types for damaged files
        raise ValueError("cannot read image {}: {}".format(path, str(exc) or type(exc).__name__)) from exc


def to_chw_uint8(array: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 array -> contiguous (3, H, W) uint8 tensor on writable memory: a read-only array (PIL's)
    whose transpose is already contiguous (a 1x1 image) is copied, so torch warns of no non-writable array."""
    return torch.from_numpy(np.require(array.transpose(2, 0, 1), requirements=("C", "W")))


def list_satellite_pairs(folder: PathLike) -> List[Tuple[Path, Path]]:
    """Sorted (xxxx_sat.jpg, xxxx_mask.png) pairs of a p2 split; a clear error for missing masks or sizes."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError("data folder not found: {}".format(folder))
    images = sorted(folder.glob("*_sat.jpg"))
    if not images:
        raise FileNotFoundError("no *_sat.jpg images in {}".format(folder))
    pairs, missing = [], []
    for image in images:
        mask = image.with_name(image.name[: -len("_sat.jpg")] + "_mask.png")
        if mask.is_file():
            pairs.append((image, mask))
        else:
            missing.append(mask.name)
    if missing:
        raise FileNotFoundError("{} image(s) in {} have no mask, e.g. {}".format(
            len(missing), folder, ", ".join(missing[:5])))
    return pairs


def _problem(check: Callable[[], None]) -> Optional[str]:
    """None when ``check()`` passes, else its one-line message (the file name is in it)."""
    try:
        check()
    except (OSError, ValueError) as exc:
        return str(exc)
    return None


def _check_pair(image: Path, mask: Path) -> None:
    img, lab = read_rgb(image), read_mask(mask)
    if img.shape[:2] != lab.shape:
        raise ValueError("mask {} is {}x{} but its image {} is {}x{}".format(
            mask, lab.shape[1], lab.shape[0], image, img.shape[1], img.shape[0]))


def verify_items(items: Sequence, check: Callable, what: str, strict: bool, workers: int = 8) -> List[int]:
    """Decode every item once (``check(*item)`` or ``check(item)``) and return the indices of usable ones.

    Unusable items are skipped with one warning line on stderr naming up to five of them, or raise a ValueError
    naming them when ``strict``; when none is usable it is always an error.
    """
    def run(item):
        return _problem(lambda: check(*item) if isinstance(item, tuple) else check(item))

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:  # PIL decodes without holding the GIL
        problems = list(pool.map(run, items))
    bad = [p for p in problems if p is not None]
    if bad:
        listing = "; ".join(bad[:5]) + (" (and {} more)".format(len(bad) - 5) if len(bad) > 5 else "")
        if strict or len(bad) == len(items):
            raise ValueError("{} of {} {} cannot be used: {}".format(len(bad), len(items), what, listing))
        print("warning: skipping {} of {} {} that cannot be used (--strict makes this an error): {}".format(
            len(bad), len(items), what, listing), file=sys.stderr)
    return [i for i, p in enumerate(problems) if p is None]


class SegmentationDataset(torch.utils.data.Dataset):
    """p2 split of (xxxx_sat.jpg, xxxx_mask.png) pairs -> (uint8 image (3, H, W), int64 mask (H, W))."""

    def __init__(self, folder: PathLike, transform: Optional[Callable] = None, strict: bool = False) -> None:
        self.folder = Path(folder)
        self.pairs = list_satellite_pairs(self.folder)
        keep = verify_items(self.pairs, _check_pair, what="image/mask pairs in {}".format(self.folder), strict=strict)
        self.pairs = [self.pairs[i] for i in keep]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.pairs)

    def image_id(self, index: int) -> str:
        """'0018' for 0018_sat.jpg."""
        return self.pairs[index][0].name[: -len("_sat.jpg")]

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, torch.Tensor]:
        image_path, mask_path = self.pairs[index]
        image = tv_tensors.Image(to_chw_uint8(read_rgb(image_path)))
        mask = tv_tensors.Mask(torch.from_numpy(read_mask(mask_path)).long())
        if self.transform is not None:
            image, mask = self.transform(image, mask)
        return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)


def mask_name_for(image: Path) -> str:
    """0013_sat.jpg -> 0013_mask.png; other.png -> other_mask.png."""
    stem = image.stem
    if stem.endswith("_sat"):
        stem = stem[: -len("_sat")]
    return stem + "_mask.png"


def collate_list(batch: list) -> list:
    """Keep samples as a list (sizes may differ; the caller groups equal sizes)."""
    return batch


def list_images(folder: PathLike) -> List[Path]:
    """Sorted image files (.jpg/.jpeg/.png) of a folder; a clear error for a missing or empty folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError("image folder not found: {}".format(folder))
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError("no .jpg/.png images in {}".format(folder))
    return files


class UnlabeledImages(torch.utils.data.Dataset):
    """Every image of a folder (e.g. Mini-ImageNet ``mini/train``) -> ``transform(uint8 (3, H, W) tensor)``."""

    def __init__(self, folder: PathLike, transform: Optional[Callable] = None,
                 max_images: Optional[int] = None, strict: bool = False) -> None:
        self.folder = Path(folder)
        self.files = list_images(folder)
        if max_images is not None:
            self.files = self.files[:max_images]
        keep = verify_items(self.files, read_rgb, what="images in {}".format(folder), strict=strict)
        self.files = [self.files[i] for i in keep]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        image = to_chw_uint8(read_rgb(self.files[index]))
        return self.transform(image) if self.transform is not None else image


class CsvRow(object):
    """One row of an images csv: its position, id, bare filename (what predictions are written with), label (None
    when unlabeled), csv line, and ``path``: the filename as written, the image's path under the image folder."""

    __slots__ = ("row", "id", "filename", "label", "line", "path")

    def __init__(self, row: int, id: str, filename: str, label: Optional[int], line: int = 0,
                 path: Optional[str] = None) -> None:
        self.row, self.id, self.filename, self.label, self.line = row, id, filename, label, line
        self.path = filename if path is None else path


def _decode_csv(path: Path) -> str:
    """The text of a csv: UTF-8 (a BOM dropped), or else Latin-1 with a warning naming the file and the line."""
    with open_regular(path, what="csv") as f:
        data = f.read()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        print("warning: csv {} is not UTF-8 (line {}: byte 0x{:02x}); reading it as Latin-1".format(
            path, data.count(b"\n", 0, exc.start) + 1, data[exc.start]), file=sys.stderr)
        return data.decode("latin-1")


def _label_problem(raw: str, num_classes: Optional[int]) -> Tuple[Optional[int], Optional[str]]:
    """(label, None) for an integer label in range (``3`` or ``3.0``), else (None, what is wrong with it)."""
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value.is_integer():  # text, 1.5, inf
        return None, "label {!r} is not an integer".format(raw)
    label = int(value)
    if label < 0 or (num_classes is not None and label >= num_classes):
        return None, "label {} outside 0..{}".format(label, (num_classes or 1) - 1)
    return label, None


def read_image_csv(path: PathLike, num_classes: Optional[int] = None, duplicates: str = "error",
                   bad_labels: str = "error") -> List[CsvRow]:
    """Read an ``id,filename,label`` csv in any column order, with or without a BOM or extra columns.

    Labels 'None', 'nan', '-1' or empty become None (the hidden test csv). A csv without a ``filename`` column, an
    empty filename, a field over the csv module's limit is a ValueError naming the file and line; a file that is
    not UTF-8 is read as Latin-1 with a warning. A label that is not an integer (``cat``, ``1.5``, ``inf``) or lies
    outside 0..num_classes-1 is a ValueError naming the file and line (``bad_labels="error"``, for training) or a
    warning naming the lines (``"warn"``: inference still predicts the row; its label becomes None, not scored).
    A repeated id or filename is a ValueError naming both lines (``duplicates="error"``, for training) or a warning
    (``"warn"``: inference answers every row). Rows whose fields are all empty (``,,``, spaces) are skipped.
    """
    import csv

    path = Path(path)
    reader = csv.DictReader(io.StringIO(_decode_csv(path), newline=""))
    rows, bad = [], []  # type: List[CsvRow], List[str]
    try:
        if reader.fieldnames is None:
            raise ValueError("csv {} is empty".format(path))
        names = [name.strip().lower() for name in reader.fieldnames if name is not None]
        for key in ("filename", "id", "label"):
            if names.count(key) > 1:  # which one is meant cannot be known: DictReader would keep the last
                raise ValueError("csv {} has {} {!r} columns (columns: {}); keep one".format(
                    path, names.count(key), key, ",".join(reader.fieldnames)))
        fields = {name.strip().lower(): name for name in reader.fieldnames if name is not None}
        if "filename" not in fields:
            raise ValueError("csv {} has no 'filename' column (columns: {})".format(path, reader.fieldnames))
        for record in reader:
            line = reader.line_num  # the physical line (blank lines and quoted newlines counted)
            if not any(value.strip() for value in record.values() if isinstance(value, str)):
                continue  # every field empty (',,', spaces: a spreadsheet's empty rows): no row
            i = len(rows)
            filename = (record.get(fields["filename"]) or "").strip()
            if not filename:
                raise ValueError("csv {} line {}: empty filename".format(path, line))
            if os.path.isabs(filename) or ".." in filename.replace("\\", "/").split("/"):
                raise ValueError("csv {} line {}: filename {!r} must be a path inside the image folder".format(
                    path, line, filename))
            raw_id = (record.get(fields["id"]) or "").strip() if "id" in fields else str(i)
            raw_label = (record.get(fields["label"]) or "").strip() if "label" in fields else ""
            label = None  # type: Optional[int]
            if raw_label and raw_label.lower() not in ("none", "nan", "-1"):
                label, problem = _label_problem(raw_label, num_classes)
                if problem is not None:
                    if bad_labels == "error":
                        raise ValueError("csv {} line {}: {}".format(path, line, problem))
                    bad.append("line {}: {}".format(line, problem))
            rows.append(CsvRow(i, raw_id, Path(filename).name, label, line, path=filename))
    except csv.Error as exc:  # a field over csv.field_size_limit(), a NUL byte (Python 3.8), ...
        # DictReader's own line_num is that of the last good row: its csv.reader's is the line that failed
        raise ValueError("csv {} line {}: {}".format(path, reader.reader.line_num, exc)) from None
    if not rows:
        raise ValueError("csv {} has a header but no rows".format(path))
    if bad:
        print("warning: csv {}: {} row(s) without a usable label are predicted but not scored: {}{}".format(
            path, len(bad), "; ".join(bad[:5]), " ..." if len(bad) > 5 else ""), file=sys.stderr)
    for key in ("id", "filename"):
        seen = {}  # type: dict
        for r in rows:
            value = getattr(r, key)
            if value in seen:
                message = "csv {} lines {} and {}: duplicate {} {!r}".format(path, seen[value], r.line, key, value)
                if duplicates == "error":
                    raise ValueError(message)
                print("warning: " + message, file=sys.stderr)
                break
            seen[value] = r.line
    return rows


class CsvImages(torch.utils.data.Dataset):
    """Images listed in a csv -> (``transform(uint8 (3, H, W))``, label or -1)."""

    def __init__(self, csv_path: PathLike, image_dir: PathLike, transform: Optional[Callable] = None,
                 num_classes: Optional[int] = None, require_labels: bool = True, strict: bool = False) -> None:
        self.rows = read_image_csv(csv_path, num_classes)
        self.image_dir = Path(image_dir)
        if not self.image_dir.is_dir():
            raise FileNotFoundError("image folder not found: {}".format(self.image_dir))
        missing = [r.path for r in self.rows if not (self.image_dir / r.path).is_file()]
        if missing:
            raise FileNotFoundError("{} file(s) listed in {} are not in {}, e.g. {}".format(
                len(missing), csv_path, self.image_dir, ", ".join(missing[:5])))
        if require_labels:
            unlabeled = [r.line for r in self.rows if r.label is None]
            if unlabeled:
                raise ValueError("csv {} has rows without a label (lines {}); training and probing need "
                                 "labels".format(csv_path, unlabeled[:5]))
        keep = verify_items([self.image_dir / r.path for r in self.rows], read_rgb,
                            what="images listed in {}".format(csv_path), strict=strict)
        self.rows = [self.rows[i] for i in keep]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def labels(self) -> List[int]:
        """Labels in row order (-1 where unlabeled)."""
        return [-1 if r.label is None else r.label for r in self.rows]

    def __getitem__(self, index: int):
        row = self.rows[index]
        image = to_chw_uint8(read_rgb(self.image_dir / row.path))
        if self.transform is not None:
            image = self.transform(image)
        return image, -1 if row.label is None else row.label


def file_list_key(files: Sequence[Path]) -> str:
    """sha256 of the sorted (name, byte size) list: changes when a file is added, removed, renamed or resized."""
    digest = hashlib.sha256()
    for path in sorted(files, key=lambda p: p.name):
        digest.update("{}\t{}\n".format(path.name, path.stat().st_size).encode("utf-8"))
    return digest.hexdigest()


class InMemoryImages(torch.utils.data.Dataset):
    """Every image of a folder decoded once into one uint8 tensor (N, 3, H, W); item i is its (3, H, W) view.

    All images must have one size (Mini-ImageNet: 84x84), else a ValueError names the first file that differs.
    ``cache_path`` (e.g. ``mini_train.npy``) keeps the decoded array on disk: it is reused while the folder's
    sorted file list (names and byte sizes) is unchanged, and rewritten otherwise; the key lives in
    ``<cache_path>.json``, written before the array as "being written" and completed after it, so an interrupted
    write is never mistaken for a valid cache; a file at ``cache_path`` without that key beside it (a user's .npy,
    a csv given by a slip) is not ours: refused before decoding, left as it is.
    """

    def __init__(self, folder: PathLike, cache_path: Optional[PathLike] = None,
                 transform: Optional[Callable] = None, max_images: Optional[int] = None,
                 workers: Optional[int] = None, files: Optional[Sequence[PathLike]] = None) -> None:
        self.folder = Path(folder)
        # ``files``: an already checked list (e.g. UnlabeledImages' after its pre-flight check), else the folder's
        files = [Path(f) for f in files] if files is not None else list_images(self.folder)
        self.files = files[:max_images] if max_images is not None else files
        self.transform = transform
        self.cache_path = Path(cache_path) if cache_path is not None else None
        self.from_cache = False
        key = file_list_key(self.files)
        array = self._load_cache(key) if self.cache_path is not None else None
        if array is None and self.cache_path is not None:  # before decoding: a file that is not our cache stays
            check_target(self.cache_path, "image cache", ours=self._is_cache)
            check_target(self._key_path(), "image cache key", ours=self._is_cache_key)
        if array is None:
            array = self._decode(workers)
            if self.cache_path is not None:
                self._save_cache(array, key)
        else:
            self.from_cache = True
        self.images = torch.from_numpy(array)

    def _decode(self, workers: Optional[int]) -> np.ndarray:
        """Decode every file (PIL releases the GIL, so threads help), checking that sizes agree."""
        workers = workers if workers is not None else min(8, os.cpu_count() or 1)
        array = None  # type: Optional[np.ndarray]
        first = None  # type: Optional[Tuple[Path, Tuple[int, ...]]]
        chunk = 256  # bounded work in flight: an error surfaces without decoding the rest of the folder
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for offset in range(0, len(self.files), chunk):
                names = self.files[offset:offset + chunk]
                for index, (path, rgb) in enumerate(zip(names, pool.map(read_rgb, names)), start=offset):
                    if first is None:
                        first = (path, rgb.shape)
                        array = np.empty((len(self.files), 3) + rgb.shape[:2], dtype=np.uint8)
                    elif rgb.shape != first[1]:
                        raise ValueError("image {} is {}x{} but {} is {}x{}: InMemoryImages needs images of one "
                                         "size (use UnlabeledImages with a transform for mixed sizes)".format(
                                             path, rgb.shape[1], rgb.shape[0], first[0].name, first[1][1],
                                             first[1][0]))
                    array[index] = rgb.transpose(2, 0, 1)
        assert array is not None  # list_images never returns an empty list
        return array

    def _key_path(self) -> Path:
        assert self.cache_path is not None
        return Path(str(self.cache_path) + ".json")

    def _is_cache_key(self, path: Path) -> bool:
        try:
            with open(str(path), encoding="utf-8") as f:
                meta = json.load(f)
        except (OSError, ValueError):
            return False
        return isinstance(meta, dict) and {"key", "count", "shape", "folder"} <= set(meta)

    def _is_cache(self, path: Path) -> bool:
        """An existing file at ``cache_path`` may be replaced only with our key file beside it (a user's .npy, a
        csv given by a slip, have none)."""
        return self._is_cache_key(self._key_path())

    def _load_cache(self, key: str) -> Optional[np.ndarray]:
        """The cached array when its key matches this file list, else None (also for a damaged cache)."""
        key_path = self._key_path()
        if not key_path.is_file() or not self.cache_path.is_file():
            return None
        try:
            with open(key_path) as f:
                meta = json.load(f)
            if meta.get("key") != key or meta.get("count") != len(self.files):
                return None
            array = np.load(str(self.cache_path), allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None
        if array.dtype != np.uint8 or array.ndim != 4 or array.shape[0] != len(self.files) or array.shape[1] != 3 \
                or list(array.shape) != meta.get("shape"):
            return None
        return array

    def _save_cache(self, array: np.ndarray, key: str) -> None:
        """Array first, key last: a crash in between leaves no key, hence no stale cache."""
        key_path = self._key_path()
        meta = {"key": None, "count": None, "shape": None, "folder": str(self.folder)}  # being written: matches none
        write_text(key_path, json.dumps(meta), "image cache key", ours=self._is_cache_key)
        write_atomic(self.cache_path, lambda f: np.save(f, array, allow_pickle=False), "image cache",
                     ours=self._is_cache)
        meta.update(key=key, count=len(self.files), shape=list(array.shape))
        write_text(key_path, json.dumps(meta), "image cache key", ours=self._is_cache_key)

    @property
    def nbytes(self) -> int:
        """Memory held by the decoded images: N * 3 * H * W bytes."""
        return int(self.images.numel())

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int):
        image = self.images[index]
        return self.transform(image) if self.transform is not None else image


def training_files(dataset: torch.utils.data.Dataset) -> Tuple[Path, List[str]]:
    """(folder, sorted names of its items relative to it) of a training set: one name per item (a p2 pair by its
    ``_sat.jpg``, a csv row by its filename, an unlabeled image by its file)."""
    if isinstance(dataset, SegmentationDataset):
        folder, names = dataset.folder, [image.name for image, _ in dataset.pairs]
    elif isinstance(dataset, CsvImages):
        folder, names = dataset.image_dir, [row.filename for row in dataset.rows]
    elif isinstance(dataset, (UnlabeledImages, InMemoryImages)):
        folder = dataset.folder
        names = [Path(os.path.relpath(str(path), str(folder))).as_posix() for path in dataset.files]
    else:
        raise TypeError("no file list for a {}".format(type(dataset).__name__))
    return folder, sorted(names)


def data_record(dataset: torch.utils.data.Dataset) -> Dict[str, Any]:
    """Where a run's training data came from and which they were: the resolved folder, whether
    ``python -m tools.toydata`` generated it (recorded at training time: the folder may later move), the item count
    and the sha256 of the sorted relative names (names only: cheap for 40k images), plus those names (``files``,
    one per line) so that a resume on other data can say which changed."""
    from tools.toydata.output import is_generated

    folder, names = training_files(dataset)
    text = "\n".join(names)
    return {"root": str(folder.resolve()), "generated": bool(is_generated(folder)), "count": len(names),
            "fingerprint": hashlib.sha256(text.encode("utf-8")).hexdigest(), "files": text}


def data_changes(saved: Dict[str, Any], now: Dict[str, Any], shown: int = 3) -> str:
    """'N removed (a, b, c, ...), M added (...)': how the file list ``now`` differs from ``saved``'s."""
    old, new = set(filter(None, saved.get("files", "").split("\n"))), set(filter(None, now["files"].split("\n")))
    parts = []
    for what, names in (("removed", sorted(old - new)), ("added", sorted(new - old))):
        if names:
            parts.append("{} {} ({}{})".format(len(names), what, ", ".join(names[:shown]),
                                               ", ..." if len(names) > shown else ""))
    return ", ".join(parts) or "{} files then, {} now".format(saved.get("count"), now["count"])
