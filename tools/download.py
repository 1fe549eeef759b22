"""Fetch what the grading scripts need (checkpoints/manifest.csv) and, on request, the course data; never trains.

    bash hw1_download_ckpt.sh             # what the TAs run: the graded checkpoints, each from its link
    bash hw1_download.sh                  # the same for a student (a file already here without a link is fine)
    bash hw1_download.sh --data           # + the course's 2025 archive (Google Drive), unpacked into data_2025/
    bash hw1_download.sh --dino-official  # + DINO's public ResNet-50 as checkpoints/official_dino_model.pth (B/D)

gdown fetches every link (Google Drive in any form, past its virus-scan page; Dropbox, as dl=1; plain https). Ours
around it: the manifest, the sha256, an atomic install, the refusal of an HTML page, safe unpacking, messages.
"""
import argparse
import csv
import hashlib
import inspect
import os
import re
import shutil
import sys
import tempfile
import time
import urllib.parse
import zipfile
from typing import List, NamedTuple, Optional, Sequence, Tuple

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MANIFEST = os.path.join(REPO_ROOT, "checkpoints", "manifest.csv")
MANIFEST_HEADER = ["group", "url", "sha256", "destination"]
GRADING_GROUP, DINO_GROUP = "grading", "dino-official"
SUBMITTING_SECTION = 'docs/submitting.md'
DRIVE_HOSTS = ("drive.google.com", "docs.google.com", "drive.usercontent.google.com")
USER_AGENT = "hw1-download/2.0 (gdown)"  # for other hosts; Drive gets gdown's own (a browser's)
RETRY_WAITS = (1.0, 2.0)  # seconds before the 2nd and the 3rd attempt after a network error
CHUNK_SIZE = 1 << 20
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


def read_manifest(path: str) -> List[ManifestEntry]:
    """Parse and validate a manifest csv (``group,url,sha256,destination``; ``#`` lines are comments)."""
    with open(path, newline="", encoding="utf-8") as f:
        numbered = [(n, line) for n, line in enumerate(f, 1) if line.strip() and not line.lstrip().startswith("#")]
    header, rows, entries = ",".join(MANIFEST_HEADER), list(csv.reader(line for _, line in numbered)), []
    if not rows or [cell.strip() for cell in rows[0]] != MANIFEST_HEADER:
        found = f"line {numbered[0][0]}: header is {','.join(rows[0])!r}" if rows else "empty manifest"
        raise ManifestError(f"{path}, {found}, expected {header!r}")
    for (number, _), row in zip(numbered[1:], rows[1:]):
        where = f"{path}, line {number}"
        if len(row) != len(MANIFEST_HEADER):
            raise ManifestError(f"{where}: {len(row)} fields, expected {len(MANIFEST_HEADER)} ({header})")
        group, url, sha256, destination = (cell.strip() for cell in row)
        parts = destination.replace("\\", "/").split("/")
        if not group:
            raise ManifestError(f"{where}: empty group")
        if url and not url.lower().startswith(("https://", "http://")):
            raise ManifestError(f"{where}: url must start with https:// or http://, got {url!r}")
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


def _gdown(url: str, output: str, progress: bool) -> None:
    """gdown ``url`` to ``output`` (passing the keyword arguments this gdown knows; 5.0 has no log_messages),
    retrying requests' network errors after RETRY_WAITS; DownloadError when it fails."""
    try:
        import gdown  # imported here: the manifest tools (tools.publish) work without it
    except ImportError:
        raise DownloadError("gdown is not installed: `pip install -r requirements.txt`") from None
    wanted = {"quiet": not progress, "fuzzy": True, "use_cookies": False, "log_messages": {"start": "", "output": ""},
              "user_agent": None if urllib.parse.urlsplit(url).hostname in DRIVE_HOSTS else USER_AGENT}
    known = inspect.signature(gdown.download).parameters
    for attempt, wait in enumerate(RETRY_WAITS + (None,), 1):
        sys.stdout.flush()
        try:
            result = gdown.download(url, output, **{k: v for k, v in wanted.items() if k in known})
            break
        except Exception as exc:  # gdown's own errors (FileURLRetrievalError; 4.x: RuntimeError), requests'
            if wait is None or not type(exc).__module__.startswith(("requests", "urllib3")):
                raise DownloadError(f"gdown could not fetch it (attempt {attempt}): {type(exc).__name__}: "
                                    f"{' '.join(str(exc).split())[:600]}") from None
            _warn(f"  attempt {attempt}: {type(exc).__name__}; retrying in {wait:g} s")
            time.sleep(wait)
    if result is None or not os.path.isfile(output):  # gdown 4.x's way to fail
        raise DownloadError("gdown fetched nothing (is it shared with 'Anyone with the link'? over Drive's quota?)")


def download(url: str, destination: str, sha256: str = "", progress: bool = True) -> str:
    """Fetch ``url`` through gdown to ``destination`` atomically, verified against ``sha256``; return the sha256.
    A file already at ``destination`` is only ever replaced by a whole, verified file that is not an HTML page."""
    fetched, expected = resolve_link(url), sha256.strip().lower()
    os.makedirs(os.path.dirname(os.path.abspath(destination)), exist_ok=True)
    staging = tempfile.mkdtemp(prefix="." + os.path.basename(destination) + ".", suffix=".partial",
                               dir=os.path.dirname(os.path.abspath(destination)))
    output = os.path.join(staging, os.path.basename(destination))
    try:
        try:
            _gdown(fetched, output, progress)
        except DownloadError as exc:
            raise DownloadError(f"{destination}: {url}: {exc}; nothing was saved") from None
        with open(output, "rb") as f:
            head = f.read(1 << 16).decode("utf-8", "replace")
        if head.lstrip("\ufeff \t\r\n").lower().startswith(("<!doctype html", "<html", "<head", "<!--")):
            title = " ".join((re.findall(r"<title[^>]*>(.*?)</title>", head, re.I | re.S) or ["untitled"])[0].split())
            raise DownloadError(f"{destination}: {url} returned an HTML page ({title[:80]!r}), not the file (is the "
                                f"file public? is the link a direct download link?); nothing was saved")
        actual = sha256_of(output)
        if expected and actual != expected:
            raise DownloadError(f"{destination}: sha256 mismatch, refusing the download from {url}\n    expected "
                                f"{expected}\n    actual   {actual}\n  (wrong URL, a changed file, or a wrong hash "
                                f"in the manifest)")
        os.replace(output, destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return actual


def fetch_entry(entry: ManifestEntry, root: str, manifest: str, force: bool = False) -> Tuple[bool, str]:
    """Make one manifest row's file present and valid; return (ok, a short status for the summary)."""
    destination = os.path.join(root, entry.destination)
    real_root, folder = os.path.realpath(root), os.path.realpath(os.path.dirname(destination))
    if os.path.commonpath([real_root, folder]) != real_root:  # checkpoints/ -> /elsewhere
        return False, f"REFUSED: its folder leads to {folder}, outside {root}; make it a real folder in the repository"
    present = os.path.isfile(destination)
    if present and entry.sha256 and (actual := sha256_of(destination)) == entry.sha256:
        return True, "ok (already present)"  # byte-identical to the published file: --force changes nothing
    if present and entry.group == DINO_GROUP:  # maybe the TAs' backbone: whatever it is, never replaced
        return True, "ok (already present; kept as it is: to fetch DINO's public ResNet-50, move it away first)"
    if present and not entry.sha256 and not (force and entry.url):
        return True, "ok (already present; unverified: no sha256 in the manifest)"
    if present and entry.sha256:
        _warn(f"{entry.destination}: present but its sha256 does not match the manifest (expected {entry.sha256}, "
              f"actual {actual}); fetching a valid copy")
    if not entry.url:  # in the TAs' clone a file here without a link is one git holds
        _warn(f"error: {entry.destination}: no URL in {manifest} yet (line {entry.line}), so `bash hw1_download_ckpt"
              f".sh` (the TAs' step) cannot fetch it. Upload the file (Google Drive 'Anyone with the link', Dropbox or "
              f"a GitHub release asset) and run `python -m tools.publish RUN/best.pth --problem "
              f"{1 if 'p1' in entry.destination else 2} --link URL`: it fills the row's URL and sha256 "
              f"({SUBMITTING_SECTION}). To use a model trained here, copy its best.pth to {entry.destination}.")
        return False, "INVALID (sha256 mismatch, no URL to fetch a valid copy)" if present else \
            f"MISSING (no URL in {manifest}; see {SUBMITTING_SECTION})"
    print(f"{entry.destination}: downloading {entry.url}")
    try:
        actual = download(entry.url, destination, entry.sha256)
    except (DownloadError, OSError) as exc:  # OSError: a full disk, a read-only folder...
        _warn(f"error: {exc}")
        return False, "FAILED" + (" (the file already there was left untouched)" if present else "")
    if entry.sha256:
        return True, "downloaded (sha256 verified)"
    _warn(f"{entry.destination}: sha256 {actual}\n  warning: unverified (no sha256 in {manifest}); to pin it, put "
          f"this value in the sha256 column of line {entry.line}")
    return True, f"downloaded (UNVERIFIED, sha256 {actual})"


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


def fetch_data(root: str, flag: str = "--data", force: bool = False, progress: bool = True) -> Tuple[bool, str]:
    """Download a course archive (unless one is there) and unpack it beside ``root/<folder>``, then rename it."""
    (file_id, name, _), link = DATA[flag], f"https://drive.google.com/uc?id={DATA[flag][0]}"
    target, archive, staging = (os.path.join(root, name + suffix) for suffix in ("", ".zip", ".partial"))
    if os.path.isdir(os.path.join(target, "p2_data", "validation")) and not force:
        return True, "ok (already present; to unpack it again, move it away first)"
    try:
        if os.path.exists(target):
            why = "--force unpacks the archive again" if force else "it is incomplete (no p2_data/validation)"
            raise DownloadError(f"{target} is there and {why}: move it away (an unpack never overwrites) and rerun "
                                f"`bash hw1_download.sh {flag}`")
        if force or not zipfile.is_zipfile(archive):
            print(f"{name}.zip: downloading from Google Drive (id {file_id})")
            try:
                download(link, archive, progress=progress)
            except DownloadError as exc:
                raise DownloadError(f"{exc}; or download {link} in a browser, save it as {archive} and rerun "
                                    f"`bash hw1_download.sh {flag}` (it unpacks an archive already there)") from None
        print(f"{name}.zip: unpacking")
        shutil.rmtree(staging, ignore_errors=True)  # what an interrupted run left
        unpack_archive(archive, staging)
        tops = os.listdir(staging)  # the course zips its folder (data_2025/) itself
        inner = os.path.join(staging, tops[0]) if len(tops) == 1 and tops[0] not in DATA_PARTS else staging
        missing = [part for part in DATA_PARTS if not os.path.isdir(os.path.join(inner, part))]
        if missing:
            raise DownloadError(f"{archive} does not contain {' and '.join(missing)} (found: "
                                f"{sorted(os.listdir(inner)) or 'nothing'})")
        os.replace(inner, target)
    except (DownloadError, UnsafeArchiveError, zipfile.BadZipFile, OSError) as exc:
        _warn(f"error: {archive}: {exc}" if isinstance(exc, zipfile.BadZipFile) else f"error: {exc}")
        return False, "FAILED"
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return True, f"unpacked (you may delete {name}.zip)"


def get_args_parser() -> argparse.ArgumentParser:
    """The command-line flags (``bash hw1_download.sh --help``)."""
    parser = argparse.ArgumentParser(prog="bash hw1_download.sh", description=__doc__.split("\n")[0] + " Exit "
                                     "status 0 when all asked for is present and valid, 1 otherwise.")
    parser.add_argument("--submission", action="store_true",
                        help="what the TAs' `bash hw1_download_ckpt.sh` runs: the grading checkpoints only")
    for flag, (file_id, name, what) in DATA.items():
        parser.add_argument(flag, action="store_true", help=f"also fetch {what} (Google Drive id {file_id}) to "
                            f"{name}.zip and unpack it into {name}/ (skipped when {name}/p2_data/validation exists)")
    parser.add_argument("--dino-official", action="store_true",
                        help="also fetch DINO's public ResNet-50 (ImageNet-1k): checkpoints/official_dino_model.pth, "
                             "settings B and D's backbone in p1_finetune.py (a file already there is kept)")
    parser.add_argument("--force", action="store_true", help="re-download files that no sha256 in the manifest "
                        "vouches for, and the data archive")
    parser.add_argument("--manifest", default=DEFAULT_MANIFEST, help="default: checkpoints/manifest.csv")
    parser.add_argument("--root", default=REPO_ROOT, help="where destinations and data go (default: the repository)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Fetch the requested groups (and the data with --data), print a summary; 0 if all is present and valid."""
    parser = get_args_parser()
    args = parser.parse_args(argv)
    if args.submission and (args.data or args.data_2024 or args.dino_official or args.force):
        parser.error("--submission fetches the graded checkpoints only: no --data, --dino-official or --force")
    root, manifest = os.path.abspath(args.root), os.path.abspath(args.manifest)
    shown = os.path.relpath(manifest, root) if os.path.commonpath([root, manifest]) == root else manifest
    groups = [GRADING_GROUP] + ([DINO_GROUP] if args.dino_official else [])
    results = []  # (name, ok, status)
    try:
        entries = [entry for entry in read_manifest(manifest) if entry.group in groups]
    except (OSError, ManifestError) as exc:
        _warn(f"error: cannot read the manifest: {exc}")
        entries, results = [], [(shown, False, "UNREADABLE")]
    if args.submission and not entries and not results:
        results.append((shown, False, f"no {GRADING_GROUP!r} rows (see {SUBMITTING_SECTION})"))
    results += [(e.destination,) + fetch_entry(e, root, shown, args.force) for e in entries]
    results += [(DATA[flag][1] + "/",) + fetch_data(root, flag, args.force)
                for flag in DATA if getattr(args, flag[2:].replace("-", "_"))]
    print("\nsummary:\n" + "\n".join(f"  {'ok  ' if ok else 'FAIL'}  {name}: {status}" for name, ok, status in results))
    failed = sum(1 for _, ok, _ in results if not ok)
    print(f"{len(results) - failed} of {len(results)} present and valid")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
