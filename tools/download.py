"""Fetch what the grading scripts need (checkpoints/manifest.csv) and, on request, the course data; never trains.

    bash hw1_download_ckpt.sh             # what the TAs run: the graded checkpoints, each from its link
    bash hw1_download.sh                  # the same for a student (a file already here without a link is fine)
    bash hw1_download.sh --data           # + the course's 2025 archive (Google Drive), unpacked into data_2025/
    bash hw1_download.sh --dino-official  # + DINO's public ResNet-50 as checkpoints/official_dino_model.pth (B/D)

gdown fetches every link (Google Drive in any form, past its virus-scan page; Dropbox, as dl=1; plain https). Ours
around it: the manifest, a proof before anything is installed (a grading row's sha256, which is required; a file
without one must be a whole torch file, the data a whole zip), a deadline per file, an atomic install, safe
unpacking into a staging folder swapped in whole with a record of what it holds, messages.
"""
import argparse
import contextlib
import csv
import hashlib
import inspect
import ipaddress
import json
import math
import os
import posixpath
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import urllib.parse
import zipfile
from typing import Iterator, List, NamedTuple, Optional, Sequence, Tuple

from utils.signals import Interrupted, interruptible

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MANIFEST = os.path.join(REPO_ROOT, "checkpoints", "manifest.csv")
MANIFEST_HEADER = ["group", "url", "sha256", "destination"]
GRADING_GROUP, DINO_GROUP = "grading", "dino-official"
SUBMITTING_SECTION = 'docs/submitting.md'
DRIVE_HOSTS = ("drive.google.com", "docs.google.com", "drive.usercontent.google.com")
USER_AGENT = "hw1-download/2.0 (gdown)"  # for other hosts; Drive gets gdown's own (a browser's)
RETRY_WAITS = (1.0, 2.0)  # seconds before the 2nd and the 3rd attempt after a network error
CHUNK_SIZE = 1 << 20
DEADLINE = 3600.0  # seconds per file (--deadline): a 1 GB archive at 300 kB/s; a server that stalls never ends alone
MAX_LINE = 8192  # characters in a manifest line: a share link is a few hundred
GRADED = ("checkpoints/p1_best.pth", "checkpoints/p2_best.pth")  # what hw1_1.sh and hw1_2.sh load
LEGACY_TORCH = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19"  # torch.save's magic number before the zip format
PAGE_STARTS = ("<!doctype html", "<html", "<head", "<!--", "<meta", "<body", "<?xml", "<title", "<script")
DATA = {"--data": ("1yt4CP2msqY2HSYCy67mQrWUtTPQRgcBF", "data_2025", "the course's 2025 data"),  # file id, folder
        "--data-2024": ("1x77fyA9BONMHnQXhvxP-87hFTCFwGm9a", "hw1_data", "the 2024 edition's data (not 2025's)")}
DATA_PARTS = ("p1_data", "p2_data")
ManifestEntry = NamedTuple("ManifestEntry", [("group", str), ("url", str), ("sha256", str), ("destination", str),
                                             ("line", int)])


class DownloadError(RuntimeError):
    """A file could not be fetched or failed verification; the message says which and why."""


class ManifestError(ValueError):
    """checkpoints/manifest.csv is malformed; the message names the file and line."""


class UnsafeArchiveError(ValueError):
    """A zip entry would be written outside the target folder (zip-slip): an absolute path or '..'."""


def _warn(message: str) -> None:
    """Print to stderr after what stdout already holds (keeps the order when both go to one pipe)."""
    sys.stdout.flush()
    print(message, file=sys.stderr, flush=True)


def _manifest_lines(path: str, data: Optional[bytes] = None) -> List[Tuple[int, str]]:
    """(line number, text) of the rows of a manifest (``data``, else read from ``path``): UTF-8 with or without a
    BOM; comments and blank lines left out; a line that is not UTF-8, holds a NUL or is over MAX_LINE characters is
    a ManifestError naming it."""
    if data is None:
        with open(path, "rb") as f:
            data = f.read()
    lines = []
    for number, raw in enumerate((data[3:] if data.startswith(b"\xef\xbb\xbf") else data).splitlines(), 1):
        where = f"{path}, line {number}"
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ManifestError(f"{where}: not UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}); save "
                                f"the manifest as UTF-8") from None
        if "\0" in line:
            raise ManifestError(f"{where}: holds a NUL character (column {line.index(chr(0)) + 1}): not a text csv")
        if len(line) > MAX_LINE:
            raise ManifestError(f"{where}: {len(line):,} characters, over the limit of {MAX_LINE:,} (a share link is "
                                f"a few hundred characters)")
        if line.strip() and not line.lstrip().startswith("#"):
            lines.append((number, line))
    return lines


def _check_url(url: str, where: str) -> None:
    """A ManifestError naming ``where`` for a link that cannot be fetched: not http(s), no host, a bad port or IPv6."""
    if not url.lower().startswith(("https://", "http://")):
        raise ManifestError(f"{where}: url must start with https:// or http://, got {url!r}")
    try:
        parts = urllib.parse.urlsplit(url)
        port, host = parts.port, parts.hostname
        if "[" in parts.netloc and host:
            ipaddress.ip_address(host.split("%")[0])
    except ValueError as exc:
        raise ManifestError(f"{where}: url {url!r} is malformed ({exc})") from None
    if not host or port == 0:
        raise ManifestError(f"{where}: url {url!r} has no host" + (" port" if host else ""))


def read_manifest(path: str, data: Optional[bytes] = None) -> List[ManifestEntry]:
    """Parse and validate a manifest csv (``group,url,sha256,destination``; ``#`` lines are comments): the file at
    ``path``, or ``data`` that is to be written there."""
    header, entries = ",".join(MANIFEST_HEADER), []
    numbered = _manifest_lines(path, data)
    rows = []
    for number, line in numbered:
        try:
            rows.append(next(csv.reader([line]), []))
        except csv.Error as exc:
            raise ManifestError(f"{path}, line {number}: not a csv row ({exc})") from None
    if not rows or [cell.strip() for cell in rows[0]] != MANIFEST_HEADER:
        found = f"line {numbered[0][0]}: header is {','.join(rows[0])[:200]!r}" if rows else "empty manifest"
        raise ManifestError(f"{path}, {found}, expected {header!r}")
    for (number, _), row in zip(numbered[1:], rows[1:]):
        where = f"{path}, line {number}"
        if len(row) != len(MANIFEST_HEADER):
            raise ManifestError(f"{where}: {len(row)} fields, expected {len(MANIFEST_HEADER)} ({header})")
        group, url, sha256, destination = (cell.strip() for cell in row)
        parts = destination.replace("\\", "/").split("/")
        if not group:
            raise ManifestError(f"{where}: empty group")
        if url:
            _check_url(url, where)
        if sha256 and not re.fullmatch(r"[0-9a-f]{64}", sha256.lower()):
            raise ManifestError(f"{where}: sha256 must be 64 hex digits (`sha256sum FILE`) or empty, got {sha256!r}")
        if os.path.isabs(destination) or parts[0] == "" or ":" in parts[0] or ".." in parts or not parts[-1]:
            raise ManifestError(f"{where}: destination must be a file path relative to the repository root "
                                f"without '..', got {destination!r}")
        entries.append(ManifestEntry(group, url, sha256.lower(), destination, number))
    return entries


def resolve_link(url: str) -> str:
    """The URL to hand gdown (Dropbox: ``dl=1``; others as published); DownloadError for links that cannot work."""
    parts = urllib.parse.urlsplit(url.strip())
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host:
        raise DownloadError(f"{url}: not an http(s) link")
    if host in DRIVE_HOSTS and "/folders/" in parts.path:
        raise DownloadError(f"{url}: a Google Drive folder link; share the file itself (Share > Copy link)")
    if host in ("www.dropbox.com", "dropbox.com"):
        if parts.path.startswith(("/home", "/preview")) or parts.path in ("", "/"):
            raise DownloadError(f"{url}: not a Dropbox share link (use Share > Copy link on the file)")
        query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True) if k != "dl"]
        return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query + [("dl", "1")])))
    return url.strip()


def sha256_of(path: str) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_SIZE), b""):
            digest.update(chunk)
    return digest.hexdigest()


class _Deadline(BaseException):
    """Raised by SIGALRM inside gdown when a file's deadline passes (a BaseException: no library catches it)."""


@contextlib.contextmanager
def _deadline(seconds: Optional[float]) -> Iterator[None]:
    """Raise _Deadline when ``seconds`` pass (SIGALRM interrupts even a read that waits forever); no limit where
    signals cannot serve (not the main thread, Windows). A timer already set is restored."""
    if not seconds or not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise _Deadline()

    previous, started = signal.signal(signal.SIGALRM, expire), time.monotonic()
    earlier = signal.setitimer(signal.ITIMER_REAL, seconds)[0]
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if earlier:
            signal.setitimer(signal.ITIMER_REAL, max(earlier - (time.monotonic() - started), 0.001))


def _retried(exc: Exception) -> bool:
    """A network error worth a second try: a refused or cut connection, a timeout (not a bad link or redirect)."""
    import requests

    exceptions = requests.exceptions
    if isinstance(exc, (exceptions.InvalidURL, exceptions.InvalidSchema, exceptions.MissingSchema,
                        exceptions.TooManyRedirects)):
        return False
    return isinstance(exc, (exceptions.ConnectionError, exceptions.Timeout, exceptions.ChunkedEncodingError)) or \
        type(exc).__module__.startswith("urllib3")


def _gdown(url: str, output: str, progress: bool, deadline: Optional[float] = DEADLINE) -> None:
    """gdown ``url`` to ``output`` (passing the keyword arguments this gdown knows; 5.0 has no log_messages),
    retrying network errors after RETRY_WAITS, all within ``deadline`` seconds; DownloadError when it fails."""
    try:
        import gdown  # imported here: the manifest tools (tools.publish) work without it
    except ImportError:
        raise DownloadError("gdown is not installed: `pip install -r requirements.txt`") from None
    wanted = {"quiet": not progress, "fuzzy": True, "use_cookies": False, "log_messages": {"start": "", "output": ""},
              "user_agent": None if urllib.parse.urlsplit(url).hostname in DRIVE_HOSTS else USER_AGENT}
    known = inspect.signature(gdown.download).parameters
    try:
        with _deadline(deadline):
            for attempt, wait in enumerate(RETRY_WAITS + (None,), 1):
                sys.stdout.flush()
                try:
                    result = gdown.download(url, output, **{k: v for k, v in wanted.items() if k in known})
                    break
                except Exception as exc:  # gdown's own errors (FileURLRetrievalError; 4.x: RuntimeError), requests'
                    if wait is None or not _retried(exc):
                        why = "a redirect to a link that is not http(s): " if "InvalidSchema" in repr(exc) else ""
                        raise DownloadError(f"gdown could not fetch it (attempt {attempt}): {why}{type(exc).__name__}"
                                            f": {' '.join(str(exc).split())[:600]}") from None
                    _warn(f"  attempt {attempt}: {type(exc).__name__}; retrying in {wait:g} s")
                    time.sleep(wait)
    except _Deadline:
        raise DownloadError(f"timed out after {deadline:g} s (--deadline; the server sends too slowly or not at "
                            f"all)") from None
    if result is None or not os.path.isfile(output):  # gdown 4.x's way to fail
        raise DownloadError("gdown fetched nothing (is it shared with 'Anyone with the link'? over Drive's quota?)")


def _not_the_file(path: str, pinned: bool, kind: str) -> Optional[str]:
    """Why the fetched ``path`` cannot be the file (None: it may be): an empty answer, a web page or JSON error;
    when no sha256 is ``pinned``, a ``kind`` "checkpoint" that is not a whole torch file, an "archive" that is not
    a whole zip."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(1 << 16).decode("utf-8", "replace")
    start = head.lstrip("\ufeff \t\r\n").lower()
    if size == 0:
        return "an empty answer (0 bytes), not the file"
    if start.startswith(PAGE_STARTS):
        title = " ".join((re.findall(r"<title[^>]*>(.*?)</title>", head, re.I | re.S) or ["untitled"])[0].split())
        return (f"an HTML page ({title[:80]!r}), not the file (is the file public? is the link a direct download "
                f"link?)")
    if start.startswith(("{", "[")) and size < (1 << 16):
        try:
            json.loads(head)
            return f"a JSON answer ({' '.join(head.split())[:120]!r}), not the file (an error from the server?)"
        except ValueError:
            pass
    if pinned:
        return None  # the sha256 decides
    try:
        if kind == "checkpoint":
            with open(path, "rb") as f:
                if f.read(len(LEGACY_TORCH)) == LEGACY_TORCH:
                    return None  # torch.save's format before 1.6: nothing more can be checked without loading it
        with zipfile.ZipFile(path) as zf:
            if kind == "checkpoint" and not any(n == "data.pkl" or n.endswith("/data.pkl") for n in zf.namelist()):
                return "a zip archive, not a torch checkpoint (no data.pkl in it)"
            damaged = zf.testzip()
        return f"damaged ({damaged!r} fails its CRC check)" if damaged else None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, NotImplementedError) as exc:
        what = "a whole torch checkpoint" if kind == "checkpoint" else "a whole zip archive"
        return f"not {what} ({exc}: cut short, or another file) and no sha256 to prove it"


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (Windows: assumed so)."""
    if os.name == "nt":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def remove_stale_staging(folder: str, name: str) -> None:
    """Remove the staging folders (``.NAME.PID.*.partial``) that a killed download or unpack left in ``folder``;
    those of a process still running are kept."""
    prefix = "." + name + "."
    for entry in os.listdir(folder) if os.path.isdir(folder) else ():
        path, middle = os.path.join(folder, entry), entry[len(prefix):-len(".partial")]
        if entry.startswith(prefix) and entry.endswith(".partial") and os.path.isdir(path) \
                and not os.path.islink(path):
            pid = middle.split(".")[0]
            if not (pid.isdigit() and _alive(int(pid))):
                shutil.rmtree(path, ignore_errors=True)


def staging_folder(folder: str, name: str) -> str:
    """A new private folder beside ``name`` in ``folder`` (stale ones removed first)."""
    remove_stale_staging(folder, name)
    return tempfile.mkdtemp(prefix=f".{name}.{os.getpid()}.", suffix=".partial", dir=folder)


def download(url: str, destination: str, sha256: str = "", progress: bool = True, deadline: Optional[float] = DEADLINE,
             kind: str = "checkpoint") -> str:
    """Fetch ``url`` through gdown to ``destination`` atomically, verified against ``sha256`` (without one: a whole
    torch file, or for ``kind`` "archive" a whole zip); return the sha256. The download goes to a private folder
    beside ``destination``: a file already there is only ever replaced by a whole, verified one."""
    fetched, expected = resolve_link(url), sha256.strip().lower()
    folder = os.path.dirname(os.path.abspath(destination))
    os.makedirs(folder, exist_ok=True)
    staging = staging_folder(folder, os.path.basename(destination))
    output = os.path.join(staging, os.path.basename(destination))
    try:
        try:
            _gdown(fetched, output, progress, deadline)
        except DownloadError as exc:
            raise DownloadError(f"{destination}: {url}: {exc}; nothing was saved") from None
        problem = _not_the_file(output, bool(expected), kind)
        if problem:
            raise DownloadError(f"{destination}: {url} returned {problem}; nothing was saved")
        actual = sha256_of(output)
        if expected and actual != expected:
            raise DownloadError(f"{destination}: sha256 mismatch, refusing the download from {url}\n    expected "
                                f"{expected}\n    actual   {actual}\n  (wrong URL, a changed file, or a wrong hash "
                                f"in the manifest)")
        os.replace(output, destination)
    except OSError as exc:  # a full disk: say where
        raise OSError(exc.errno, f"cannot download {url} into {folder}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return actual


def _problem(destination: str) -> int:
    return 1 if "p1" in destination else 2


def fetch_entry(entry: ManifestEntry, root: str, manifest: str, deadline: Optional[float] = DEADLINE
                ) -> Tuple[bool, str]:
    """Make one manifest row's file present and valid; return (ok, a short status for the summary). A file there
    that matches the row's sha256 is kept; one that does not is fetched again; one without a sha256 to judge it
    by (no link yet: in the TAs' clone git holds it) is kept; a grading row with a link but no sha256 is refused."""
    if entry.group == GRADING_GROUP and entry.url and not entry.sha256:  # nothing could prove what arrives
        _warn(f"error: {entry.destination}: {manifest} line {entry.line} has a link but no sha256, so nothing could "
              f"prove that a download is the published file; refused before fetching (a file already there is left "
              f"as it is). Pin it: `python -m tools.publish RUN/best.pth --problem {_problem(entry.destination)} "
              f"--link URL` fills the url and the sha256 ({SUBMITTING_SECTION})")
        return False, f"REFUSED (a link without a sha256, {manifest} line {entry.line})"
    destination = os.path.join(root, entry.destination)
    real_root, folder = os.path.realpath(root), os.path.realpath(os.path.dirname(destination))
    if os.path.commonpath([real_root, folder]) != real_root:  # checkpoints/ -> /elsewhere
        return False, f"REFUSED: its folder leads to {folder}, outside {root}; make it a real folder in the repository"
    present = os.path.isfile(destination)
    if present and entry.sha256 and (actual := sha256_of(destination)) == entry.sha256:
        return True, "ok (already present)"  # byte-identical to the published file: --force changes nothing
    if present and entry.group == DINO_GROUP:  # maybe the TAs' backbone: whatever it is, never replaced
        return True, "ok (already present; kept as it is: to fetch DINO's public ResNet-50, move it away first)"
    if present and not entry.sha256:
        return True, "ok (already present; unverified: no sha256 in the manifest)"
    if present and entry.sha256:
        _warn(f"{entry.destination}: present but its sha256 does not match the manifest (expected {entry.sha256}, "
              f"actual {actual}); fetching a valid copy")
    if not entry.url:  # in the TAs' clone a file here without a link is one git holds
        _warn(f"error: {entry.destination}: no URL in {manifest} yet (line {entry.line}), so `bash hw1_download_ckpt"
              f".sh` (the TAs' step) cannot fetch it. Upload the file (Google Drive 'Anyone with the link', Dropbox or "
              f"a GitHub release asset) and run `python -m tools.publish RUN/best.pth --problem "
              f"{_problem(entry.destination)} --link URL`: it fills the row's URL and sha256 "
              f"({SUBMITTING_SECTION}). To use a model trained here, copy its best.pth to {entry.destination}.")
        return False, "INVALID (sha256 mismatch, no URL to fetch a valid copy)" if present else \
            f"MISSING (no URL in {manifest}; see {SUBMITTING_SECTION})"
    print(f"{entry.destination}: downloading {entry.url}")
    try:
        actual = download(entry.url, destination, entry.sha256, deadline=deadline)
    except (DownloadError, OSError) as exc:  # OSError: a full disk, a read-only folder...
        _warn(f"error: {' '.join(str(exc).split()) if 'mismatch' not in str(exc) else exc} ({manifest}, line "
              f"{entry.line})")
        return False, "FAILED" + (" (the file already there was left untouched)" if present else "")
    if entry.sha256:
        return True, "downloaded (sha256 verified)"
    _warn(f"{entry.destination}: sha256 {actual}\n  warning: a whole torch file, but not pinned (no sha256 in "
          f"{manifest}); to pin it, put this value in the sha256 column of line {entry.line}")
    return True, f"downloaded (a whole torch file; not pinned: sha256 {actual})"


def unpack_archive(archive: str, target: str) -> int:
    """Unpack a zip into the new folder ``target``, refusing, before anything is written, an entry with an absolute
    path or '..'. zipfile writes plain files, never symlinks, and ``target`` is new: nothing can lead out of it."""
    with zipfile.ZipFile(archive) as zf:
        members = [info for info in zf.infolist() if not info.filename.startswith("__MACOSX/")]  # macOS's zip
        for info in members:
            parts = info.filename.replace("\\", "/").split("/")
            if parts[0] == "" or ":" in parts[0] or ".." in parts:
                raise UnsafeArchiveError(f"refusing to unpack {archive}: entry {info.filename!r} would be written "
                                         f"outside the target folder (absolute path or '..')")
        os.makedirs(target)
        zf.extractall(target, members)
    return len(members)


def fetch_data(root: str, flag: str = "--data", force: bool = False, progress: bool = True,
               deadline: Optional[float] = DEADLINE) -> Tuple[bool, str]:
    """Download a course archive (unless one is there) and unpack it whole into ``root/<folder>``."""
    (file_id, name, _), link = DATA[flag], f"https://drive.google.com/uc?id={DATA[flag][0]}"
    target, archive = os.path.join(root, name), os.path.join(root, name + ".zip")
    from tools.unpack import RECORD, data_present, unpack_whole  # lazily: hw1_download_ckpt.sh never unpacks

    try:
        for stale in (name, name + ".zip"):  # what a killed run left
            remove_stale_staging(root, stale)
        shutil.rmtree(os.path.join(root, name + ".partial"), ignore_errors=True)  # an older version's staging
        if os.path.lexists(target):
            return data_present(target, archive, flag, force)
        if force or not zipfile.is_zipfile(archive):
            print(f"{name}.zip: downloading from Google Drive (id {file_id})")
            try:
                download(link, archive, progress=progress, deadline=deadline, kind="archive")
            except DownloadError as exc:
                raise DownloadError(f"{exc}; or download {link} in a browser, save it as {archive} and rerun "
                                    f"`bash hw1_download.sh {flag}` (it unpacks an archive already there)") from None
        print(f"{name}.zip: unpacking")
        count = unpack_whole(archive, target)
    except (DownloadError, UnsafeArchiveError, zipfile.BadZipFile, OSError) as exc:
        _warn(f"error: {archive}: {exc}" if isinstance(exc, zipfile.BadZipFile) else f"error: {exc}")
        return False, "FAILED"
    return True, f"unpacked ({count} files, listed in {name}/{RECORD}; you may delete {name}.zip)"


def _seconds(text: str) -> float:
    """--deadline's type: a positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def graded_rows(entries: List[ManifestEntry], shown: str, submission: bool) -> List[Tuple[str, bool, str]]:
    """Failures for grading destinations with two rows or more and, for ``submission``, for each graded
    checkpoint (GRADED) without exactly one grading row; each names the manifest lines."""
    def normal(destination: str) -> str:
        return posixpath.normpath(destination.replace("\\", "/"))

    rows = {}
    for entry in entries:
        rows.setdefault((entry.group, normal(entry.destination)), []).append(entry.line)
    failures = [(shown, False, f"{destination} has {len(lines)} {group!r} rows (lines "
                               f"{', '.join(map(str, lines))}): keep one")
                for (group, destination), lines in rows.items() if group == GRADING_GROUP and len(lines) > 1]
    if submission and not any(group == GRADING_GROUP for group, _ in rows):
        failures.append((shown, False, f"no {GRADING_GROUP!r} rows (see {SUBMITTING_SECTION})"))
    for destination in GRADED if submission else ():
        if (GRADING_GROUP, destination) not in rows:
            others = [f"line {line} has group {group!r}" for (group, other), lines in rows.items()
                      for line in lines if other == destination]
            hint = (", ".join(others) + f", not {GRADING_GROUP!r}: a typo?" if others else
                    f"add the line '{GRADING_GROUP},,,{destination}'")
            failures.append((shown, False, f"no {GRADING_GROUP!r} row for {destination}, which hw1_1.sh or "
                                           f"hw1_2.sh loads ({hint}{'' if others else '.'} See {SUBMITTING_SECTION})"))
    return failures


def get_args_parser() -> argparse.ArgumentParser:
    """The command-line flags (``bash hw1_download.sh --help``)."""
    parser = argparse.ArgumentParser(prog="bash hw1_download.sh", description=__doc__.split("\n")[0] + " Exit "
                                     "status 0 when all asked for is present and valid, 1 otherwise.")
    parser.add_argument("--submission", action="store_true",
                        help="what the TAs' `bash hw1_download_ckpt.sh` runs: the grading checkpoints only")
    for flag, (file_id, name, what) in DATA.items():
        parser.add_argument(flag, action="store_true", help=f"also fetch {what} (Google Drive id {file_id}) to "
                            f"{name}.zip and unpack it whole into {name}/ (skipped while every file its record "
                            f"lists is there)")
    parser.add_argument("--dino-official", action="store_true",
                        help="also fetch DINO's public ResNet-50 (ImageNet-1k): checkpoints/official_dino_model.pth, "
                             "settings B and D's backbone in p1_finetune.py (a file already there is kept)")
    parser.add_argument("--force", action="store_true", help="download the data archive again (into a temp file: "
                        "the archive already there is replaced only by a whole zip); a checkpoint is fetched again "
                        "whenever it differs from its row's sha256, with or without --force")
    parser.add_argument("--deadline", type=_seconds, default=DEADLINE, metavar="SECONDS",
                        help=f"give up on a file that has not arrived whole after this long (default {DEADLINE:g}: a "
                             f"1 GB archive at 300 kB/s; raise it on a slower link); a server that stalls or sends a "
                             f"byte now and then never trips a read timeout")
    parser.add_argument("--manifest", default=DEFAULT_MANIFEST, help="default: checkpoints/manifest.csv")
    parser.add_argument("--root", default=REPO_ROOT, help="where destinations and data go (default: the repository)")
    return parser


def fetch_all(args: argparse.Namespace, root: str, manifest: str, shown: str) -> List[Tuple[str, bool, str]]:
    """[(name, ok, status)] for every requested manifest row, then the data."""
    groups = [GRADING_GROUP] + ([DINO_GROUP] if args.dino_official else [])
    try:
        every = read_manifest(manifest)
    except (OSError, ManifestError) as exc:
        _warn(f"error: cannot read the manifest: {exc}")
        every, results = [], [(shown, False, "UNREADABLE")]
    else:
        results = graded_rows(every, shown, args.submission)
    doubled = {status.split(" has ")[0] for _, _, status in results if " has " in status}
    entries = [e for e in every if e.group in groups and not (e.group == GRADING_GROUP and
                                                              posixpath.normpath(e.destination) in doubled)]
    results += [(e.destination,) + fetch_entry(e, root, shown, args.deadline) for e in entries]
    results += [(DATA[flag][1] + "/",) + fetch_data(root, flag, args.force, deadline=args.deadline)
                for flag in DATA if getattr(args, flag[2:].replace("-", "_"))]
    return results


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Fetch the requested groups (and the data with --data), print a summary; 0 if all is present and valid."""
    parser = get_args_parser()
    args = parser.parse_args(argv)
    if args.submission and (args.data or args.data_2024 or args.dino_official or args.force):
        parser.error("--submission fetches the graded checkpoints only: no --data, --dino-official or --force")
    root, manifest = os.path.abspath(args.root), os.path.abspath(args.manifest)
    shown = os.path.relpath(manifest, root) if os.path.commonpath([root, manifest]) == root else manifest
    try:
        with interruptible():  # Ctrl-C or SIGTERM: every staging file and folder is removed on the way out
            results = fetch_all(args, root, manifest, shown)
    except KeyboardInterrupt as exc:
        _warn(f"interrupted{' by ' + exc.name if isinstance(exc, Interrupted) else ''}: nothing half-fetched or "
              f"half-unpacked was installed; run the same command again")
        return exc.exit_code if isinstance(exc, Interrupted) else 130
    print("\nsummary:\n" + "\n".join(f"  {'ok  ' if ok else 'FAIL'}  {name}: {status}" for name, ok, status in results))
    failed = sum(1 for _, ok, _ in results if not ok)
    print(f"{len(results) - failed} of {len(results)} present and valid")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
