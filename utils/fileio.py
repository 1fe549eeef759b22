"""File io for the grading path: outputs written atomically with errors that name the file.

Standard library only at import (``utils.masks`` imports it and stays free of torch).
"""
from pathlib import Path
from typing import Any, Callable, Union

PathLike = Union[str, Path]


def write_atomic(path: PathLike, write: Callable[[Any], None], what: str = "file", text: bool = False) -> None:
    """``utils.checkpoint.atomic_write`` (temp file in the same folder, fsync, ``os.replace``: a symlink at
    ``path`` is replaced, never followed; a failed write leaves the previous file whole and no temp file), with
    an OSError that names ``path`` (a full disk says only "[Errno 28] No space left on device")."""
    from utils.checkpoint import atomic_write  # lazily: it imports torch

    try:
        atomic_write(path, write, text=text)
    except OSError as exc:
        raise OSError(exc.errno, "cannot write {} {}: {}".format(what, path, exc.strerror or exc)) from None
