"""Fetch what the grading scripts need: checkpoints from checkpoints/manifest.csv, optionally the data.

It only downloads (and unpacks); it never trains. It runs from any folder::

    bash hw1_download_ckpt.sh                # what the TAs run: the graded checkpoints, each from its link
    bash hw1_download.sh                     # the grading checkpoints (checkpoints/p1_best.pth, p2_best.pth)
    bash hw1_download.sh --data              # + the course's 2025 archive (Google Drive), unpacked into data_2025/
    bash hw1_download.sh --data-2024         # + the 2024 edition's archive instead, unpacked into hw1_data/
    bash hw1_download.sh --dino-official     # + the official DINO ResNet-50 backbone, for comparisons
    bash hw1_download.sh --force             # re-download files no pinned sha256 can vouch for; re-unpack data
    python3 -m tools.download --help

Manifest (``checkpoints/manifest.csv``): csv with the header ``group,url,sha256,destination``; lines starting
with ``#`` are comments. ``group`` is ``grading`` (always fetched) or ``dino-official`` (``--dino-official``);
``destination`` is relative to the repository root; an empty ``sha256`` means "unverified" (the download
prints the hash so you can pin it); an empty ``url`` means "not published yet" (you are told what to do;
under ``--submission``, what hw1_download_ckpt.sh runs, it is an error).

Links as students publish them all work: Google Drive (``https://drive.google.com/file/d/ID/view?usp=sharing``,
``https://drive.google.com/uc?id=ID``, ``uc?export=download&id=ID``, ``open?id=ID``), Dropbox (``?dl=0`` is
fetched as ``?dl=1``) and any plain https URL (e.g. a GitHub release asset). Drive files go through ``gdown``
when it is installed (the grading machine has it), else through this module's own client, which follows Drive's
"cannot scan this file for viruses" page (its download form) to the file. An HTML answer -- a web page instead
of the file, a Google sign-in page (the file is not shared), a quota page -- is never saved: it is an error that
names the link. HW1_DRIVE_BASE / HW1_DROPBOX_BASE (tests only) send Drive / Dropbox requests to another host.

Every file is streamed into a temporary file beside its destination, its size (Content-Length) and sha256
are checked, and only then is it renamed into place: an interrupted or corrupt download never leaves a file
at the final path, and a good file already there survives a failed re-download. Network errors, timeouts
and HTTP 5xx are retried (3 attempts, 1 s then 2 s apart); HTTP 4xx is final. The exit status is 0 when
everything requested is present and valid, 1 otherwise.
"""
import argparse
import csv
import hashlib
import html.parser
import http.client
import http.cookiejar
import io
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

from tqdm import tqdm

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MANIFEST = os.path.join(REPO_ROOT, "checkpoints", "manifest.csv")
MANIFEST_HEADER = ["group", "url", "sha256", "destination"]
GRADING_GROUP = "grading"
DINO_GROUP = "dino-official"
SUBMITTING_SECTION = 'README.md, section "Submitting"'


class DataArchive(NamedTuple):
    """A course dataset archive on Google Drive and the folder it unpacks into (relative to the root)."""

    file_id: str
    archive: str
    folder: str
    flag: str


DATA_2025 = DataArchive("1yt4CP2msqY2HSYCy67mQrWUtTPQRgcBF", "data_2025.zip", "data_2025", "--data")
DATA_2024 = DataArchive("1x77fyA9BONMHnQXhvxP-87hFTCFwGm9a", "hw1_data.zip", "hw1_data", "--data-2024")  # flag only
DATA_PARTS = ("p1_data", "p2_data")

# Link hosts. The *_BASE_ENV variables exist for the tests: a local server plays Google Drive / Dropbox.
DRIVE_HOSTS = ("drive.google.com", "docs.google.com", "drive.usercontent.google.com")
DROPBOX_HOSTS = ("www.dropbox.com", "dropbox.com")
DRIVE_BASE_ENV = "HW1_DRIVE_BASE"
DROPBOX_BASE_ENV = "HW1_DROPBOX_BASE"
DRIVE_BASE = "https://drive.google.com"
MAX_DRIVE_PAGES = 3  # Drive's warning page, then the file; a third page means something else went wrong
HTML_SNIFF_BYTES = 512
MAX_PAGE_BYTES = 1 << 20

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


class _HtmlPage(Exception):
    """Internal: the server answered with an HTML page instead of a file (``url``: where the page came from)."""

    def __init__(self, url: str, text: str) -> None:
        super().__init__(url)
        self.url, self.text = url, text


class ManifestEntry(NamedTuple):
    """One manifest row; ``line`` is its line number in the file (for messages)."""

    group: str
    url: str
    sha256: str
    destination: str
    line: int = 0


class Link(NamedTuple):
    """A published link, resolved: ``kind`` is drive / dropbox / plain; ``url`` is what to request."""

    kind: str
    url: str
    file_id: str = ""


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


def set_manifest_link(path: str, destination: str, url: str, sha256: str) -> ManifestEntry:
    """Fill the url and sha256 of the grading row for ``destination`` in place (comments and other rows kept)."""
    entries = [e for e in read_manifest(path) if e.group == GRADING_GROUP and e.destination == destination]
    if not entries:
        raise ManifestError(f"{path}: no {GRADING_GROUP!r} row for {destination} (expected a line "
                            f"'{GRADING_GROUP},,,{destination}')")
    with open(path, newline="", encoding="utf-8") as f:
        lines = f.read().splitlines(keepends=True)
    row = io.StringIO()
    csv.writer(row, lineterminator="").writerow([GRADING_GROUP, url, sha256.lower(), destination])
    ending = "\n" if not lines[entries[0].line - 1].endswith("\r\n") else "\r\n"
    lines[entries[0].line - 1] = row.getvalue() + ending
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                               dir=os.path.dirname(os.path.abspath(path)))
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
            f.writelines(lines)
        read_manifest(tmp)  # never install a manifest the downloader would refuse
        os.chmod(tmp, os.stat(path).st_mode & 0o777)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return entries[0]._replace(url=url, sha256=sha256.lower())


# ------------------------------------------------------------------------------------------------ links

def _override_base(url: str, env: str) -> str:
    """``url`` with its scheme and host replaced by $env when set (tests point Drive/Dropbox at 127.0.0.1)."""
    base = os.environ.get(env, "").rstrip("/")
    if not base:
        return url
    parts = urllib.parse.urlsplit(url)
    return base + urllib.parse.urlunsplit(("", "", parts.path, parts.query, parts.fragment))


def parse_link(url: str) -> Link:
    """Resolve a published link: Google Drive (file id), Dropbox (``dl=1``) or a plain URL; DownloadError if unusable."""
    parts = urllib.parse.urlsplit(url.strip())
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host:
        raise DownloadError(f"{url}: not an http(s) link")
    query = urllib.parse.parse_qs(parts.query)
    if host in DRIVE_HOSTS:
        if "/folders/" in parts.path:
            raise DownloadError(f"{url}: a Google Drive folder link; share the file itself (right-click the "
                                f"file > Share > Copy link)")
        file_id = (query.get("id") or [""])[0]
        in_path = re.search(r"/d/([^/]+)", parts.path)  # /file/d/ID/view, /file/u/0/d/ID/view
        if not file_id and in_path:
            file_id = in_path.group(1)
        if not file_id or any(c not in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
                              for c in file_id):
            raise DownloadError(f"{url}: no Google Drive file id in this link (expected "
                                f"https://drive.google.com/file/d/ID/view or https://drive.google.com/uc?id=ID)")
        base = os.environ.get(DRIVE_BASE_ENV, "").rstrip("/") or DRIVE_BASE
        return Link("drive", f"{base}/uc?export=download&id={file_id}", file_id)
    if host in DROPBOX_HOSTS:
        if parts.path.startswith(("/home", "/preview")) or parts.path in ("", "/"):
            raise DownloadError(f"{url}: not a Dropbox share link (use Share > Copy link on the file)")
        pairs = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True) if k != "dl"]
        fixed = urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path,
                                         urllib.parse.urlencode(pairs + [("dl", "1")]), ""))
        return Link("dropbox", _override_base(fixed, DROPBOX_BASE_ENV))
    return Link("plain", url.strip())


class _PageParser(html.parser.HTMLParser):
    """Collects the forms (action, method, input fields), the links and the title of an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: List[Tuple[str, str, Dict[str, str]]] = []
        self.links: List[str] = []
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: List[Tuple[str, Optional[str]]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append((a.get("action", ""), a.get("method", "get").lower(), {}))
        elif tag == "input" and self.forms and a.get("name"):
            self.forms[-1][2][a["name"]] = a.get("value", "")
        elif tag == "a" and a.get("href"):
            self.links.append(a["href"])
        elif tag == "title":
            self._in_title = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data


def _describe_page(page: _HtmlPage) -> str:
    """What an HTML answer most likely is, and what to do about it."""
    parser = _PageParser()
    parser.feed(page.text)
    title = " ".join(parser.title.split())
    text = page.text.lower()
    if "quota" in title.lower() or "too many users have viewed or downloaded" in text:
        return ("a quota page: too many downloads of this file in the last 24 hours; wait a day, or publish the "
                "file elsewhere too (e.g. a GitHub release asset)")
    if urllib.parse.urlsplit(page.url).hostname == "accounts.google.com" or "servicelogin" in text \
            or title.lower().startswith("sign in") or "google accounts" in title.lower():
        return ("a Google sign-in page: the file is not shared publicly (Share > General access > "
                "'Anyone with the link')")
    shown = f' ("{title[:80]}")' if title else ""
    return f"an HTML page{shown} instead of the file (a web page, not a direct download link)"


def _drive_next_url(page: _HtmlPage) -> Optional[str]:
    """The URL behind Drive's "can't scan this file for viruses" page: its download form, or a confirm link."""
    parser = _PageParser()
    parser.feed(page.text)
    for action, method, fields in parser.forms:
        if method == "get" and "id" in fields and ("confirm" in fields or "download" in action):
            query = urllib.parse.urlencode(list(fields.items()))
            return urllib.parse.urljoin(page.url, action or page.url) + ("&" if "?" in action else "?") + query
    for href in parser.links:  # the older page: <a id="uc-download-link" href="/uc?export=download&confirm=...">
        if "confirm=" in href:
            return urllib.parse.urljoin(page.url, href)
    return None


# --------------------------------------------------------------------------------------------- download

def sha256_of(path: str) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_SIZE), b""):
            digest.update(chunk)
    return digest.hexdigest()


def looks_like_html(head: bytes) -> bool:
    """True when the first bytes of a file are an HTML document (what a failed share link returns)."""
    start = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return start.startswith((b"<!doctype html", b"<html", b"<head", b"<!--"))


def download(url: str, destination: str, sha256: str = "", retries: int = 3, backoff: float = 1.0,
             timeout: float = 60.0, progress: bool = True) -> str:
    """Fetch ``url`` (any published link style) to ``destination`` atomically, verified against ``sha256``.

    ``retries`` is the number of attempts in all (the first included); attempt k+1 waits
    ``backoff * 2**(k-1)`` seconds. Raises DownloadError; nothing is ever left at ``destination`` unless the
    download is complete and verified (and not an HTML page), and a file already there is only replaced by a
    verified one. Returns the sha256.
    """
    expected = sha256.strip().lower()
    link = parse_link(url)
    os.makedirs(os.path.dirname(os.path.abspath(destination)), exist_ok=True)
    if link.kind == "drive":
        actual, tmp = _fetch_drive(link, url, destination, retries, backoff, timeout, progress)
    else:
        actual, tmp = _fetch_with_retries(link.url, url, destination, retries, backoff, timeout, progress)
    try:
        with open(tmp, "rb") as f:
            if looks_like_html(f.read(HTML_SNIFF_BYTES)):
                with open(tmp, "rb") as page:
                    text = page.read(MAX_PAGE_BYTES).decode("utf-8", "replace")
                raise DownloadError(f"{destination}: {url} returned {_describe_page(_HtmlPage(url, text))}; "
                                    f"nothing was saved")
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


def _fetch_with_retries(request_url: str, link: str, destination: str, retries: int, backoff: float,
                        timeout: float, progress: bool,
                        opener: Optional[urllib.request.OpenerDirector] = None) -> Tuple[str, str]:
    """Stream ``request_url`` into a temp file beside ``destination``, retrying transient failures.

    Returns (sha256, temp path). An HTML answer is an error naming ``link`` (the link as published).
    """
    attempts = max(1, retries)
    for attempt in range(1, attempts + 1):
        try:
            return _fetch_once(request_url, destination, timeout, progress, opener)
        except _Retryable as exc:
            if attempt == attempts:
                raise DownloadError(f"{destination}: giving up after {attempts} attempt(s) on {link}: "
                                    f"{exc}") from None
            wait = backoff * 2 ** (attempt - 1)
            _warn(f"  attempt {attempt}/{attempts} failed ({exc}); retrying in {wait:g} s")
            time.sleep(wait)
        except _HtmlPage as page:
            if opener is not None:  # the Drive client reads the page itself
                raise
            raise DownloadError(f"{destination}: {link} returned {_describe_page(page)}; nothing was saved") from None
    raise AssertionError("unreachable")


def _fetch_once(url: str, destination: str, timeout: float, progress: bool,
                opener: Optional[urllib.request.OpenerDirector] = None) -> Tuple[str, str]:
    """One attempt: stream ``url`` into a temp file beside ``destination``; return (sha256, temp path)."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    folder = os.path.dirname(os.path.abspath(destination))
    name = os.path.basename(destination)
    fd, tmp = tempfile.mkstemp(prefix="." + name + ".", suffix=".part", dir=folder)
    done = False
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                response = (opener or urllib.request.build_opener()).open(request, timeout=timeout)
            except urllib.error.HTTPError as exc:
                exc.close()
                if exc.code >= 500:
                    raise _Retryable(f"HTTP {exc.code} {exc.reason}") from None
                raise DownloadError(f"{destination}: HTTP {exc.code} {exc.reason} for {url} (not retried: "
                                    f"check the URL in the manifest, and that the file is public)") from None
            with response:
                first = response.read(CHUNK_SIZE)
                if response.headers.get_content_type() == "text/html" or looks_like_html(first):
                    rest = response.read(max(0, MAX_PAGE_BYTES - len(first)))
                    raise _HtmlPage(response.geturl(), (first + rest).decode("utf-8", "replace"))
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                digest = hashlib.sha256()
                received = 0
                with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=name,
                          disable=not progress, leave=False) as bar:
                    chunk = first
                    while chunk:
                        out.write(chunk)
                        digest.update(chunk)
                        received += len(chunk)
                        bar.update(len(chunk))
                        chunk = response.read(CHUNK_SIZE)
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


def _fetch_drive(link: Link, url: str, destination: str, retries: int, backoff: float, timeout: float,
                 progress: bool) -> Tuple[str, str]:
    """A Google Drive file: through gdown when it is installed, else (or when gdown fails) our own client."""
    try:
        import gdown  # optional: installed on the grading machine
    except ImportError:
        gdown = None
    if gdown is not None:
        try:
            return _fetch_gdown(gdown, link, url, destination, progress)
        except DownloadError as exc:
            _warn(f"  gdown could not fetch it ({exc}); trying the built-in Drive client")
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    request_url = link.url
    for _ in range(MAX_DRIVE_PAGES):
        try:
            return _fetch_with_retries(request_url, url, destination, retries, backoff, timeout, progress, opener)
        except _HtmlPage as page:
            next_url = _drive_next_url(page)
            if next_url is None:
                raise DownloadError(f"{destination}: {url} returned {_describe_page(page)}; nothing was "
                                    f"saved") from None
            request_url = next_url  # Drive's "cannot scan this file for viruses" page: confirm and go on
    raise DownloadError(f"{destination}: {url} kept answering with web pages after {MAX_DRIVE_PAGES} requests; "
                        f"nothing was saved")


def _fetch_gdown(gdown, link: Link, url: str, destination: str, progress: bool) -> Tuple[str, str]:
    """gdown into a private folder beside ``destination``; returns (sha256, temp file path beside it)."""
    folder = os.path.dirname(os.path.abspath(destination))
    staging = tempfile.mkdtemp(prefix="." + os.path.basename(destination) + ".", suffix=".partial", dir=folder)
    try:
        output = os.path.join(staging, os.path.basename(destination))
        try:
            result = gdown.download(link.url, output, quiet=not progress, fuzzy=True)
        except Exception as exc:  # gdown's error types differ across its versions
            raise DownloadError(f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}") \
                from None
        if result is None or not os.path.isfile(output):
            raise DownloadError("gdown returned no file (access denied or a quota page?)")
        with open(output, "rb") as f:
            if looks_like_html(f.read(HTML_SNIFF_BYTES)):
                raise DownloadError("gdown saved a web page, not the file")
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(destination) + ".", suffix=".part", dir=folder)
        os.close(fd)
        os.replace(output, tmp)
        return sha256_of(tmp), tmp
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _describe(exc: BaseException) -> str:
    """A one-line description of a network error (URLError hides the cause in ``reason``)."""
    reason = getattr(exc, "reason", None)
    if isinstance(exc, urllib.error.URLError) and reason is not None:
        return f"{type(exc).__name__}: {reason}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


# ---------------------------------------------------------------------------------------- checkpoints

def missing_url_message(entry: ManifestEntry, manifest: str, submission: bool = False) -> str:
    """What to do when a manifest row has no URL yet and its file is missing (or, for the TAs, not in git)."""
    publish = (f"publish your checkpoint (`python -m tools.publish RUN/best.pth --problem "
               f"{'1' if 'p1' in entry.destination else '2'} --link URL` fills the row), see {SUBMITTING_SECTION}")
    if submission:
        return (f"error: {entry.destination}: no link in {manifest} (line {entry.line}), so the TAs' "
                f"`bash hw1_download_ckpt.sh` cannot fetch it and hw1_*.sh will find no checkpoint. Upload the "
                f"file (Google Drive, Dropbox or a GitHub release asset) and {publish}.")
    return (f"{entry.destination}: no URL in {manifest} yet (line {entry.line}). Either train with the "
            f"README's scripts and copy best.pth to {entry.destination}, or publish it (e.g. as a GitHub release "
            f"asset) and put its URL and `sha256sum` in {manifest}: {publish}; then rerun hw1_download.sh.")


def tracked_by_git(root: str, relative: str) -> bool:
    """True when ``relative`` is committed in the git repository at ``root`` (False without git or a repo)."""
    try:
        return subprocess.run(["git", "-C", root, "ls-files", "--error-unmatch", "--", relative],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def folder_outside_root(root: str, destination: str) -> Optional[str]:
    """The real folder ``destination`` would be written in, when a symlinked folder on its way (``checkpoints ->
    /elsewhere``) leads outside ``root``; None when it stays inside."""
    real_root = os.path.realpath(root)
    folder = os.path.realpath(os.path.dirname(os.path.abspath(destination)))
    return None if os.path.commonpath([real_root, folder]) == real_root else folder


def fetch_entry(entry: ManifestEntry, root: str, manifest: str, force: bool = False, retries: int = 3,
                backoff: float = 1.0, timeout: float = 60.0, submission: bool = False) -> Tuple[bool, str]:
    """Make one manifest row's file present and valid; return (ok, a short status for the summary).

    ``submission`` (hw1_download_ckpt.sh): a row without a link fails even when its file is here, unless the
    file is committed to git -- the TAs' clone has only what git holds and what the links fetch. A destination
    whose folder is a symlink leading outside the root is refused before anything is read or written.
    """
    destination = os.path.join(root, entry.destination)
    outside = folder_outside_root(root, destination)
    if outside is not None:
        _warn(f"error: {entry.destination}: refusing to write outside {root}: its folder leads through a symlink "
              f"to {outside}; make that folder a real one inside the repository")
        return False, f"REFUSED (its folder is a symlink to {outside}, outside the root)"
    present = os.path.isfile(destination)
    if submission and not entry.url:
        if present and tracked_by_git(root, entry.destination):
            return True, "ok (committed to git; no link needed)"
        _warn(missing_url_message(entry, manifest, submission=True))
        return False, f"NO LINK in {manifest} (see {SUBMITTING_SECTION})"
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
    # The course zips its folder (data_2025/, hw1_data/) itself; strip it so the contents land in the target.
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


def drive_link(data: DataArchive) -> str:
    """The Google Drive link of a course archive."""
    return f"https://drive.google.com/uc?id={data.file_id}"


def _manual_data_hint(root: str, data: DataArchive) -> str:
    """How to get the archive by hand."""
    return (f"or download {drive_link(data)} in a browser, save it as {os.path.join(root, data.archive)} and "
            f"rerun `bash hw1_download.sh {data.flag}` (it unpacks an archive already there)")


def fetch_data(root: str, data: DataArchive = DATA_2025, force: bool = False, progress: bool = True,
               retries: int = 3, backoff: float = 1.0, timeout: float = 60.0) -> Tuple[bool, str]:
    """Download a course archive (unless a valid one is there) and unpack it into ``root/<data.folder>``."""
    target = os.path.join(root, data.folder)
    archive = os.path.join(root, data.archive)
    if os.path.isdir(os.path.join(target, "p2_data", "validation")) and not force:
        return True, "ok (already present; --force re-downloads and unpacks again)"
    try:
        if force or not zipfile.is_zipfile(archive):
            if os.path.exists(archive) and not force:
                _warn(f"{data.archive}: not a valid zip archive; downloading it again")
            print(f"{data.archive}: downloading from Google Drive (id {data.file_id})")
            try:
                download(drive_link(data), archive, retries=retries, backoff=backoff, timeout=timeout,
                         progress=progress)
            except DownloadError as exc:
                raise DownloadError(f"{exc}; {_manual_data_hint(root, data)}") from None
            if not zipfile.is_zipfile(archive):
                raise DownloadError(f"{data.archive}: Google Drive did not return a zip archive; "
                                    f"{_manual_data_hint(root, data)}")
        else:
            print(f"{data.archive}: using the archive already there")
        if os.path.isdir(target):  # a partial or an older copy: overwrite file by file, delete nothing
            unpack_archive(archive, target, progress=progress)
        else:  # unpack beside it, then rename: an interrupted unpack never looks complete
            staging = tempfile.mkdtemp(prefix="." + data.folder + ".", suffix=".partial", dir=root)
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
    return True, f"unpacked (you may delete {data.archive})"


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
                    "Exit status 0 when everything requested is present and valid, 1 otherwise. "
                    "hw1_download_ckpt.sh is this with --submission.")
    parser.add_argument("--submission", action="store_true",
                        help="what the TAs' `bash hw1_download_ckpt.sh` runs: only the grading checkpoints, each "
                             "from its link in the manifest; a row without a link is an error (unless its file "
                             "is committed to git), naming the manifest and the README's 'Submitting' section")
    parser.add_argument("--data", action="store_true",
                        help=f"also fetch the course's 2025 dataset archive from Google Drive (id "
                             f"{DATA_2025.file_id}; gdown is used when installed) to {DATA_2025.archive} and "
                             f"unpack it into {DATA_2025.folder}/ (p1_data/, p2_data/); skipped when "
                             f"{DATA_2025.folder}/p2_data/validation exists (unless --force)")
    parser.add_argument("--data-2024", action="store_true",
                        help=f"also fetch the 2024 edition's archive (Google Drive id {DATA_2024.file_id}) to "
                             f"{DATA_2024.archive} and unpack it into {DATA_2024.folder}/ (not the 2025 data)")
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
                        help="folder that destinations (and the data folders) are relative to (default: the "
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
    parser = get_args_parser()
    args = parser.parse_args(argv)
    if args.submission and (args.data or args.data_2024 or args.dino_official or args.force):
        parser.error("--submission fetches the graded checkpoints only: no --data, --data-2024, --dino-official "
                     "or --force")
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
                if args.submission:
                    results.append((False, shown, f"no {group!r} rows (see {SUBMITTING_SECTION})"))
    for entry in entries:
        ok, status = fetch_entry(entry, root, shown, force=args.force, retries=args.retries,
                                 backoff=args.backoff, timeout=args.timeout, submission=args.submission)
        results.append((ok, entry.destination, status))
    for data in [d for d, wanted in ((DATA_2025, args.data), (DATA_2024, args.data_2024)) if wanted]:
        ok, status = fetch_data(root, data, force=args.force, retries=args.retries, backoff=args.backoff,
                                timeout=args.timeout)
        results.append((ok, data.folder + "/", status))

    print("\nsummary:")
    for ok, name, status in results:
        print(f"  {'ok  ' if ok else 'FAIL'}  {name}: {status}")
    failed = sum(1 for ok, _, _ in results if not ok)
    print(f"{len(results) - failed} of {len(results)} present and valid")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
