"""Downloading pretrained files into the cache: streamed to disk with a progress bar, resumed with an
HTTP Range request after an interrupted transfer, retried with back-off, checked (size, sha256) and only
then renamed into place, so the cache never holds a partial or corrupt file under its final name.

`file://` URLs and plain paths are used where they are (nothing is copied). `VIVIT_OFFLINE=1` allows
the cache only; `VIVIT_ZOO_URL` replaces the official base URL (mirrors, air-gapped sites).
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from http.client import HTTPException
from pathlib import Path

from vivit.backends import vivit_home
from vivit.errors import VivitError

OFFICIAL_BASE_URL = "https://storage.googleapis.com/scenic-bucket/vivit/"
BASE_URL_ENV = "VIVIT_ZOO_URL"
OFFLINE_ENV = "VIVIT_OFFLINE"
CHUNK = 1 << 20
RETRYABLE_STATUS = (408, 429, 500, 502, 503, 504)
RETRIES = 3        # attempts per download; each resumes where the previous one stopped
BACKOFF_S = 1.0    # wait before attempt n + 1: BACKOFF_S * 2 ** (n - 1)
TIMEOUT_S = 60.0   # socket timeout (connect and each read)


def cache_root() -> Path:
    """Where pretrained models are kept: `$VIVIT_HOME/models` (default ~/.cache/vivit/models)."""
    return vivit_home() / "models"


def offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def resolve_url(url: str, relative_to: Path | None = None) -> str:
    """The URL to fetch: the official base replaced by `VIVIT_ZOO_URL` when set; a relative URL is joined
    to that base, or, when it names an existing file next to the registry (`relative_to`), is that file."""
    base = os.environ.get(BASE_URL_ENV, "").strip()
    if base and not base.endswith("/"):
        base += "/"
    if url.startswith(OFFICIAL_BASE_URL):
        return (base or OFFICIAL_BASE_URL) + url[len(OFFICIAL_BASE_URL):]
    if is_remote(url) or url.startswith("file:") or Path(url).expanduser().is_absolute():
        return url
    if relative_to is not None and (relative_to / url).exists():
        return str(relative_to / url)
    return (base or OFFICIAL_BASE_URL) + url


def is_remote(url: str) -> bool:
    return urllib.parse.urlsplit(url).scheme in ("http", "https")


def local_path(url: str) -> Path:
    """The file a `file://` URL or a plain path names."""
    if url.startswith("file:"):
        return Path(urllib.request.url2pathname(urllib.parse.urlsplit(url).path))
    return Path(url).expanduser()


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def check_file(path: Path, url: str, size: int | None, sha256: str | None) -> None:
    """Size and sha256 as the registry states them (when it does)."""
    got = path.stat().st_size
    if size is not None and got != size:
        raise VivitError(f"download of {url} has {got} bytes, the registry says {size}: refused")
    if sha256 is not None and (digest := file_digest(path)) != sha256:
        raise VivitError(f"download of {url} has sha256 {digest}, the registry says {sha256}: refused")


def local_file(url: str, size: int | None = None, sha256: str | None = None) -> Path:
    """The file (or folder) a `file://` URL or a plain path names, checked like a download."""
    path = local_path(url)
    if not path.exists():
        raise VivitError(f"{url}: no such file or folder")
    if path.is_file():
        check_file(path, url, size, sha256)
    return path


def fetch(url: str, dest: Path, *, size: int | None = None, sha256: str | None = None, retries: int | None = None,
          quiet: bool = False) -> Path:
    """A local, checked copy of `url`: `dest` when already downloaded, the file itself for `file://` URLs
    and paths, else a download to `dest` (resumed from `dest.part`; `retries` attempts, default RETRIES)."""
    retries = RETRIES if retries is None else retries
    if not is_remote(url):
        return local_file(url, size, sha256)
    if dest.is_file():
        return dest
    if offline():
        raise VivitError(f"{url} is not in the cache ({dest}) and {OFFLINE_ENV}=1 allows no download; "
                         f"unset {OFFLINE_ENV} or put the file there")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for attempt in range(1, retries + 1):
        try:
            _transfer(url, part, TIMEOUT_S, quiet)
            break
        except _Retryable as e:
            if attempt == retries:
                raise VivitError(f"download failed: {url}: {e} (after {retries} attempts; "
                                 "run again to resume)") from None
            time.sleep(BACKOFF_S * 2 ** (attempt - 1))
    try:
        check_file(part, url, size, sha256)
    except VivitError:
        part.unlink()
        raise
    os.replace(part, dest)
    return dest


class _Retryable(Exception):
    """A transient failure (network error, 5xx, a connection dropped mid-file): try again, resuming."""


def _open(url: str, offset: int, timeout: float):
    request = urllib.request.Request(url, headers={"User-Agent": "vivit", "Accept-Encoding": "identity"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # the partial file is already whole (or longer than the file): start over
            raise
        message = f"HTTP {e.code} {e.reason}"
        if e.code in RETRYABLE_STATUS:
            raise _Retryable(message) from None
        raise VivitError(f"download failed: {url}: {message}") from None
    except (urllib.error.URLError, socket.timeout, ConnectionError, HTTPException) as e:
        raise _Retryable(f"network error: {getattr(e, 'reason', e)}") from None


def _transfer(url: str, part: Path, timeout: float, quiet: bool) -> None:
    """Append the rest of `url` to `part` (a Range request when `part` has bytes; a full GET otherwise)."""
    from tqdm import tqdm

    offset = part.stat().st_size if part.exists() else 0
    try:
        response = _open(url, offset, timeout)
    except urllib.error.HTTPError:  # 416: nothing left to fetch from this offset
        part.unlink()
        offset, response = 0, _open(url, 0, timeout)
    with response:
        if offset and response.status != 206:  # the server ignored the Range header: the whole file again
            offset = 0
        elif offset and not response.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
            part.unlink()  # a range we did not ask for: start over on the next attempt
            raise _Retryable(f"the server answered another range ({response.headers.get('Content-Range')})")
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        received = offset
        name = urllib.parse.urlsplit(url).path.rstrip("/").split("/")[-2:]
        with part.open("ab" if offset else "wb") as f, tqdm(
                total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                desc="/".join(name), disable=quiet or None, leave=False) as bar:
            try:
                while block := response.read(CHUNK):
                    f.write(block)
                    received += len(block)
                    bar.update(len(block))
            except (OSError, HTTPException) as e:  # socket errors and timeouts are OSErrors
                raise _Retryable(f"connection lost after {received} bytes: {e}") from None
    if total is not None and received < total:
        raise _Retryable(f"connection closed after {received} of {total} bytes")
