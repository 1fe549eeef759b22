"""File io for the grading path: outputs written atomically with errors that name the file.

Standard library only at import (``utils.masks`` imports it and stays free of torch).
"""
import errno
import os
import stat
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, List, Optional, Union

PathLike = Union[str, Path]

# What each kind of file this project writes starts with (after blanks and a BOM): an existing file at a path we are
# about to write is replaced only when it starts so (or is empty), i.e. when it can be a file of ours.
_ZIP = b"PK\x03\x04"  # torch.save's and numpy's .npz container
SIGNATURES = {".png": b"\x89PNG\r\n\x1a\n", ".pth": _ZIP, ".pt": _ZIP, ".npz": _ZIP, ".npy": b"\x93NUMPY", ".json": b"{",
              ".jsonl": b"{"}


class NotOurs(ValueError):
    """A write or a delete that would replace, remove or reach through something this project did not make."""


def _head(path: Path, size: int) -> bytes:
    with open(str(path), "rb") as f:
        return f.read(size).lstrip(b" \t\r\n").replace(b"\xef\xbb\xbf", b"", 1)


def starts_as_ours(path: Path, signature: Optional[bytes] = None) -> bool:
    """Whether the regular file ``path`` is empty or starts with ``signature`` (default: its suffix's SIGNATURES)."""
    expected = signature if signature is not None else SIGNATURES.get(path.suffix.lower())
    if path.stat().st_size == 0:
        return True
    return expected is not None and _head(path, len(expected) + 16).startswith(expected)


def check_target(path: PathLike, what: str, signature: Optional[bytes] = None, inputs: Iterable[PathLike] = (),
                 root: Optional[PathLike] = None, ours: Optional[Callable[[Path], bool]] = None) -> Path:
    """Refuse (NotOurs, naming ``path``) to write ``path`` when it would replace a file this project did not make:

    - a file that is one of ``inputs`` (the command's own csv, images, checkpoint, data; compared as files, so a
      link or another spelling of the same file counts);
    - a folder between ``root`` (the folder the writer owns; it may itself be a link) and ``path`` that is a
      symlink: writing there would reach outside that folder;
    - an existing non-empty regular file that does not start with ``signature`` (default: by suffix, SIGNATURES),
      or that ``ours(path)`` rejects; a suffix without a signature and no ``ours`` means any such file is refused.

    A symlink at ``path`` itself is fine: the atomic write replaces the link, never its target. Returns ``path``."""
    path = Path(path)
    for item in inputs:
        try:
            if path.exists() and os.path.samefile(str(path), str(item)):
                raise NotOurs("refusing to write {} {}: it is an input of this command ({}); give another path"
                              .format(what, path, item))
        except OSError:  # an input that does not exist (yet) cannot be overwritten
            continue
    if root is not None:
        root = Path(root)
        try:
            inner = path.parent.relative_to(root)
        except ValueError:
            raise NotOurs("refusing to write {} {}: it is outside {}".format(what, path, root)) from None
        folder = root
        for part in inner.parts:
            folder = folder / part
            if folder.is_symlink():
                raise NotOurs("refusing to write {} {}: {} is a symbolic link (to {}), and writing through it would "
                              "change files outside {}; remove the link or give another folder".format(
                                  what, path, folder, os.readlink(str(folder)), root))
    if path.is_symlink() or not path.exists():
        return path
    if path.is_dir():
        raise NotOurs("refusing to write {} {}: a folder is there".format(what, path))
    if not path.is_file():
        raise NotOurs("refusing to write {} {}: it is not a regular file".format(what, path))
    if path.stat().st_size == 0:
        return path
    expected = signature if signature is not None else SIGNATURES.get(path.suffix.lower())
    if not (ours(path) if ours is not None else starts_as_ours(path, signature)):
        raise NotOurs("refusing to replace {}: it is not a {} this project wrote{}; move it away or give another path"
                      .format(path, what, " (it does not start with {!r})".format(expected) if expected else ""))
    return path


def refuse_symlink_loop(path: Path, what: str) -> None:
    """A ValueError naming ``path`` when it (or a folder on the way) is a symlink loop: pathlib would raise a
    RuntimeError deep inside ``resolve``."""
    try:
        os.stat(str(path))
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ValueError("{} {} is a symlink loop: remove the link or give another path".format(
                what, path)) from None


def make_folder(path: PathLike, what: str = "output folder") -> Path:
    """``mkdir -p`` with one-line errors naming ``path``: a dangling symlink there (mkdir says only "[Errno 17] File
    exists"), a file in the way, no permission."""
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise NotOurs("{} {} is a symbolic link to {}, which does not exist (or loops); remove the link or give "
                      "another folder".format(what, path, os.readlink(str(path))))
    if path.exists() and not path.is_dir():
        raise NotOurs("{} {} exists and is not a folder".format(what, path))
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(exc.errno, "cannot create {} {}: {}".format(what, path, exc.strerror or exc)) from None
    return path


def write_atomic(path: PathLike, write: Callable[[Any], None], what: str, text: bool = False,
                 signature: Optional[bytes] = None, inputs: Iterable[PathLike] = (), root: Optional[PathLike] = None,
                 ours: Optional[Callable[[Path], bool]] = None) -> None:
    """The one way this project writes a file: ``check_target`` (never replace, or reach through a link to, a file
    it did not make), then ``utils.checkpoint.atomic_write`` (temp file in the same folder, fsync, ``os.replace``: a
    symlink at ``path`` is replaced, never followed; a failed write leaves the previous file whole and no temp file),
    with an OSError that names ``path`` (a full disk says only "[Errno 28] No space left on device")."""
    from utils.checkpoint import atomic_write  # lazily: it imports torch

    check_target(path, what, signature=signature, inputs=inputs, root=root, ours=ours)
    try:
        atomic_write(path, write, text=text)
    except OSError as exc:
        if exc.errno is None and str(path) in str(exc):  # already says which file
            raise
        raise OSError(exc.errno, "cannot write {} {}: {}".format(what, path, exc.strerror or exc)) from None


def write_text(path: PathLike, text: str, what: str, **check: Any) -> None:
    """``write_atomic`` of a UTF-8 text (``check``: check_target's keywords)."""
    write_atomic(path, lambda f: f.write(text), what, text=True, **check)


def save_figure(fig: Any, path: PathLike, what: str = "figure", dpi: int = 100, **check: Any) -> None:
    """A matplotlib figure as a PNG through ``write_atomic``."""
    write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=dpi), what, **check)


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


class OwnedFolder(object):
    """A folder a tool owns by the list of what it wrote, kept in a marker file inside it: writes and deletes go by
    that list, so a rerun never removes or replaces anything else (the course's data, a user's files).

    The folder must be new, empty, or hold the marker with its list (written first, each file listed before it is
    written); anything else -- a file, a non-empty folder without the list -- is NotOurs before anything is written.
    ``add`` checks each path (``check_target``: inside the folder, no symlinked folder on the way, an existing file
    only if listed); ``remove`` deletes listed files only, never through a symlinked folder."""

    def __init__(self, root: PathLike, marker: str, owner: str, note: str = "") -> None:
        self.root, self.owner = Path(root), owner
        self.marker = self.root / marker
        self.header = "Files written by {}, relative to this folder (a rerun deletes these and only these):".format(
            owner)
        self.note = note
        self.files = []  # type: List[str]
        if self.root.exists() and not self.root.is_dir():
            raise NotOurs("{} is an existing file; give a new or empty folder".format(self.root))
        if self.root.is_dir() and any(self.root.iterdir()):
            try:
                lines = self.marker.read_text(encoding="utf-8").splitlines() if self.marker.is_file() else []
            except (OSError, ValueError):
                lines = []
            if self.header not in lines:
                raise NotOurs("{} is not empty and holds no list of files written by {} ({}): refusing to write into "
                              "it (it may be real data); give a new or empty folder".format(
                                  self.root, owner, self.marker.name))
            self.files = [f for f in lines[lines.index(self.header) + 1:] if f]
        make_folder(self.root, "folder")
        self._save()

    def _save(self) -> None:
        write_text(self.marker, "\n".join(([self.note] if self.note else []) + [self.header] + self.files) + "\n",
                   "list of files", ours=lambda p: True)

    def _inside(self, name: str) -> Optional[Path]:
        rel = Path(name)
        if rel.is_absolute() or ".." in rel.parts:
            return None
        check_target(self.root / rel, "file", root=self.root, ours=lambda p: True)  # no symlinked folder on the way
        return self.root / rel

    def remove(self, part: str = "") -> None:
        """Delete the listed files (only those under PART when given); a symlinked folder on the way is NotOurs."""
        keep = []
        for name in self.files:
            if part and Path(name).parts[:1] != (part,):
                keep.append(name)
                continue
            path = self._inside(name)
            if path is not None and (path.is_file() or path.is_symlink()):
                path.unlink()
        self.files = keep
        self._save()

    def add(self, path: PathLike) -> Path:
        """List ``path`` (inside the folder) in the marker before the caller writes it; returns ``path``."""
        path = Path(path)
        name = path.relative_to(self.root).as_posix()
        check_target(path, "file", root=self.root, ours=lambda p: name in self.files)
        if name not in self.files:
            self.files.append(name)
            with open(str(self.marker), "a", encoding="utf-8") as f:
                f.write(name + "\n")
        return path
