"""`meru fetch-checkpoint`: a released checkpoint to a local file, resumable and sha256-verified.

Sources, by URL:

- ``https://huggingface.co/ORG/REPO/resolve/REV/PATH`` (or ``hf://ORG/REPO/PATH``): ``huggingface_hub.
  hf_hub_download`` (its cache, its resume, the token from ``HF_TOKEN`` or ``hf auth login``, and
  ``HF_HUB_OFFLINE=1``: the cached copy only), then linked or copied to ``--out``;
- ``http(s)://``: bytes appended to ``OUT.part``; a later attempt (or a rerun after a dropped connection)
  asks for the rest with ``Range: bytes=N-``; a server that ignores the range (200 instead of 206) restarts
  the file from zero;
- ``file://``: a copy.

Checksums: the expected sha256 is ``--sha256`` (published) or, where none is published, the one recorded in
``--checksums FILE`` (lines ``SHA256  URL``) by the first download of that URL, so every later download is
verified against the first. A mismatch is one line naming the URL, both sums and the file; the bad file is
deleted (never left at ``--out``). ``--sha256-out`` gets ``SHA256  NAME`` (``sha256sum -c`` format).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import sys
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

from meru.io import write_text
from meru.arguments import add_fetch_checkpoint_arguments as add_arguments  # noqa: F401  (light: fast --help)

CHUNK = 1 << 20
HF_RESOLVE = re.compile(r"^https://huggingface\.co/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
#: a Google Drive folder (a page listing files, not a file): ATMG links its checkpoints this way
FOLDER_LINK = re.compile(r"^https://drive\.google\.com/drive/(u/\d+/)?folders/")


class FetchError(OSError):
    """A download failed or did not verify; the message names the URL, the file and what to do."""


def sha256_of(path: str | os.PathLike) -> str:
    """Hex sha256 of a file (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def hub_location(url: str) -> tuple[str, str, str] | None:
    """``(repo_id, filename, revision)`` of a Hugging Face hub file URL, else None."""
    if url.startswith("hf://"):
        parts = url[len("hf://") :].split("/", 2)
        return (f"{parts[0]}/{parts[1]}", parts[2], "main") if len(parts) == 3 and all(parts) else None
    m = HF_RESOLVE.match(url)
    return (m["repo"], unquote(m["path"]), m["rev"]) if m else None


# ----------------------------------------------------------------------------- checksum records


def recorded_sha256(checksums: Path | None, url: str) -> str | None:
    """The sha256 recorded for ``url`` in ``checksums`` (lines ``SHA256  URL``), or None."""
    if checksums is None or not checksums.is_file():
        return None
    for lineno, line in enumerate(checksums.read_text().splitlines(), 1):
        fields = line.split()
        if len(fields) == 2 and fields[1] == url:
            if not re.fullmatch(r"[0-9a-f]{64}", fields[0]):
                raise ValueError(f"{checksums}:{lineno}: {fields[0]!r} is not a sha256; delete the line")
            return fields[0]
    return None


def record_sha256(checksums: Path, url: str, digest: str) -> None:
    """Add ``SHA256  URL`` to ``checksums`` (rewritten atomically under an exclusive lock, so parallel
    downloads of other URLs do not lose each other's lines)."""
    import fcntl

    checksums.parent.mkdir(parents=True, exist_ok=True)
    with open(checksums.with_name(checksums.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        old = checksums.read_text().splitlines() if checksums.is_file() else []
        kept = [line for line in old if line.split()[1:] != [url]]
        write_text(checksums, "\n".join([*kept, f"{digest}  {url}"]) + "\n")


# ----------------------------------------------------------------------------- transports


def _http_attempt(url: str, part: Path, timeout: float) -> None:
    """One GET of ``url`` into ``part``: resumes with a Range request when ``part`` has bytes, appends on
    206, restarts from zero on 200; raises OSError (the bytes so far stay in ``part``) when cut short."""
    import http.client
    import urllib.error
    import urllib.request

    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing left to send: part is complete (the checksum decides)
            return
        raise
    with resp:
        if (resp.headers.get("Content-Type") or "").startswith("text/html"):
            raise FetchError(
                f"{url}: the server sent an HTML page, not a file (a landing or folder page? give a direct file URL)"
            )
        resumed = have > 0 and resp.status == 206
        length = resp.headers.get("Content-Length")
        total = (have if resumed else 0) + int(length) if length is not None else None
        with open(part, "ab" if resumed else "wb") as f:
            try:
                for block in iter(lambda: resp.read(CHUNK), b""):
                    f.write(block)
            except http.client.IncompleteRead as e:
                f.write(e.partial)
                raise ConnectionError(f"connection closed after {f.tell()} of {total} bytes") from None
            got = f.tell()
    if total is not None and got != total:
        raise ConnectionError(f"connection closed after {got} of {total} bytes")


def http_download(url: str, part: Path, attempts: int = 3, timeout: float = 60.0, backoff: float = 1.0) -> None:
    """``url`` into ``part`` with up to ``attempts`` tries, each resuming where the last one stopped."""
    for attempt in range(1, attempts + 1):
        try:
            return _http_attempt(url, part, timeout)
        except FetchError:
            raise
        except OSError as e:
            if attempt == attempts:
                have = part.stat().st_size if part.exists() else 0
                raise FetchError(
                    f"{url}: download failed after {attempts} attempt(s) ({e}); {have} bytes kept in {part}, "
                    f"rerun to resume, or place the file at {part.with_suffix('')} by hand"
                ) from None
            time.sleep(backoff * attempt)


def hub_download(repo_id: str, filename: str, revision: str, part: Path) -> None:
    """A hub file through huggingface_hub's cache (resume, HF_TOKEN, HF_HUB_OFFLINE), linked or copied to
    ``part``."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    from meru.models.hub import offline_unless_reachable

    offline_unless_reachable()  # an unreachable hub: the cache at once, not five retries with back-off
    try:
        cached = hf_hub_download(repo_id, filename, revision=revision)
    except LocalEntryNotFoundError:
        raise FetchError(
            f"hf://{repo_id}/{filename}: not in the Hugging Face cache and the hub is unreachable (or "
            f"HF_HUB_OFFLINE=1); download it once with network, or place the file at {part.with_suffix('')}"
        ) from None
    except HfHubHTTPError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FetchError(f"hf://{repo_id}/{filename}: {first} (gated or private? set HF_TOKEN)") from None
    part.unlink(missing_ok=True)
    try:
        os.link(os.path.realpath(cached), part)
    except OSError:  # other file system: copy
        shutil.copyfile(cached, part)


def fetch_to_part(url: str, part: Path, attempts: int = 3, timeout: float = 60.0) -> None:
    """Bring ``url`` to ``part`` by its scheme (module doc)."""
    hub = hub_location(url)
    if hub:
        return hub_download(*hub, part)
    if url.startswith("hf://"):
        raise FetchError(f"{url}: names a hub repository, not a file; give the file: hf://ORG/REPO/PATH")
    if FOLDER_LINK.match(url):
        raise FetchError(
            f"{url}: a Google Drive folder link, not a file; download the checkpoint by hand and give its path as "
            "url: file:///..."
        )
    scheme = urlparse(url).scheme
    if scheme in ("http", "https"):
        return http_download(url, part, attempts=attempts, timeout=timeout)
    if scheme == "file":
        src = Path(unquote(urlparse(url).path))
        if not src.is_file():
            raise FetchError(f"{url}: {src} not found")
        shutil.copyfile(src, part)
        return
    raise ValueError(f"{url}: unsupported URL scheme {scheme!r}; use https://, http://, file:// or hf://")


# ----------------------------------------------------------------------------- verified fetch


def fetch_checkpoint(
    url: str,
    out: str | os.PathLike,
    sha256: str | None = None,
    checksums: str | os.PathLike | None = None,
    sha256_out: str | os.PathLike | None = None,
    attempts: int = 3,
    timeout: float = 60.0,
) -> str:
    """Download ``url`` to ``out`` (resumable), verify it, and return its sha256.

    Expected sum: ``sha256`` if given, else the one recorded for ``url`` in ``checksums``; with neither, the
    sum is computed and recorded there. On mismatch the partial file is deleted and FetchError names both
    sums. ``out`` appears only once verified (``OUT.part`` renamed)."""
    out = Path(out)
    checksums = Path(checksums) if checksums else None
    expected = sha256.lower() if sha256 else recorded_sha256(checksums, url)
    where = "config sha256" if sha256 else f"recorded in {checksums}"
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(out.name + ".part")
    fetch_to_part(url, part, attempts=attempts, timeout=timeout)
    digest = sha256_of(part)
    if expected and digest != expected:
        part.unlink(missing_ok=True)
        raise FetchError(
            f"{url}: sha256 mismatch, got {digest}, {where} says {expected}; the download was deleted "
            "(rerun to fetch again; if the file changed upstream, correct the sha256)"
        )
    if checksums is not None and not expected:
        record_sha256(checksums, url, digest)
    if sha256_out:
        write_text(sha256_out, f"{digest}  {out.name}\n")
    os.replace(part, out)
    return digest


def run(args: argparse.Namespace) -> int:
    if args.sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", args.sha256):
        print(f"meru fetch-checkpoint: error: --sha256 {args.sha256!r} is not 64 hex digits", file=sys.stderr)
        return 2
    try:
        digest = fetch_checkpoint(
            args.url,
            args.out,
            args.sha256,
            args.checksums,
            args.sha256_out,
            attempts=args.attempts,
            timeout=args.timeout,
        )
    except (FetchError, ValueError) as err:
        if not args.unavailable_out:
            raise
        # the checkpoint is reported unavailable (one line) and left out of later plans; the download still fails
        reason = " ".join(str(err).split())
        write_text(args.unavailable_out, reason + "\n")
        print(f"meru fetch-checkpoint: unavailable: {reason} (recorded in {args.unavailable_out})", file=sys.stderr)
        return 3
    if args.unavailable_out:  # fetched now: an old marker no longer holds
        Path(args.unavailable_out).unlink(missing_ok=True)
    print(f"{digest}  {args.out}")
    return 0
