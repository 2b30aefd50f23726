"""A fault-injecting HTTP front for the LLM server, written on raw sockets (127.0.0.1, one thread per connection).

It reads each request itself, then either forwards it to an upstream server (``data_gen.fake.FakeOpenAIServer``,
which computes the answers) and relays the answer, or injects a fault at the byte level, which a well-behaved
``http.server`` cannot do:

=================  ====================================================================  =========================
mode               what the client gets                                                  urllib / http.client sees
=================  ====================================================================  =========================
``"500"``, ...     that status with a JSON error body (any 3-digit code; 429 and 503     ``HTTPError``
                   carry ``Retry-After``); the body echoes the request's
                   ``Authorization`` header and ``?key=`` parameter, as careless servers
                   do, to test redaction
``"truncate"``     the real answer's headers and half of its body, then the connection   ``IncompleteRead``
                   closes
``"headers_only"`` the real answer's headers, then the connection closes (mid-response)  ``IncompleteRead``
``"close"``        the connection closes without a byte of answer                        ``RemoteDisconnected``
``"reset"``        a TCP reset (``SO_LINGER`` 0) instead of an answer                     ``ConnectionResetError``
``"bad_status"``   a garbage status line                                                 ``BadStatusLine``
``"garbage"``      200 with a body that is not JSON                                      ``JSONDecodeError``
=================  ====================================================================  =========================

Whether a request fails is drawn from a seeded RNG (``failure_rate``); which fault it gets cycles through ``modes``
(so a run with at least ``len(modes)`` faults sees every kind). No request body fails more than
``max_consecutive`` times in a row, so a client with more attempts always gets through.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import random
import socket
import struct
import threading
from collections import Counter
from typing import Sequence

TRANSPORT_MODES = ("truncate", "headers_only", "close", "reset", "bad_status", "garbage")
ALL_MODES = ("500", "503", "429") + TRANSPORT_MODES


def closed_port() -> int:
    """A 127.0.0.1 port with nothing listening (bound, then released): connections to it are refused."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _read_request(f) -> tuple[str, dict, bytes] | None:
    line = f.readline(65537)
    if not line:
        return None
    headers = {}
    while True:
        h = f.readline(65537)
        if h in (b"\r\n", b"\n", b""):
            break
        k, _, v = h.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    body = f.read(int(headers.get("content-length") or 0))
    return line.decode("latin-1").strip(), headers, body


class FaultServer:
    """See the module docstring. Use as a context manager; ``base_url`` ends in ``/v1`` like the upstream's.

    Args:
      upstream_port: port of the server on 127.0.0.1 that answers the requests that are not faulted (None: every
        request must be faulted, e.g. ``failure_rate=1`` with status modes).
      failure_rate: probability that a request is faulted.
      modes: the faults, used in turn.
      max_consecutive: most faults in a row for the same request body.
      seed: seeds the failure draws.

    Counters: ``attempts`` (requests read), ``faults`` (Counter by mode), ``relayed`` (answers relayed whole).
    """

    def __init__(self, upstream_port: int | None, *, failure_rate: float = 0.0, modes: Sequence[str] = ALL_MODES,
                 max_consecutive: int = 3, seed: int = 0):
        self.upstream_port = upstream_port
        self.failure_rate, self.modes, self.max_consecutive = failure_rate, tuple(modes), max_consecutive
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._streak: Counter = Counter()
        self._next_mode = 0
        self.attempts = 0
        self.relayed = 0
        self.faults: Counter = Counter()
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(256)
        self.port = self._sock.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)

    # -- decisions --
    def _decide(self, body: bytes) -> str | None:
        key = hashlib.sha256(body).hexdigest()
        with self._lock:
            self.attempts += 1
            if (self.failure_rate > 0 and self._streak[key] < self.max_consecutive
                    and self._rng.random() < self.failure_rate):
                mode = self.modes[self._next_mode % len(self.modes)]
                self._next_mode += 1
                self._streak[key] += 1
                self.faults[mode] += 1
                return mode
            self._streak[key] = 0
            return None

    # -- serving --
    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _upstream(self, request_line: str, headers: dict, body: bytes) -> tuple[int, list, bytes]:
        method, target, _ = request_line.split(" ", 2)
        c = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=60)
        try:
            fwd = {k: v for k, v in headers.items() if k not in ("host", "connection", "content-length")}
            c.request(method, target, body=body, headers=fwd)
            r = c.getresponse()
            data = r.read()
            hdrs = [(k, v) for k, v in r.getheaders() if k.lower() not in ("connection", "content-length",
                                                                              "transfer-encoding")]
            return r.status, hdrs, data
        finally:
            c.close()

    @staticmethod
    def _head(status: int, headers: list, length: int) -> bytes:
        try:
            phrase = http.client.responses[status]
        except KeyError:
            phrase = "Status"
        lines = [f"HTTP/1.1 {status} {phrase}"] + [f"{k}: {v}" for k, v in headers]
        lines += [f"Content-Length: {length}", "Connection: close", "", ""]
        return "\r\n".join(lines).encode("latin-1")

    def _handle(self, conn: socket.socket) -> None:
        f = conn.makefile("rb")
        try:
            req = _read_request(f)
            if req is None:
                return
            request_line, headers, body = req
            mode = self._decide(body)
            if mode == "close":
                return
            if mode == "reset":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return
            if mode == "bad_status":
                conn.sendall(b"HTTP/1.1 2xx \x00\xfe garbage\r\n\r\n")
                return
            if mode == "garbage":
                data = b'{"choices": [{"text": "cut off'
                conn.sendall(self._head(200, [("Content-Type", "application/json")], len(data)) + data)
                return
            if mode is not None and mode.isdigit():
                status = int(mode)
                target = request_line.split(" ")[1] if " " in request_line else ""
                auth = headers.get("authorization", "")
                echo = f"{auth} (key {auth.split()[-1] if auth else 'none'}) {target}"
                data = json.dumps({"error": {"message": f"injected {status}; you sent: {echo}",
                                             "code": status}}).encode()
                extra = [("Retry-After", "0")] if status in (429, 503) else []
                conn.sendall(self._head(status, [("Content-Type", "application/json")] + extra, len(data)) + data)
                return
            status, hdrs, data = self._upstream(request_line, headers, body)
            head = self._head(status, hdrs, len(data))
            if mode == "truncate":
                conn.sendall(head + data[: len(data) // 2])
                return
            if mode == "headers_only":
                conn.sendall(head)
                return
            conn.sendall(head + data)
            with self._lock:
                self.relayed += 1
        except OSError:
            pass
        finally:
            for x in (f, conn):  # the socket closes (FIN, or RST under SO_LINGER 0) when both are closed
                try:
                    x.close()
                except OSError:
                    pass

    def __enter__(self) -> "FaultServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() in the serving thread
        except OSError:
            pass
        self._sock.close()
        self._thread.join(timeout=5)
