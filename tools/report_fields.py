"""The files of ``tools.report``: the run files it reads, with every field's type checked in one place, and the
figures it writes (``Figures``: into REPORT_DIR/figures, listed there so that a rerun deletes only those).

``read_json(path)`` gives a run file's JSON object as ``Fields``; ``Fields.get_as(key, kind)`` is a field of the
expected kind (None when absent or null), or a one-line ValueError naming the file and the field, which
``python -m tools.report`` prints as ``error: ...`` (exit 2) instead of a traceback. ``data_generated`` says
which data a run was trained on: its results.json's "data" record first, the data folder itself second.
"""
import json
import math
import os
from pathlib import Path
from typing import Any, Dict, List, Optional

from tools.toydata import is_generated
from utils.fileio import OwnedFolder, write_atomic
from utils.runlog import read_jsonl


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) or isinstance(value, float) and value.is_integer()


KINDS = {  # kind -> (test, what the error message says was expected)
    "str": (lambda v: isinstance(v, str), "a string"),
    "int": (_integer, "an integer"),
    "number": (_number, "a number"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "numbers": (lambda v: isinstance(v, list) and all(x is None or _number(x) for x in v), "a list of numbers"),
    "ints": (lambda v: isinstance(v, list) and all(_integer(x) for x in v), "a list of integers"),
    "dict": (lambda v: isinstance(v, dict), "an object"),
    "dicts": (lambda v: isinstance(v, list) and all(isinstance(x, dict) for x in v), "a list of objects"),
}
JSON_NAMES = {str: "a string", bool: "true/false", int: "a number", float: "a number", list: "a list",
              dict: "an object"}


class Fields(dict):
    """A JSON object from a run file that remembers the file (and where in it, for nested objects)."""

    def __init__(self, value: Dict[str, Any], path: Any, prefix: str = "") -> None:
        super().__init__(value)
        self.path, self.prefix = path, prefix

    def get_as(self, key: str, kind: str, default: Any = None) -> Any:
        """The field ``key`` if it is of ``kind`` (see KINDS), ``default`` when absent or null; a ValueError naming
        the file and the field otherwise. An object comes back as Fields, a list of objects as a list of them."""
        value = self.get(key)
        if value is None:
            return default
        test, wanted = KINDS[kind]
        if not test(value):
            shown = json.dumps(value)
            raise ValueError("{}: field '{}{}' is {} ({}), not {}: correct it or run again what wrote it".format(
                self.path, self.prefix, key, JSON_NAMES.get(type(value), type(value).__name__),
                shown if len(shown) <= 40 else shown[:37] + "...", wanted))
        if kind == "dict":
            return Fields(value, self.path, "{}{}.".format(self.prefix, key))
        if kind == "dicts":
            return [Fields(v, self.path, "{}{}[{}].".format(self.prefix, key, i)) for i, v in enumerate(value)]
        return int(value) if kind == "int" else [int(v) for v in value] if kind == "ints" else value


def as_fields(value: Any, what: str) -> Fields:
    """``value`` as Fields (a plain dict passed to a public helper is named ``what`` in errors)."""
    if isinstance(value, Fields):
        return value
    if not isinstance(value, dict):
        raise ValueError("{} is {}, not an object".format(what, JSON_NAMES.get(type(value), type(value).__name__)))
    return Fields(value, what)


def read_json(path: Path, or_empty: bool = False) -> Optional[Fields]:
    """The JSON object in ``path`` (None when there is no file, or no fields with ``or_empty``); a ValueError naming
    the file when it is not valid JSON or holds something else than an object (a list, a number), which is not
    what a run writes."""
    if not path.is_file():
        return Fields({}, path) if or_empty else None
    try:
        with open(path) as f:
            value = json.load(f)
    except ValueError as e:
        raise ValueError("{} is not valid JSON: {}".format(path, e))
    if not isinstance(value, dict):
        raise ValueError("{} holds a JSON {}, not the object (dict) a run writes".format(path, type(value).__name__))
    return Fields(value, path)


def read_log(path: Path) -> List[Fields]:
    """The records of a log.jsonl ([] when there is none); lines that are not objects are skipped like torn ones."""
    if not path.is_file():
        return []
    return [Fields(r, path, "line {}: ".format(i + 1)) for i, r in enumerate(read_jsonl(path)) if isinstance(r, dict)]


def positive_log(value: Optional[float]) -> Optional[float]:
    """ln(value), None for None or a value that has none (0, negative)."""
    return math.log(value) if value is not None and value > 0 else None


def data_generated(record: Optional[Fields], data_path: Optional[str]) -> Optional[bool]:
    """True when a run's data were generated by ``tools.toydata``, False when not, None when nothing can tell.
    The run's own record decides (``"data": {"root", "generated", "count", "fingerprint"}`` in results.json, written
    when it trained); without it, the data folder (``data_path``, else the record's root): generated when it or
    a folder above holds tools.toydata's marker, the course's when it exists without one; a folder moved or
    deleted since is unknown, never taken for the course's data."""
    data = record.get_as("data", "dict") if record is not None else None
    if data is not None:
        generated = data.get_as("generated", "bool")
        if generated is not None:
            return generated
        data_path = data_path or data.get_as("root", "str")
    if data_path and (is_generated(data_path) or Path(data_path).exists()):
        return is_generated(data_path)  # (a path inside a generated folder that has it no more: generated)
    return None


FIGURES_MARKER = ".written_by_report.txt"  # in figures/: the figures a rerun may delete


def shown_path(path: Any, report_dir: Path) -> str:
    """A path as REPORT.md shows it: relative to the report's folder, so the report names no folder of the machine
    that wrote it and each path works from REPORT.md. A relative path recorded in a run's JSON is shown as recorded
    (the folder it was relative to is not known); one on another drive (Windows) stays absolute."""
    if not os.path.isabs(str(path)) and not isinstance(path, Path):
        return str(path)
    try:
        return Path(os.path.relpath(os.path.abspath(str(path)), os.path.abspath(str(report_dir)))).as_posix()
    except ValueError:
        return str(path)


class Figures:
    """Copies figures into REPORT_DIR/figures and returns their markdown links (relative to REPORT.md)."""

    def __init__(self, report_dir: Path) -> None:
        self.report_dir = report_dir
        self.folder = report_dir / "figures"
        self.owned = None  # type: Optional[OwnedFolder]

    def clear(self) -> None:
        """Delete the figures an earlier report listed in figures/ (nothing else: a folder without that list is
        refused), so that the new report never mixes in old figures."""
        if self.folder.exists() or self.folder.is_symlink():
            self._owned().remove()

    def _owned(self) -> OwnedFolder:
        if self.owned is None:
            self.owned = OwnedFolder(self.folder, FIGURES_MARKER, "tools.report")
        return self.owned

    def _write(self, name: str, write: Any) -> None:
        write_atomic(self._owned().add(self.folder / name), write, "figure", ours=lambda p: True)  # add checked it

    def shown(self, path: Any) -> str:
        """``path`` as the report shows it (relative to the report's folder)."""
        return shown_path(path, self.report_dir)

    def link(self, source: Path, name: str, caption: str) -> str:
        if not source.is_file():
            return "_(figure not found: {})_".format(self.shown(source))
        data = source.read_bytes()
        self._write(name, lambda f: f.write(data))
        return "![{}](figures/{})\n\n*{}*".format(caption, name, caption)

    def save(self, fig: Any, name: str, caption: str) -> str:
        """Save a figure drawn from the runs' numbers as figures/NAME, close it, and return its link."""
        import matplotlib.pyplot as plt

        try:
            self._write(name, lambda f: fig.savefig(f, format="png", dpi=100))
        finally:
            plt.close(fig)
        return "![{}](figures/{})\n\n*{}*".format(caption, name, caption)
