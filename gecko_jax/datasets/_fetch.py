"""Downloading and preparing a dataset into the cache: resumable, verified, atomic, with progress.

* HTTP(S) files are written to ``<cache>/datasets/.downloads/<name>/<file>.part``; a ``.part`` left by an interrupted
  run (or a connection dropped mid-file) continues with ``Range: bytes=N-`` (a server that ignores it sends the whole
  file, which then replaces the part). The finished file is checked (size, sha256 pin or recorded digest, MD5) before
  it is renamed into place; a mismatch deletes it and raises ``ChecksumError``.
* Hub files come through ``huggingface_hub.hf_hub_download`` (its own cache, resume and ``HF_ENDPOINT``) and are
  checked the same way.
* The dataset folder is assembled in a temporary sibling and renamed into place with a manifest of its files; an
  exclusive lock per dataset makes a second process wait and reuse the first one's result.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import pathlib
import shutil
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile

from gecko_jax.datasets._manifest import MANIFEST, ChecksumError, cache_complete
from gecko_jax.datasets._registry import Dataset, Remote, Source
from gecko_jax.fileio import file_lock

CHUNK = 1 << 16
RETRIES = 3


def _digests(path: pathlib.Path) -> tuple[str, str]:
    sha, md5 = hashlib.sha256(), hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
            md5.update(block)
    return sha.hexdigest(), md5.hexdigest()


def verify(path: pathlib.Path, remote: Remote, recorded: str | None, origin: str) -> str:
    """Check ``path`` against the pins of ``remote`` (or the ``recorded`` digest); returns its sha256."""
    size = path.stat().st_size
    if remote.size is not None and size != remote.size:
        raise ChecksumError(f"{origin}: got {size} bytes, expected {remote.size}; the partial file was removed, "
                            "fetch again (the source may have changed)")
    sha, md5 = _digests(path)
    want = remote.sha256 or recorded
    if want is not None and sha != want:
        fix = ("a changed upstream file needs a new pin in gecko_jax/datasets/_registry.py" if remote.sha256 else
               "if the source really changed, delete the dataset's cache folder and its .downloads/<name>/recorded.json "
               "to accept the new file")
        raise ChecksumError(f"{origin}: sha256 {sha} does not match the expected {want} "
                            f"({'pinned' if remote.sha256 else 'recorded at the first download'}); the file was "
                            f"removed; {fix}")
    if remote.md5 is not None and md5 != remote.md5:
        raise ChecksumError(f"{origin}: md5 {md5} does not match the published {remote.md5}; the file was removed")
    return sha


def _open(url: str, start: int, timeout: float):
    headers = {"User-Agent": "gecko-jax"}
    if start:
        headers["Range"] = f"bytes={start}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def http_download(remote: Remote, dest: pathlib.Path, *, recorded: str | None = None, progress: bool = True,
                  timeout: float = 60.0) -> str:
    """Download ``remote.url`` to ``dest`` (resuming ``dest.part``), verify it, rename it into place.

    Returns:
      The sha256 of the file.
    """
    from tqdm.auto import tqdm

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    attempt = 0
    expected = remote.size
    while True:
        start = part.stat().st_size if part.exists() else 0
        try:
            with _open(remote.url, start, timeout) as resp:
                status = getattr(resp, "status", 200)
                if start and status != 206:  # the server ignored the range: start over
                    start = 0
                length = resp.headers.get("Content-Length")
                total = remote.size or (start + int(length) if length and length.isdigit() else None)
                expected = expected or total
                with open(part, "ab" if start else "wb") as out, tqdm(
                        total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
                        desc=dest.name, disable=not progress, leave=False, file=sys.stderr) as bar:
                    for block in iter(lambda: resp.read(CHUNK), b""):
                        out.write(block)
                        bar.update(len(block))
                    out.flush()
                    os.fsync(out.fileno())
        except urllib.error.HTTPError as e:
            if e.code == 416 and start:  # range past the end: the part is already whole
                pass
            else:
                raise ConnectionError(f"{remote.url}: HTTP {e.code} {e.reason}") from None
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError, OSError) as e:
            attempt += 1
            if attempt > RETRIES:
                raise ConnectionError(f"{remote.url}: download failed after {RETRIES} retries ({e}); run the same "
                                      f"command again to resume from {part}") from None
            time.sleep(min(2.0 ** attempt, 10.0) * 0.1)
            continue
        if expected is not None and part.stat().st_size < expected:  # connection closed early
            attempt += 1
            if attempt > RETRIES:
                raise ConnectionError(f"{remote.url}: got {part.stat().st_size} of {expected} bytes after "
                                      f"{RETRIES} retries; run the same command again to resume from {part}")
            continue
        break
    try:
        sha = verify(part, remote, recorded, remote.url)
    except ChecksumError:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, dest)
    return sha


def hub_download(source: Source, remote: Remote, *, recorded: str | None = None) -> tuple[pathlib.Path, str]:
    """One file of a Hub dataset repository through ``huggingface_hub`` (honours ``HF_ENDPOINT``, ``HF_HOME``)."""
    from huggingface_hub import hf_hub_download

    local = pathlib.Path(hf_hub_download(source.repo_id, remote.url, repo_type="dataset", revision=source.revision,
                                         endpoint=os.environ.get("HF_ENDPOINT") or None))
    origin = f"{source.repo_id}@{source.revision}:{remote.url}"
    return local, verify(local, remote, recorded, origin)


def _extract(archive: pathlib.Path, members, target: pathlib.Path) -> None:
    """Copy the listed archive members (``(member, dest)`` pairs) into ``target``; nothing else is written."""
    wanted = dict(members)
    found = set()
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            for member, dest in wanted.items():
                try:
                    data = z.open(member)
                except KeyError:
                    continue
                with data, _create(target / dest) as out:
                    shutil.copyfileobj(data, out)
                found.add(member)
    else:
        with tarfile.open(archive, "r:*") as t:
            for info in t:
                name = info.name[2:] if info.name.startswith("./") else info.name
                if name in wanted and info.isfile():
                    with t.extractfile(info) as data, _create(target / wanted[name]) as out:
                        shutil.copyfileobj(data, out)
                    found.add(name)
    missing = sorted(set(wanted) - found)
    if missing:
        raise ChecksumError(f"{archive.name}: archive lacks {missing}; expected members {sorted(wanted)}")


def _create(path: pathlib.Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    return open(path, "wb")


def _binary_parse_tokens(parse: str) -> str:
    return " ".join(t for t in parse.split(" ") if t not in ("(", ")", ""))


def convert_snli_senteval(folder: pathlib.Path) -> None:
    """``snli_1.0_{dev,test}.txt`` -> SentEval's ``s1``/``s2``/``labels`` files (pairs without a gold label dropped;
    sentences are the tokens of the binary parses, each line ending in a space as SentEval's do)."""
    for part in ("dev", "test"):
        src = folder / f"snli_1.0_{part}.txt"
        s1, s2, labels = [], [], []
        with open(src, encoding="utf-8") as f:
            header = f.readline().rstrip("\n").split("\t")
            try:
                gi, p1, p2 = (header.index(c) for c in ("gold_label", "sentence1_binary_parse",
                                                        "sentence2_binary_parse"))
            except ValueError:
                raise ChecksumError(f"{src}:1: expected columns gold_label, sentence1_binary_parse, "
                                    f"sentence2_binary_parse; got {header[:8]}") from None
            for lineno, line in enumerate(f, 2):
                row = line.rstrip("\n").split("\t")
                if len(row) <= max(gi, p1, p2):
                    raise ChecksumError(f"{src}:{lineno}: expected {len(header)} tab-separated fields, got {len(row)}")
                if row[gi] == "-":
                    continue
                labels.append(row[gi])
                s1.append(_binary_parse_tokens(row[p1]) + " ")
                s2.append(_binary_parse_tokens(row[p2]) + " ")
        for stem, lines in (("s1", s1), ("s2", s2), ("labels", labels)):
            (folder / f"{stem}.{part}").write_text("\n".join(lines) + "\n", encoding="utf-8")
        src.unlink()


CONVERTERS = {"snli_senteval": convert_snli_senteval}


def _recorded(folder: pathlib.Path) -> dict:
    """Download digests recorded by an earlier fetch (kept beside the cache so a re-fetch can check them)."""
    for f in (folder / MANIFEST, folder.parent / ".downloads" / folder.name / "recorded.json"):
        try:
            return json.loads(f.read_text()).get("downloads", {})
        except (OSError, ValueError, AttributeError):
            continue
    return {}


def fetch_into(ds: Dataset, source: Source, folder: pathlib.Path, *, force: bool, progress: bool) -> pathlib.Path:
    """Download ``source`` of ``ds`` and assemble ``folder`` atomically (see the module docstring)."""
    with file_lock(folder.parent / f".{ds.name}.lock"):
        if not force and cache_complete(folder):  # another process finished it while we waited
            return folder
        recorded = _recorded(folder)
        downloads = folder.parent / ".downloads" / ds.name
        tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{ds.name}-", dir=folder.parent))
        try:
            digests = {}
            for remote in source.files:
                key = remote.url if source.kind == "url" else f"{source.repo_id}@{source.revision}:{remote.url}"
                print(f"[gecko-jax datasets] {ds.name}: fetching {key}", file=sys.stderr, flush=True)
                if source.kind == "hub":
                    local, digests[key] = hub_download(source, remote, recorded=recorded.get(key))
                else:
                    local = downloads / pathlib.PurePosixPath(remote.url).name
                    digests[key] = http_download(remote, local, recorded=recorded.get(key), progress=progress)
                if remote.members:
                    _extract(local, remote.members, tmp)
                else:
                    dest = tmp / (remote.dest or pathlib.PurePosixPath(remote.url).name)
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(local, dest)
            if source.convert:
                CONVERTERS[source.convert](tmp)
            layout = source.layout or ds.files
            missing = [f for f in layout if not (tmp / f).is_file()]
            if missing:
                raise ChecksumError(f"{ds.name}: the download from {source.id} lacks {missing}")
            files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
            manifest = {"name": ds.name, "source": source.id, "files": files, "downloads": digests,
                        "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(tmp, folder)
            downloads.mkdir(parents=True, exist_ok=True)
            (downloads / "recorded.json").write_text(json.dumps({"downloads": digests}, indent=1) + "\n")
            for remote in source.files:  # archives are verified and unpacked: keep only the record
                if source.kind == "url":
                    (downloads / pathlib.PurePosixPath(remote.url).name).unlink(missing_ok=True)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return folder
