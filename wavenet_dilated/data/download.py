"""Download with resume and verification, safe tar extraction, and :func:`download_ljspeech` built from them.

Nothing here knows a corpus's layout beyond the archive's top-level directory and its ``metadata.csv``; an interrupted
download resumes from its ``.part`` file, and no archive member is ever written outside the target directory.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import tarfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path, PurePosixPath
from typing import Any

from tqdm import tqdm

from .ljspeech import LJSPEECH_SHA256, LJSPEECH_SIZE, LJSPEECH_URL, METADATA_FILE

__all__ = ["download", "verify_file", "extract_archive", "download_ljspeech"]

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20  # bytes per read when downloading and hashing


def verify_file(path: str | os.PathLike[str], expected_size: int | None = None, expected_sha256: str | None = None) -> None:
    """Check a file's size in bytes and/or sha256 (hex); ``None`` skips that check.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: a mismatch, naming the expected and the found value (the file is left in place).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"expected a file to verify at {str(path)!r}")
    size = path.stat().st_size
    if expected_size is not None and size != expected_size:
        raise ValueError(f"{str(path)!r} has the wrong size: expected {expected_size} bytes, found {size}")
    if expected_sha256 is not None:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
        found = h.hexdigest()
        if found != expected_sha256.lower():
            raise ValueError(f"{str(path)!r} has the wrong sha256: expected {expected_sha256.lower()}, found {found}")


def _open_at(url: str, offset: int, timeout: float) -> tuple[Any, int, int | None]:
    """Open ``url`` for reading from byte ``offset``: ``(stream, actual offset, total size or None)``.

    ``actual offset`` is 0 when the source cannot resume (an HTTP server that ignores Range): the caller restarts.
    """
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        path = Path(urllib.request.url2pathname(parsed.path))
        if not path.is_file():
            raise FileNotFoundError(f"cannot download {url!r}: expected a file at {str(path)!r}")
        total = path.stat().st_size
        f = open(path, "rb")  # closed by the caller
        offset = offset if offset <= total else 0
        f.seek(offset)
        return f, offset, total
    if parsed.scheme not in ("http", "https"):
        raise ValueError(f"url must be http(s):// or file://, found {url!r}")
    headers = {"User-Agent": "wavenet_dilated"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    length = response.headers.get("Content-Length")
    if offset and response.status == 206:
        content_range = response.headers.get("Content-Range", "")  # "bytes START-END/TOTAL"
        try:
            start = int(content_range.split()[1].split("-")[0])
            total_str = content_range.split("/")[1]
        except (IndexError, ValueError):
            response.close()
            raise ValueError(f"bad Content-Range {content_range!r} from {url!r} for a request from byte {offset}") from None
        if start != offset:
            response.close()
            raise ValueError(f"{url!r} answered a request from byte {offset} with bytes from {start}")
        total = int(total_str) if total_str.isdigit() else (offset + int(length) if length else None)
        return response, offset, total
    return response, 0, int(length) if length else None


def download(
    url: str,
    path: str | os.PathLike[str],
    expected_size: int | None = None,
    expected_sha256: str | None = None,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` to ``path``, resuming a partial ``<path>.part`` left by an interrupted run, then verify.

    Resuming sends ``Range: bytes=<size of .part>-``; a server that ignores it (200 instead of 206) restarts the
    download. ``file://`` URLs resume by seeking. An existing ``path`` that verifies is returned untouched.

    Raises:
        ValueError: size or sha256 mismatch (the bad file is deleted, so the next run starts afresh), a bad URL scheme,
            or an inconsistent server answer.
        FileNotFoundError: a ``file://`` URL names no file.
        OSError: the network failed or the server refused (one line: the reason, what was kept, how to fetch the file
            by hand); the ``.part`` file is kept for resuming.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file():
        try:
            verify_file(path, expected_size, expected_sha256)
            return path
        except ValueError as e:
            logger.warning("%s; downloading it again", e)
            path.unlink()
    part = path.with_name(path.name + ".part")
    offset = part.stat().st_size if part.is_file() else 0
    if expected_size is not None and offset > expected_size:
        part.unlink()
        offset = 0
    stream = None
    if expected_size is None or offset < expected_size:
        try:
            stream, offset, total = _open_at(url, offset, timeout)
        except urllib.error.HTTPError as e:
            e.close()
            if not (e.code == 416 and offset):
                raise _unreachable(url, path, part, f"the server answered HTTP {e.code} ({e.reason})") from None
            # "Range Not Satisfiable" for a request from the end of .part: it is complete; verification decides.
            stream = None
        except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as e:
            raise _unreachable(url, path, part, _reason(e)) from None
    if stream is not None:
        with stream, open(part, "ab" if offset else "wb") as out:
            bar = tqdm(
                total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                desc=f"download {path.name}", disable=not progress,
            )  # fmt: skip
            with bar:
                while chunk := _read(stream, url, path, part):
                    out.write(chunk)
                    bar.update(len(chunk))
    try:
        verify_file(part, expected_size, expected_sha256)
    except ValueError as e:
        part.unlink()
        raise ValueError(f"download of {url!r} failed verification and was deleted: {e}") from None
    os.replace(part, path)
    return path


def _reason(err: BaseException) -> str:
    """What went wrong on the network, in words: the socket's reason inside a ``URLError``, else the error itself."""
    reason = getattr(err, "reason", None) or err
    text = " ".join(str(reason).split()) or type(reason).__name__
    return f"{text} (no network connection?)" if isinstance(reason, OSError) else text


def _unreachable(url: str, path: Path, part: Path, reason: str) -> OSError:
    """The one-line error for a download that the network interrupted or refused: what happened, what was kept, and
    how to do it by hand."""
    kept = part.stat().st_size if part.is_file() else 0
    resume = (f"the {kept:,} bytes received so far are kept in {str(part)!r} and the next run resumes from there"
              if kept else "nothing was written")
    return OSError(f"cannot download {url}: {reason}; {resume}; rerun when the network is back, or fetch the file "
                   f"yourself and save it as {str(path)!r} (it is verified before use)")


def _read(stream: Any, url: str, path: Path, part: Path) -> bytes:
    """The next chunk of a download; a network failure mid-way is :func:`_unreachable` (the ``.part`` file stays)."""
    try:
        return stream.read(_CHUNK)
    except (TimeoutError, ConnectionError, urllib.error.URLError, http.client.HTTPException) as e:
        raise _unreachable(url, path, part, _reason(e)) from None


def _check_member(member: tarfile.TarInfo, root: str) -> None:
    """Refuse a tar member that would write (or link) outside ``root`` or is not a plain file/dir/link."""
    name = member.name

    def escapes(p: str) -> bool:
        return os.path.commonpath([root, os.path.normpath(os.path.join(root, p))]) != root

    def refuse(why: str) -> None:
        raise ValueError(f"unsafe archive member {name!r}: {why}; refusing to extract")

    if name.startswith(("/", "\\")) or os.path.isabs(name) or PurePosixPath(name).drive or ":" in name.split("/")[0]:
        refuse("absolute path")
    if ".." in PurePosixPath(name.replace("\\", "/")).parts:
        refuse("path contains '..'")
    if escapes(name):
        refuse("path outside the target directory")
    if member.issym():
        link = member.linkname
        if os.path.isabs(link) or escapes(os.path.join(os.path.dirname(name), link)):
            refuse(f"symlink to {link!r} points outside the target directory")
    elif member.islnk():
        link = member.linkname
        if os.path.isabs(link) or escapes(link):
            refuse(f"hard link to {link!r} points outside the target directory")
    elif not (member.isfile() or member.isdir()):
        refuse("not a regular file, directory or link (device, fifo …)")


def extract_archive(archive: str | os.PathLike[str], dest: str | os.PathLike[str]) -> Path:
    """Extract a tar archive (any compression tarfile reads) into ``dest``, refusing members that escape it.

    Every member is checked before it is written: absolute paths, ``..`` components, symlinks or hard links pointing
    outside ``dest`` and special files raise a ValueError naming the member. Extraction also uses tarfile's
    ``filter="data"`` where the Python version has it. One streaming pass (no seeking, which is slow for bz2); if a bad
    member is found, the members before it have already been extracted — all of them inside ``dest``.

    Returns:
        ``dest``.
    """
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise FileNotFoundError(f"archive not found: expected a file at {str(archive)!r}")
    dest.mkdir(parents=True, exist_ok=True)
    root = os.path.realpath(dest)
    extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    try:
        tf = tarfile.open(archive, "r|*")
    except tarfile.TarError as e:
        raise ValueError(f"cannot open {str(archive)!r} as a tar archive: {e}") from e
    with tf:
        for member in tf:
            _check_member(member, root)
            tf.extract(member, root, **extra)
    return dest


def _archive_stem(name: str) -> str:
    for suffix in (".tar.bz2", ".tar.gz", ".tar.xz", ".tbz2", ".tgz", ".tar"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def download_ljspeech(
    dest_dir: str | os.PathLike[str],
    url: str = LJSPEECH_URL,
    expected_size: int | None = LJSPEECH_SIZE,
    expected_sha256: str | None = LJSPEECH_SHA256,
    progress: bool = True,
    keep_archive: bool = True,
) -> Path:
    """Download, verify and extract LJSpeech 1.1 under ``dest_dir``; returns the corpus directory.

    Idempotent: a finished extraction (marked by ``dest_dir/.<archive>.extracted``) returns at once; an interrupted
    download resumes (see :func:`download`). The archive is ~2.6 GB and extracts to ~3.8 GB.

    Returns:
        ``dest_dir / "LJSpeech-1.1"`` (the archive's name without its tar suffix), containing ``metadata.csv``.

    Raises:
        ValueError: verification failed (the bad archive is deleted), an unsafe archive member, or an archive without
            ``<name>/metadata.csv``.
    """
    dest_dir = Path(dest_dir)
    name = os.path.basename(urllib.parse.urlparse(url).path)
    if not name:
        raise ValueError(f"url must end in an archive file name, found {url!r}")
    corpus = dest_dir / _archive_stem(name)
    marker = dest_dir / f".{name}.extracted"
    if marker.is_file() and (corpus / METADATA_FILE).is_file():
        return corpus
    archive = download(url, dest_dir / name, expected_size, expected_sha256, progress=progress)
    logger.info("extracting %s into %s", archive, dest_dir)
    extract_archive(archive, dest_dir)
    if not (corpus / METADATA_FILE).is_file():
        raise ValueError(f"archive {str(archive)!r} has no {corpus.name}/{METADATA_FILE}: expected an LJSpeech archive")
    marker.write_text(f"{name}\n")
    if not keep_archive:
        archive.unlink()
    return corpus
