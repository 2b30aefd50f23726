"""A local stand-in for Google Cloud Storage: ``gs://BUCKET/...`` lives in ``ROOT/BUCKET/...`` for both readers
orbax and gecko_jax use, so tests run ``gs://`` workdirs with no network.

- ``etils.epath`` (file I/O: orbax's metadata and commit markers, gecko_jax's config, metrics, exports): the
  ``gs`` backend is swapped for the local one with every path moved under ``ROOT``.
- tensorstore (orbax's array data): its GCS driver speaks the JSON API to ``TENSORSTORE_GCS_HTTP_URL``; a small
  HTTP server on 127.0.0.1 answers the calls it makes (media read/write with generation preconditions, metadata,
  list, delete) from the same folder, with a fixed test token (``GOOGLE_AUTH_TOKEN_FOR_TESTING``).
- orbax asks ``google-cloud-storage`` whether the bucket has a hierarchical namespace: answered "no" here (a real
  run needs that package, ``pip install gecko-jax[gcs]``).

Object-store semantics that matter to the code under test come from the ``gs://`` spelling itself: orbax then
commits checkpoints the GCS way (no folder rename) and gecko_jax writes objects whole (no temporary file + rename,
no appends).
"""
from __future__ import annotations

import contextlib
import http.server
import json
import os
import pathlib
import threading
import types
import urllib.parse
from unittest import mock


class _Handler(http.server.BaseHTTPRequestHandler):
    root: pathlib.Path  # set on the subclass

    def log_message(self, *args):
        pass

    # ---------------------------------------------------------------------------------------------- helpers
    def _split(self):
        url = urllib.parse.urlsplit(self.path)
        return url.path, dict(urllib.parse.parse_qsl(url.query))

    def _file(self, bucket: str, name: str) -> pathlib.Path:
        return self.root / bucket / urllib.parse.unquote(name)

    @staticmethod
    def _generation(f: pathlib.Path) -> int:
        return f.stat().st_mtime_ns if f.is_file() else 0

    def _meta(self, bucket: str, name: str, f: pathlib.Path) -> dict:
        st = f.stat()
        return {"kind": "storage#object", "bucket": bucket, "name": name, "size": str(st.st_size),
                "generation": str(st.st_mtime_ns), "metageneration": "1"}

    def _send(self, code: int, body: bytes = b"", headers: dict | None = None, json_body=None):
        if json_body is not None:
            body = json.dumps(json_body).encode()
            headers = {"Content-Type": "application/json", **(headers or {})}
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def _preconditions(self, query: dict, f: pathlib.Path) -> int | None:
        gen = self._generation(f)
        if "ifGenerationMatch" in query and int(query["ifGenerationMatch"]) != gen:
            return 412
        if "ifGenerationNotMatch" in query and int(query["ifGenerationNotMatch"]) == gen:
            return 304
        return None

    # ---------------------------------------------------------------------------------------------- verbs
    def do_GET(self):
        path, query = self._split()
        parts = path.split("/")  # ['', 'storage', 'v1', 'b', BUCKET, 'o', NAME?]
        if len(parts) < 6 or parts[1:4] != ["storage", "v1", "b"] or parts[5] != "o":
            return self._send(400)
        bucket = parts[4]
        if len(parts) == 6 or parts[6] == "":
            return self._list(bucket, query)
        name = urllib.parse.unquote("/".join(parts[6:]))
        f = self._file(bucket, name)
        if not f.is_file():
            return self._send(404, json_body={"error": {"code": 404, "message": "No such object"}})
        code = self._preconditions(query, f)
        if code is not None:
            return self._send(code)
        if query.get("alt") != "media":
            return self._send(200, json_body=self._meta(bucket, name, f))
        data = f.read_bytes()
        headers = {"x-goog-generation": str(self._generation(f)), "Content-Type": "application/octet-stream"}
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            lo, _, hi = rng[6:].partition("-")
            start = int(lo) if lo else max(len(data) - int(hi), 0)
            stop = int(hi) + 1 if lo and hi else len(data)
            headers["Content-Range"] = f"bytes {start}-{max(stop - 1, start)}/{len(data)}"
            return self._send(206, data[start:stop], headers)
        return self._send(200, data, headers)

    def _list(self, bucket: str, query: dict):
        base = self.root / bucket
        prefix = query.get("prefix", "")
        names = sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file()) if base.is_dir() else []
        items = [self._meta(bucket, n, base / n) for n in names if n.startswith(prefix)]
        return self._send(200, json_body={"kind": "storage#objects", "items": items})

    def do_POST(self):
        path, query = self._split()
        if not path.startswith("/upload/storage/v1/b/") or query.get("uploadType") != "media":
            return self._send(400)
        bucket = path.split("/")[5]
        name = query["name"]
        f = self._file(bucket, name)
        code = self._preconditions(query, f)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if code is not None:
            return self._send(412)
        f.parent.mkdir(parents=True, exist_ok=True)
        tmp = f.with_name(f".{f.name}.upload")
        tmp.write_bytes(body)
        os.replace(tmp, f)
        return self._send(200, json_body=self._meta(bucket, name, f))

    def do_DELETE(self):
        path, query = self._split()
        parts = path.split("/")
        f = self._file(parts[4], "/".join(parts[6:]))
        if not f.is_file():
            return self._send(404)
        code = self._preconditions(query, f)
        if code is not None:
            return self._send(412)
        f.unlink()
        return self._send(204)


def _redirecting_backend(root: pathlib.Path):
    """An epath backend for ``gs://`` that works on ``root`` with the local backend."""
    from etils.epath import backend

    prefix = "gs://"

    def local(p):
        text = os.fspath(p)
        return str(root / text[len(prefix):]) if text.startswith(prefix) else text

    def remote(p):
        text = os.fspath(p)
        r = str(root) + "/"
        return prefix + text[len(r):] if text.startswith(r) else text

    class Redirect(backend._OsPathBackend):  # noqa: SLF001 (the local backend is what we want, behind gs://)
        def open(self, path, mode):
            if any(m in mode for m in "wax"):  # an object store has no folders to make first
                pathlib.Path(local(path)).parent.mkdir(parents=True, exist_ok=True)
            return super().open(local(path), mode)

        def exists(self, path):
            return super().exists(local(path))

        def isdir(self, path):
            return super().isdir(local(path))

        def listdir(self, path):
            return super().listdir(local(path))

        def glob(self, path):
            return [remote(p) for p in super().glob(local(path))]

        def walk(self, top, *, top_down=True, on_error=None):
            for folder, dirs, files in super().walk(local(top), top_down=top_down, on_error=on_error):
                yield remote(folder), dirs, files

        def makedirs(self, path, *, exist_ok=False, mode=None):
            return super().makedirs(local(path), exist_ok=exist_ok)

        def mkdir(self, path, *, exist_ok=False, mode=None):
            return super().mkdir(local(path), exist_ok=exist_ok)

        def rmtree(self, path):
            return super().rmtree(local(path))

        def remove(self, path):
            return super().remove(local(path))

        def rename(self, path, dst):
            return super().rename(local(path), local(dst))

        def replace(self, path, dst):
            return super().replace(local(path), local(dst))

        def copy(self, path, dst, *, overwrite):
            return super().copy(local(path), local(dst), overwrite=overwrite)

        def stat(self, path):
            return super().stat(local(path))

    return Redirect()


@contextlib.contextmanager
def fake_gcs(root: pathlib.Path):
    """Serve ``gs://`` from ``root`` for epath and tensorstore inside the block."""
    from etils.epath import gpath

    root = pathlib.Path(root)
    root.mkdir(parents=True, exist_ok=True)
    handler = type("Handler", (_Handler,), {"root": root})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    env = {"TENSORSTORE_GCS_HTTP_URL": f"http://127.0.0.1:{server.server_address[1]}",
           "GOOGLE_AUTH_TOKEN_FOR_TESTING": "fake-token"}
    backends = {**gpath._PREFIX_TO_BACKEND, "gs": _redirecting_backend(root)}  # noqa: SLF001
    from orbax.checkpoint._src.path import gcs_utils

    flat_bucket = types.SimpleNamespace(hierarchical_namespace_enabled=False)
    try:
        with mock.patch.dict(os.environ, env), mock.patch.object(gpath, "_PREFIX_TO_BACKEND", backends), \
                mock.patch.object(gcs_utils, "get_bucket", lambda name: flat_bucket):
            yield root
    finally:
        server.shutdown()
        server.server_close()
