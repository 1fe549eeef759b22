"""File io for the grading path: outputs written atomically with errors that name the file.

Standard library only at import (``utils.masks`` imports it and stays free of torch).
"""
import os
import stat
from pathlib import Path
from typing import Any, BinaryIO, Callable, Union

PathLike = Union[str, Path]


def write_atomic(path: PathLike, write: Callable[[Any], None], what: str, text: bool = False) -> None:
    """``utils.checkpoint.atomic_write`` (temp file in the same folder, fsync, ``os.replace``: a symlink at
    ``path`` is replaced, never followed; a failed write leaves the previous file whole and no temp file), with
    an OSError that names ``path`` (a full disk says only "[Errno 28] No space left on device")."""
    from utils.checkpoint import atomic_write  # lazily: it imports torch

    try:
        atomic_write(path, write, text=text)
    except OSError as exc:
        raise OSError(exc.errno, "cannot write {} {}: {}".format(what, path, exc.strerror or exc)) from None


_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def open_regular(path: PathLike, what: str) -> BinaryIO:
    """Open ``path`` for binary reading if it is a regular file (symlinks followed); anything else -- a FIFO, a
    device, a folder named like an image -- is a ValueError naming it, a missing file a FileNotFoundError
    '<what> not found: <path>'. The open never blocks: it is non-blocking (a FIFO without a writer would otherwise
    hang the reader forever), and the type is checked on the open file."""
    try:
        fd = os.open(str(path), os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise FileNotFoundError("{} not found: {}".format(what, path)) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
            raise ValueError("{} is {}, not a regular file".format(path, kind))
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
