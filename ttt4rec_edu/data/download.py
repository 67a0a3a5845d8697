"""Getting a dataset file onto the machine: cache, pre-filled mirrors, or a resumable checked download.

:func:`find_or_download` takes a dataset's :class:`DatasetInfo` (file name, URLs, sha256) and knows nothing
about dataset names: the registry looks a name up and passes the entry (``ensure_dataset_file`` in
``registry.py`` is the public way in, by name or by entry). Where the file is looked for, in this order:

1. the cache folder: ``$TTT4REC_DATA_DIR``, else ``<repo>/data/cache`` when the library runs from a source
   checkout, else ``~/.cache/ttt4rec_edu``;
2. pre-filled mirror folders: ``$TTT4REC_DATA_MIRRORS`` (folders separated by ``os.pathsep``; the Makefile
   points it at ``../shared/data``). A mirror file is used in place, never copied;
3. a download from the dataset's public URL into the cache.

Whenever the entry has a sha256 it is checked. A download goes to ``<file>.part`` first (an interrupted
download resumes from there with an HTTP ``Range`` request) and is renamed into place only after the
checksum matched; a cached or downloaded file whose checksum does not match is renamed
``<file>.sha256-mismatch`` and never used, a mirror copy that does not match is skipped with a warning and
left as it is. Only the standard library's ``urllib`` is used.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from typing import Iterable, List, Optional, Union

from .dataset_info import DatasetInfo
from .errors import ChecksumError, DownloadError

PathLike = Union[str, "os.PathLike[str]"]
CHUNK = 1 << 20
USER_AGENT = "ttt4rec-edu/0.1 (Python urllib)"


def sha256_of(path: PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def default_cache_dir() -> Path:
    """``$TTT4REC_DATA_DIR``, else ``<repo>/data/cache`` in a source checkout, else ``~/.cache/ttt4rec_edu``."""
    env = os.environ.get("TTT4REC_DATA_DIR")
    if env:
        return Path(env).expanduser()
    repo = Path(__file__).resolve().parents[2]
    if (repo / "pyproject.toml").is_file() and (repo / "ttt4rec_edu").is_dir():
        return repo / "data" / "cache"
    return Path.home() / ".cache" / "ttt4rec_edu"


def mirror_dirs() -> List[Path]:
    """Folders named in ``$TTT4REC_DATA_MIRRORS`` (``os.pathsep``-separated), in order."""
    env = os.environ.get("TTT4REC_DATA_MIRRORS", "")
    return [Path(p).expanduser() for p in env.split(os.pathsep) if p.strip()]


def _set_aside(path: Path) -> Path:
    """Rename a file with a wrong checksum to ``<name>.sha256-mismatch`` so it is never used again."""
    name = path.name[:-len(".part")] if path.name.endswith(".part") else path.name
    aside = path.with_name(name + ".sha256-mismatch")
    os.replace(path, aside)
    return aside


def download_file(url: str, dest: PathLike, sha256: Optional[str] = None, progress: bool = True,
                  timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` with a progress bar, resume and checksum; returns ``dest``.

    The bytes go to ``dest + ".part"``; if that file exists already (an earlier, interrupted run), only the
    missing tail is requested (``Range: bytes=<size>-``). When the server ignores the range, the download
    starts over. On success the ``.part`` file is checked against ``sha256`` (when given) and renamed to
    ``dest`` atomically. A mismatch renames it to ``dest + ".sha256-mismatch"`` and raises
    :class:`ChecksumError`; a network failure raises :class:`DownloadError` and keeps the ``.part`` file.
    """
    from tqdm.auto import tqdm

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            response = None  # the partial file already holds every byte: just check it
        else:
            raise DownloadError(f"HTTP {exc.code} {exc.reason} for {url}", dest) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(f"cannot reach {url} ({reason})", dest) from None

    if response is not None:
        with response:
            status = getattr(response, "status", 200)
            resumed = offset > 0 and status == 206
            if offset and not resumed:
                offset = 0  # server sent the whole file: start over
            length = response.headers.get("Content-Length")
            total = offset + int(length) if length is not None else None
            received = offset
            with open(part, "ab" if resumed else "wb") as out, tqdm(
                total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                desc=dest.name, disable=not progress, leave=False,
            ) as bar:
                try:
                    for block in iter(lambda: response.read(CHUNK), b""):
                        out.write(block)
                        received += len(block)
                        bar.update(len(block))
                except (OSError, http.client.HTTPException) as exc:
                    raise DownloadError(f"connection lost after {received} bytes of {url} ({exc}); "
                                        f"run again to resume from {part}", dest) from None
            if total is not None and received < total:
                raise DownloadError(f"connection closed after {received} of {total} bytes of {url}; run "
                                    f"again to resume from {part}", dest)

    if sha256:
        actual = sha256_of(part)
        if actual.lower() != sha256.lower():
            aside = _set_aside(part)
            raise ChecksumError(
                f"sha256 mismatch for the download of {url}: expected {sha256.lower()}, got {actual}. The "
                f"file was kept aside as {aside} and is not used; delete it and try again, or check the URL",
                dest)
    os.replace(part, dest)
    return dest


def _verified(path: Path, sha256: Optional[str], where: str) -> bool:
    if not sha256:
        return True
    actual = sha256_of(path)
    if actual.lower() == sha256.lower():
        return True
    warnings.warn(f"{where} file {path} has sha256 {actual}, expected {sha256}; not using it", stacklevel=3)
    return False


def _manual_instructions(info: DatasetInfo, folder: Path, mirrors: Iterable[Path]) -> str:
    urls = ", ".join(info.urls) if info.urls else "(no direct link)"
    where = f"put the file {info.file_name!r} into {folder}"
    mirror_text = ", ".join(str(m) for m in mirrors) or "none set"
    page = f" Get it from {info.homepage}." if info.homepage else ""
    return (f"dataset {info.name!r}: {where} (download URL: {urls}).{page} Mirror folders searched "
            f"(TTT4REC_DATA_MIRRORS): {mirror_text}.")


def find_or_download(info: DatasetInfo, cache_dir: Optional[PathLike] = None, download: bool = True,
                     progress: bool = True) -> Path:
    """Path of the raw file ``info.file_name``: from the cache, a mirror, or downloaded from ``info.urls``.

    Raises :class:`DownloadError` saying which file to put where when no copy is found and downloading is
    off, impossible (no network) or has no direct URL.
    """
    if not isinstance(info, DatasetInfo):
        raise TypeError(f"find_or_download takes a DatasetInfo, got {info!r}; for a dataset name use "
                        "ttt4rec_edu.data.ensure_dataset_file")
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    cached = folder / info.file_name
    if cached.is_file():
        if _verified(cached, info.sha256, "cached"):
            return cached
        _set_aside(cached)
    mirrors = mirror_dirs()
    for mirror in mirrors:
        candidate = mirror / info.file_name
        if candidate.is_file() and _verified(candidate, info.sha256, "mirror"):
            return candidate
    if not download:
        raise DownloadError("no local copy and download=False: " + _manual_instructions(info, folder, mirrors))
    if not info.urls:
        raise DownloadError("this file has no direct download link: "
                            + _manual_instructions(info, folder, mirrors))
    failures = []
    for url in info.urls:
        try:
            return download_file(url, cached, sha256=info.sha256, progress=progress)
        except ChecksumError:
            raise
        except DownloadError as exc:
            failures.append(str(exc))
    raise DownloadError("download failed (" + "; ".join(failures) + "). Without network, "
                        + _manual_instructions(info, folder, mirrors))


__all__ = ["default_cache_dir", "download_file", "find_or_download", "mirror_dirs", "sha256_of"]
