"""A real HTTP server on 127.0.0.1 for download tests: plain files (with ranges and injectable faults) and a
Hugging Face Hub-like tree (the API routes ``huggingface_hub`` 1.x/2.x calls for ``snapshot_download`` and
``hf_hub_download``), with a log of every request so tests can count them.
"""
from __future__ import annotations

import hashlib
import http.server
import json
import threading
import urllib.parse

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class LocalServer:
    """``files``: URL path -> bytes (plain downloads); ``repos``: (kind, repo_id) -> {path in repo: bytes}, kind
    "models" or "datasets"; ``drop_after``: URL path -> byte count after which the *first* GET of that path closes
    the connection (an interrupted download); ``log``: (method, path, Range header) of every request."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.repos: dict[tuple[str, str], dict[str, bytes]] = {}
        self.drop_after: dict[str, int] = {}
        self.ignore_range = False
        self.log: list[tuple[str, str, str | None]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_HEAD(self):
                server._handle(self, head=True)

            def do_GET(self):
                server._handle(self, head=False)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    def requests(self, prefix: str = "") -> list:
        """Logged requests under ``prefix``, without huggingface_hub's daily fetch of its agent-harness registry
        (``/api/agent-harnesses``, a client-side side request unrelated to what is downloaded)."""
        with self._lock:
            return [r for r in self.log if r[1].startswith(prefix) and not r[1].startswith("/api/agent-harnesses")]

    # ---- routing ------------------------------------------------------------------------------------------------
    def _handle(self, h, *, head: bool):
        raw_path = urllib.parse.urlsplit(h.path).path
        path = urllib.parse.unquote(raw_path)
        with self._lock:
            self.log.append((h.command, path, h.headers.get("Range")))
        if path in self.files:
            return self._send_file(h, path, self.files[path], head=head)
        parts = path.strip("/").split("/")
        if parts[0] == "api" and len(parts) >= 6:
            kind, repo = parts[1], "/".join(parts[2:4])
            files = self.repos.get((kind, repo))
            if files is None:
                return self._json(h, {"error": "Repository not found"}, 404, {"X-Error-Code": "RepoNotFound"})
            if parts[4] == "revision":
                return self._json(h, {"id": repo, "sha": COMMIT, "private": False, "downloads": 0, "likes": 0,
                                      "tags": [], "siblings": [{"rfilename": f} for f in sorted(files)]})
            if parts[4] == "tree":
                return self._json(h, [{"type": "file", "path": f, "size": len(b), "oid": _git_oid(b)}
                                      for f, b in sorted(files.items())])
        kind = "datasets" if parts[0] == "datasets" else "models"
        if kind == "datasets":
            parts = parts[1:]
        if len(parts) >= 5 and parts[2] == "resolve":
            files = self.repos.get((kind, "/".join(parts[:2])))
            name = "/".join(parts[4:])
            if files is None:
                return self._json(h, {"error": "Repository not found"}, 404, {"X-Error-Code": "RepoNotFound"})
            if name not in files:
                return self._json(h, {"error": "Entry not found"}, 404, {"X-Error-Code": "EntryNotFound"})
            return self._send_file(h, path, files[name], head=head,
                                   extra={"X-Repo-Commit": COMMIT, "ETag": f'"{_git_oid(files[name])}"'})
        self._json(h, {"error": "not found"}, 404)

    def _json(self, h, obj, status=200, extra=None):
        body = json.dumps(obj).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            h.send_header(k, v)
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(body)

    def _send_file(self, h, path, data: bytes, *, head: bool, extra=None):
        start = 0
        rng = h.headers.get("Range")
        if rng and not self.ignore_range and rng.startswith("bytes="):
            start = int(rng[len("bytes="):].split("-")[0] or 0)
            if start >= len(data):
                h.send_response(416)
                h.send_header("Content-Range", f"bytes */{len(data)}")
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
            h.send_response(206)
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            h.send_response(200)
        h.send_header("Content-Length", str(len(data) - start))
        h.send_header("Accept-Ranges", "bytes")
        for k, v in (extra or {}).items():
            h.send_header(k, v)
        h.end_headers()
        if head:
            return
        body = data[start:]
        with self._lock:
            cut = self.drop_after.pop(path, None)
        if cut is not None:  # send part of it, then drop the connection
            h.wfile.write(body[:cut])
            h.wfile.flush()
            h.close_connection = True
            import socket

            h.connection.shutdown(socket.SHUT_RDWR)
            return
        h.wfile.write(body)


def _git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
