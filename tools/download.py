"""Fetch what the grading scripts need: checkpoints from checkpoints/manifest.csv, optionally the data.

It only downloads (and unpacks); it never trains. Run it from the repository root::

    bash hw1_download.sh                     # the grading checkpoints (checkpoints/p1_best.pth, p2_best.pth)
    bash hw1_download.sh --data              # + the course's archive from Google Drive, unpacked into hw1_data/
    bash hw1_download.sh --dino-official     # + the official DINO ResNet-50 backbone, for comparisons
    bash hw1_download.sh --force             # re-download files no pinned sha256 can vouch for; re-unpack data
    python3 -m tools.download --help

Manifest (``checkpoints/manifest.csv``): csv with the header ``group,url,sha256,destination``; lines starting
with ``#`` are comments. ``group`` is ``grading`` (always fetched) or ``dino-official`` (``--dino-official``);
``destination`` is relative to the repository root; an empty ``sha256`` means "unverified" (the download
prints the hash so you can pin it); an empty ``url`` means "not published yet" (you are told what to do).

Every file is streamed into a temporary file beside its destination, its size (Content-Length) and sha256
are checked, and only then is it renamed into place: an interrupted or corrupt download never leaves a file
at the final path, and a good file already there survives a failed re-download. Network errors, timeouts
and HTTP 5xx are retried (3 attempts, 1 s then 2 s apart); HTTP 4xx is final. The exit status is 0 when
everything requested is present and valid, 1 otherwise.
"""
import argparse
import csv
import hashlib
import http.client
import os
import shutil
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from typing import Iterable, List, NamedTuple, Optional, Sequence, Tuple

from tqdm import tqdm

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MANIFEST = os.path.join(REPO_ROOT, "checkpoints", "manifest.csv")
MANIFEST_HEADER = ["group", "url", "sha256", "destination"]
GRADING_GROUP = "grading"
DINO_GROUP = "dino-official"

DATA_FILE_ID = "1x77fyA9BONMHnQXhvxP-87hFTCFwGm9a"  # the course's hw1_data.zip on Google Drive
DATA_ARCHIVE = "hw1_data.zip"
DATA_DIR = "hw1_data"
DATA_PARTS = ("p1_data", "p2_data")

USER_AGENT = "hw1-download/1.0 (python urllib)"
CHUNK_SIZE = 1 << 20


class DownloadError(RuntimeError):
    """A file could not be fetched or failed verification; the message says which and why."""


class ManifestError(ValueError):
    """checkpoints/manifest.csv is malformed; the message names the file and line."""


class UnsafeArchiveError(ValueError):
    """A zip entry would be written outside the target folder (zip-slip) or has an absolute path."""


class _Retryable(Exception):
    """Internal: a transient failure (network error, timeout, HTTP 5xx, short read) worth another attempt."""


class ManifestEntry(NamedTuple):
    """One manifest row; ``line`` is its line number in the file (for messages)."""

    group: str
    url: str
    sha256: str
    destination: str
    line: int = 0


def _warn(message: str) -> None:
    """Print a warning or error to stderr, after what stdout already holds (keeps the order when piped)."""
    sys.stdout.flush()
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------- manifest

def read_manifest(path: str) -> List[ManifestEntry]:
    """Parse and validate a manifest csv (``group,url,sha256,destination``; ``#`` lines are comments)."""
    with open(path, newline="", encoding="utf-8") as f:
        numbered = [(number, line) for number, line in enumerate(f, start=1)
                    if line.strip() and not line.lstrip().startswith("#")]
    if not numbered:
        raise ManifestError(f"{path}: empty manifest (expected the header {','.join(MANIFEST_HEADER)})")
    rows = list(csv.reader(line for _, line in numbered))
    header = [cell.strip() for cell in rows[0]]
    if header != MANIFEST_HEADER:
        raise ManifestError(f"{path}, line {numbered[0][0]}: header is {','.join(header)!r}, "
                            f"expected {','.join(MANIFEST_HEADER)!r}")
    entries = []
    for (number, _), row in zip(numbered[1:], rows[1:]):
        where = f"{path}, line {number}"
        if len(row) != len(MANIFEST_HEADER):
            raise ManifestError(f"{where}: {len(row)} fields, expected {len(MANIFEST_HEADER)} "
                                f"({','.join(MANIFEST_HEADER)})")
        group, url, sha256, destination = (cell.strip() for cell in row)
        sha256 = sha256.lower()
        if not group:
            raise ManifestError(f"{where}: empty group")
        if url and not url.lower().startswith(("https://", "http://")):
            raise ManifestError(f"{where}: url must start with https:// or http://, got {url!r}")
        if sha256 and (len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256)):
            raise ManifestError(f"{where}: sha256 must be 64 hex digits (the output of `sha256sum FILE`) "
                                f"or empty, got {sha256!r}")
        _check_destination(destination, where)
        entries.append(ManifestEntry(group, url, sha256, destination, number))
    return entries


def _check_destination(destination: str, where: str) -> None:
    """Refuse destinations that are empty, absolute or climb out of the root with ``..``."""
    parts = destination.replace("\\", "/").split("/")
    if not destination or os.path.isabs(destination) or destination.startswith(("/", "\\")) \
            or ":" in parts[0] or ".." in parts or destination.endswith(("/", "\\")):
        raise ManifestError(f"{where}: destination must be a file path relative to the repository root "
                            f"without '..', got {destination!r}")


# --------------------------------------------------------------------------------------------- download

def sha256_of(path: str) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_SIZE), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(url: str, destination: str, sha256: str = "", retries: int = 3, backoff: float = 1.0,
             timeout: float = 60.0, progress: bool = True) -> str:
    """Fetch ``url`` to ``destination`` atomically, verified against ``sha256`` when given; return the sha256.

    ``retries`` is the number of attempts in all (the first included); attempt k+1 waits
    ``backoff * 2**(k-1)`` seconds. Raises DownloadError; nothing is ever left at ``destination`` unless the
    download is complete and verified, and a file already there is only replaced by a verified one.
    """
    expected = sha256.strip().lower()
    folder = os.path.dirname(os.path.abspath(destination))
    os.makedirs(folder, exist_ok=True)
    attempts = max(1, retries)
    for attempt in range(1, attempts + 1):
        try:
            actual, tmp = _fetch_once(url, destination, timeout, progress)
            break
        except _Retryable as exc:
            if attempt == attempts:
                raise DownloadError(f"{destination}: giving up after {attempts} attempt(s): {exc}") from None
            wait = backoff * 2 ** (attempt - 1)
            _warn(f"  attempt {attempt}/{attempts} failed ({exc}); retrying in {wait:g} s")
            time.sleep(wait)
    try:
        if expected and actual != expected:
            raise DownloadError(f"{destination}: sha256 mismatch, refusing the download from {url}\n"
                                f"    expected {expected}\n    actual   {actual}\n"
                                f"  (wrong URL, a changed file, or a wrong hash in the manifest)")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, destination)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return actual


def _fetch_once(url: str, destination: str, timeout: float, progress: bool) -> Tuple[str, str]:
    """One attempt: stream ``url`` into a temp file beside ``destination``; return (sha256, temp path)."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    folder = os.path.dirname(os.path.abspath(destination))
    name = os.path.basename(destination)
    fd, tmp = tempfile.mkstemp(prefix="." + name + ".", suffix=".part", dir=folder)
    done = False
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                response = urllib.request.urlopen(request, timeout=timeout)
            except urllib.error.HTTPError as exc:
                exc.close()
                if exc.code >= 500:
                    raise _Retryable(f"HTTP {exc.code} {exc.reason}") from None
                raise DownloadError(f"{destination}: HTTP {exc.code} {exc.reason} for {url} (not retried: "
                                    f"check the URL in the manifest, and that the file is public)") from None
            with response:
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                digest = hashlib.sha256()
                received = 0
                with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=name,
                          disable=not progress, leave=False) as bar:
                    for chunk in iter(lambda: response.read(CHUNK_SIZE), b""):
                        out.write(chunk)
                        digest.update(chunk)
                        received += len(chunk)
                        bar.update(len(chunk))
            if total is not None and received != total:
                raise _Retryable(f"incomplete transfer: {received} of {total} bytes")
            out.flush()
            os.fsync(out.fileno())
        done = True
        return digest.hexdigest(), tmp
    except (urllib.error.URLError, ConnectionError, socket.timeout, TimeoutError,
            http.client.HTTPException) as exc:
        raise _Retryable(_describe(exc)) from None
    finally:
        if not done and os.path.exists(tmp):
            os.unlink(tmp)


def _describe(exc: BaseException) -> str:
    """A one-line description of a network error (URLError hides the cause in ``reason``)."""
    reason = getattr(exc, "reason", None)
    if isinstance(exc, urllib.error.URLError) and reason is not None:
        return f"{type(exc).__name__}: {reason}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


# ---------------------------------------------------------------------------------------- checkpoints

def missing_url_message(entry: ManifestEntry, manifest: str) -> str:
    """What to do when a manifest row has no URL yet and its file is missing."""
    return (f"{entry.destination}: no URL in {manifest} yet (line {entry.line}). Either train with the "
            f"README's scripts and copy best.pth to {entry.destination}, or publish your checkpoint (e.g. a "
            f"GitHub release asset), put its URL and `sha256sum` in {manifest}, and rerun hw1_download.sh.")


def fetch_entry(entry: ManifestEntry, root: str, manifest: str, force: bool = False, retries: int = 3,
                backoff: float = 1.0, timeout: float = 60.0) -> Tuple[bool, str]:
    """Make one manifest row's file present and valid; return (ok, a short status for the summary)."""
    destination = os.path.join(root, entry.destination)
    present = os.path.isfile(destination)
    stale = False
    if present and entry.sha256:
        actual = sha256_of(destination)
        if actual == entry.sha256:
            return True, "ok (already present)"  # byte-identical to the published file: --force changes nothing
        stale = True
        _warn(f"{entry.destination}: present but its sha256 does not match the manifest "
              f"(expected {entry.sha256}, actual {actual}); fetching a valid copy")
    elif present and not force:
        return True, "ok (already present; unverified: no sha256 in the manifest, --force re-downloads)"

    if not entry.url:
        if stale:
            _warn(missing_url_message(entry, manifest))
            return False, "INVALID (sha256 mismatch, and no URL to fetch a valid copy)"
        if present:
            return True, "ok (already present; unverified; no URL to re-download from)"
        _warn(missing_url_message(entry, manifest))
        return False, "MISSING (no URL in the manifest)"

    print(f"{entry.destination}: downloading {entry.url}")
    try:
        actual = download(entry.url, destination, entry.sha256, retries=retries, backoff=backoff,
                          timeout=timeout)
    except (DownloadError, OSError) as exc:  # OSError: a full disk, a read-only folder...
        _warn(f"error: {exc}")
        kept = " (the file already there was left untouched)" if present else ""
        return False, ("INVALID" if stale else "FAILED") + kept
    if entry.sha256:
        return True, "downloaded (sha256 verified)"
    _warn(f"{entry.destination}: sha256 {actual}\n  warning: unverified (no sha256 in {manifest}); "
          f"to pin it, put this value in the sha256 column of line {entry.line}")
    return True, f"downloaded (UNVERIFIED, sha256 {actual})"


# ------------------------------------------------------------------------------------------------ data

def _archive_plan(names: Iterable[str]) -> List[Tuple[str, List[str]]]:
    """Map zip entry names to relative path parts, refusing unsafe names and stripping one shared top folder."""
    plan = []
    for name in names:
        normalized = name.replace("\\", "/")
        parts = [part for part in normalized.split("/") if part not in ("", ".")]
        if normalized.startswith("/") or ":" in normalized.split("/")[0] or ".." in parts:
            raise UnsafeArchiveError(f"refusing to unpack: entry {name!r} would be written outside the target "
                                     f"folder (absolute path or '..')")
        if parts and parts[0] != "__MACOSX":  # resource forks added by macOS's zip
            plan.append((name, parts))
    tops = {parts[0] for _, parts in plan}
    # The course zips hw1_data/ itself; strip that folder so the contents land in the target directly.
    if len(tops) == 1 and not tops & set(DATA_PARTS) and any(len(parts) > 1 for _, parts in plan):
        plan = [(name, parts[1:]) for name, parts in plan if len(parts) > 1]
    return plan


def unpack_archive(archive: str, target: str, progress: bool = True) -> int:
    """Unpack a zip into ``target``, refusing (before writing anything) entries that would escape it."""
    real_target = os.path.realpath(target)
    with zipfile.ZipFile(archive) as zf:
        infos = {info.filename: info for info in zf.infolist()}
        plan = []
        for name, parts in _archive_plan(infos):
            path = os.path.join(real_target, *parts)
            # realpath also catches a folder inside the target that is a symlink pointing outside it
            if os.path.commonpath([real_target, os.path.realpath(path)]) != real_target:
                raise UnsafeArchiveError(f"refusing to unpack: entry {name!r} would be written outside "
                                         f"{target}")
            plan.append((infos[name], path))
        os.makedirs(real_target, exist_ok=True)
        for info, path in tqdm(plan, desc="unpacking", unit="file", disable=not progress):
            if info.is_dir():
                os.makedirs(path, exist_ok=True)
                continue
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with zf.open(info) as src, open(path, "wb") as dst:
                shutil.copyfileobj(src, dst, CHUNK_SIZE)
    return len(plan)


def _manual_data_hint(root: str) -> str:
    """How to get the archive without gdown."""
    return (f"or download https://drive.google.com/uc?id={DATA_FILE_ID} in a browser, save it as "
            f"{os.path.join(root, DATA_ARCHIVE)} and rerun `bash hw1_download.sh --data` (it unpacks an "
            f"archive already there)")


def _gdown_archive(root: str, archive: str) -> None:
    """Download the course archive from Google Drive with gdown (optional extra) into ``archive``."""
    try:
        import gdown  # optional: only the Google-Drive archive needs it
    except ImportError:
        raise DownloadError(f"--data needs the optional package gdown: pip install gdown; "
                            f"{_manual_data_hint(root)}") from None
    staging = tempfile.mkdtemp(prefix=".hw1_data_zip.", suffix=".partial", dir=root)
    try:
        output = os.path.join(staging, DATA_ARCHIVE)
        print(f"{DATA_ARCHIVE}: downloading from Google Drive (id {DATA_FILE_ID}) with gdown")
        try:
            result = gdown.download(f"https://drive.google.com/uc?id={DATA_FILE_ID}", output, quiet=False)
        except Exception as exc:  # gdown's error types differ across its versions
            raise DownloadError(f"gdown failed ({type(exc).__name__}: {exc}); {_manual_data_hint(root)}") from None
        if result is None or not zipfile.is_zipfile(output):
            raise DownloadError(f"Google Drive did not return a zip archive (a daily quota or a sign-in page?); "
                                f"{_manual_data_hint(root)}")
        os.replace(output, archive)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def fetch_data(root: str, force: bool = False, progress: bool = True) -> Tuple[bool, str]:
    """Download the course archive (unless a valid one is there) and unpack it into ``root/hw1_data``."""
    target = os.path.join(root, DATA_DIR)
    archive = os.path.join(root, DATA_ARCHIVE)
    if os.path.isdir(os.path.join(target, "p2_data", "validation")) and not force:
        return True, "ok (already present; --force re-downloads and unpacks again)"
    try:
        if force or not zipfile.is_zipfile(archive):
            if os.path.exists(archive) and not force:
                _warn(f"{DATA_ARCHIVE}: not a valid zip archive; downloading it again")
            _gdown_archive(root, archive)
        else:
            print(f"{DATA_ARCHIVE}: using the archive already there")
        if os.path.isdir(target):  # a partial or an older copy: overwrite file by file, delete nothing
            unpack_archive(archive, target, progress=progress)
        else:  # unpack beside it, then rename: an interrupted unpack never looks complete
            staging = tempfile.mkdtemp(prefix="." + DATA_DIR + ".", suffix=".partial", dir=root)
            try:
                unpack_archive(archive, staging, progress=progress)
                _check_data(staging, archive)
                umask = os.umask(0)
                os.umask(umask)
                os.chmod(staging, 0o777 & ~umask)  # mkdtemp creates 0700
                os.replace(staging, target)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        _check_data(target, archive)
    except (DownloadError, UnsafeArchiveError, zipfile.BadZipFile, OSError) as exc:
        _warn(f"error: {exc}")
        return False, "FAILED"
    return True, f"unpacked (you may delete {DATA_ARCHIVE})"


def _check_data(folder: str, archive: str) -> None:
    """Raise DownloadError unless ``folder`` holds p1_data and p2_data."""
    missing = [part for part in DATA_PARTS if not os.path.isdir(os.path.join(folder, part))]
    if missing:
        found = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
        raise DownloadError(f"{archive} does not contain {' and '.join(missing)} (found: {found or 'nothing'})")


# ------------------------------------------------------------------------------------------------ main

def get_args_parser() -> argparse.ArgumentParser:
    """The command-line flags (``bash hw1_download.sh --help``)."""
    parser = argparse.ArgumentParser(
        prog="bash hw1_download.sh",
        description="Download what the grading scripts need (checkpoints/manifest.csv); never trains. "
                    "Exit status 0 when everything requested is present and valid, 1 otherwise.")
    parser.add_argument("--data", action="store_true",
                        help=f"also fetch the course's dataset archive from Google Drive (needs `pip install "
                             f"gdown`) to {DATA_ARCHIVE} and unpack it into {DATA_DIR}/; skipped when "
                             f"{DATA_DIR}/p2_data/validation exists (unless --force)")
    parser.add_argument("--dino-official", action="store_true",
                        help=f"also fetch the manifest's {DINO_GROUP!r} rows: the official DINO ResNet-50 "
                             f"backbone, for comparisons only (grading never loads it)")
    parser.add_argument("--force", action="store_true",
                        help="re-download files that no sha256 in the manifest can vouch for, and re-download "
                             "and unpack the data; a file matching its pinned sha256 is always kept "
                             "(a download would be byte-identical)")
    parser.add_argument("--manifest", default=DEFAULT_MANIFEST,
                        help="manifest csv: group,url,sha256,destination (default: this repository's "
                             "checkpoints/manifest.csv)")
    parser.add_argument("--root", default=REPO_ROOT,
                        help="folder that destinations (and hw1_data/) are relative to (default: the "
                             "repository root)")
    parser.add_argument("--retries", type=int, default=3,
                        help="attempts per file in all, the first included (default: %(default)s); network "
                             "errors, timeouts and HTTP 5xx are retried, HTTP 4xx is not")
    parser.add_argument("--backoff", type=float, default=1.0,
                        help="seconds before the 2nd attempt, doubled for each further one (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds without a response before an attempt fails (default: %(default)s)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Fetch the requested groups (and the data with --data), print a summary; 0 if all is present and valid."""
    args = get_args_parser().parse_args(argv)
    root = os.path.abspath(args.root)
    manifest = os.path.abspath(args.manifest)
    shown = os.path.relpath(manifest, root) if os.path.commonpath([root, manifest]) == root else manifest
    groups = [GRADING_GROUP] + ([DINO_GROUP] if args.dino_official else [])
    results = []  # (ok, name, status)
    try:
        entries = [entry for entry in read_manifest(manifest) if entry.group in groups]
    except (OSError, ManifestError) as exc:
        _warn(f"error: cannot read the manifest: {exc}")
        entries = []
        results.append((False, shown, "UNREADABLE"))
    else:
        for group in groups:
            if not any(entry.group == group for entry in entries):
                _warn(f"warning: no {group!r} rows in {shown}")
    for entry in entries:
        ok, status = fetch_entry(entry, root, shown, force=args.force, retries=args.retries,
                                 backoff=args.backoff, timeout=args.timeout)
        results.append((ok, entry.destination, status))
    if args.data:
        ok, status = fetch_data(root, force=args.force)
        results.append((ok, DATA_DIR + "/", status))

    print("\nsummary:")
    for ok, name, status in results:
        print(f"  {'ok  ' if ok else 'FAIL'}  {name}: {status}")
    failed = sum(1 for ok, _, _ in results if not ok)
    print(f"{len(results) - failed} of {len(results)} present and valid")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
