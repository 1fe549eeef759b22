"""The data archive's unpack for ``bash hw1_download.sh --data`` (tools/download.py): into a staging folder beside
the target, checked against the archive, with a completeness record written last, then renamed into place whole.

The record (``RECORD`` in the unpacked folder) lists every file the archive held with its size: a folder is "already
present" only while each of them is there with that size, so a folder left by a full disk or a kill (a 0-byte
image, a missing p2_data/train) is never taken for a whole one. A folder without a record (unpacked by hand) is
never deleted: it is compared with the archive beside it, or the error says what to do.
"""
import os
import shutil
import zipfile
from typing import List, Optional, Tuple

from tools.download import DATA_PARTS, DownloadError, staging_folder, unpack_archive

RECORD = "UNPACKED_BY_HW1_DOWNLOAD.txt"


def archive_files(archive: str) -> Tuple[List[Tuple[str, int]], str]:
    """([(path, size)] of every file in a zip, relative to the folder it unpacks into, and the one top folder that
    is stripped, '' if none (the course zips its folder, data_2025/, itself)."""
    with zipfile.ZipFile(archive) as zf:
        infos = [info for info in zf.infolist() if not info.filename.startswith("__MACOSX/")]  # macOS's zip
    names = [info.filename.replace("\\", "/") for info in infos]
    tops = {name.split("/")[0] for name in names}
    top = tops.pop() if len(tops) == 1 else ""
    if top in DATA_PARTS or not all(name.startswith(top + "/") for name in names):
        top = ""
    cut = len(top) + 1 if top else 0
    return [(name[cut:], info.file_size) for name, info in zip(names, infos) if not info.is_dir() and name[cut:]], top


def missing_files(folder: str, files: List[Tuple[str, int]]) -> Optional[str]:
    """What is wrong with ``folder`` against ``files`` [(relative path, size)] (None: each is there, that size)."""
    wrong = []
    for path, size in files:
        try:
            actual = os.stat(os.path.join(folder, *path.split("/"))).st_size
        except OSError:
            wrong.append(f"{path} is missing")
            continue
        if actual != size:
            wrong.append(f"{path} has {actual} bytes, not {size}")
    more = f" (and {len(wrong) - 1} more of its {len(files)} files)" if len(wrong) > 1 else ""
    return wrong[0] + more if wrong else None


def read_record(folder: str) -> Optional[List[Tuple[str, int]]]:
    """The files listed in ``folder``'s completeness record, None without one; a damaged record lists a file that
    cannot be there, so the folder is never taken as whole."""
    try:
        with open(os.path.join(folder, RECORD), encoding="utf-8") as f:
            lines = [line.rstrip("\n") for line in f if line.strip() and not line.startswith("#")]
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError):
        lines = []
    try:
        listed = [(path, int(size)) for size, path in (line.split("\t", 1) for line in lines)]
    except ValueError:
        listed = []
    return listed or [(RECORD + " (empty or damaged: a whole record)", -1)]


def write_record(folder: str, files: List[Tuple[str, int]], archive: str) -> None:
    """Write ``folder``'s completeness record: every file ``archive`` held, with its size."""
    from utils.fileio import write_atomic  # lazily: only an unpack needs it

    text = (f"# written last by `bash hw1_download.sh` when {os.path.basename(archive)} was unpacked here: each of "
            f"its {len(files)} files with its size in bytes.\n# 'ok (already present)' only while every one is here "
            f"with that size; do not edit.\n" + "".join(f"{size}\t{path}\n" for path, size in files))
    write_atomic(os.path.join(folder, RECORD), lambda f: f.write(text), "the completeness record", text=True,
                 signature=text[:16].encode())  # an earlier record of ours starts alike


def data_present(target: str, archive: str, flag: str, force: bool) -> Tuple[bool, str]:
    """The status of a data folder already there (never changed but for a record written after a check against
    the archive); DownloadError saying what to do when it is not known to be whole."""
    name, again = os.path.basename(target), f"`bash hw1_download.sh {flag}`"
    recorded = read_record(target)
    if recorded is None and zipfile.is_zipfile(archive) and not force:  # unpacked by hand: the archive says
        files = archive_files(archive)[0]
        problem = missing_files(target, files)
        if problem is None:
            write_record(target, files, archive)
            return True, f"ok (already present; checked against {name}.zip and recorded)"
        raise DownloadError(f"{target} (unpacked without a record) differs from {archive}: {problem}; it was kept: "
                            f"move it away (`mv {name} {name}.old`) and rerun {again}")
    if recorded is None:
        raise DownloadError(f"{target} has no completeness record ({RECORD}: unpacked by hand or by an older "
                            f"hw1_download.sh), so nothing says it is whole; it was kept. Put {name}.zip beside it "
                            f"and rerun {again} to check it against the archive, or move it away (`mv {name} "
                            f"{name}.old`) and rerun {again}")
    problem = missing_files(target, recorded)
    if problem:
        raise DownloadError(f"{target} is incomplete: {problem} (its {RECORD} lists what the archive held); it was "
                            f"kept: move it away (`mv {name} {name}.incomplete`) and rerun {again} (it unpacks "
                            f"{name}.zip again)")
    if force:
        raise DownloadError(f"{target} is there and --force would unpack the archive again: move it away (an unpack "
                            f"never overwrites) and rerun {again}")
    return True, "ok (already present; every file its record lists is there, whole)"


def unpack_whole(archive: str, target: str) -> int:
    """Unpack ``archive`` into a staging folder beside ``target``, check it holds every file and DATA_PARTS, write
    the completeness record last, then rename it to ``target`` in one step; return the number of files."""
    root = os.path.dirname(target)
    staging = staging_folder(root, os.path.basename(target))
    try:
        try:
            unpack_archive(archive, os.path.join(staging, "unpacked"))
        except OSError as exc:  # a full disk: "[Errno 28] No space left on device" names no path
            raise OSError(exc.errno, f"cannot unpack {archive} into {staging}: {exc.strerror or exc}") from None
        files, top = archive_files(archive)
        inner = os.path.join(staging, "unpacked", top)
        missing = [part for part in DATA_PARTS if not os.path.isdir(os.path.join(inner, part))]
        if missing:
            raise DownloadError(f"{archive} does not contain {' and '.join(missing)} (found: "
                                f"{sorted(os.listdir(inner)) or 'nothing'})")
        problem = missing_files(inner, files)
        if problem:
            raise DownloadError(f"{archive} was not unpacked whole: {problem}")
        write_record(inner, files, archive)
        os.rename(inner, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return len(files)
