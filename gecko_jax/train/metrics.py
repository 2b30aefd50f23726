"""Metric records: JSONL (one object per record) and TensorBoard event files, with no TensorFlow.

``flax.metrics.tensorboard`` needs TensorFlow and tensorboardX is not a dependency, so scalars are written by a
minimal event writer: TFRecord framing (length, masked CRC-32C, payload, masked CRC-32C) around hand-encoded
``Event`` protos (``wall_time``, ``step``, ``summary { value { tag, simple_value } }``). TensorBoard reads these
files as written by TensorFlow's own ``tf.summary.scalar`` in TF1 style.
"""
from __future__ import annotations

import json
import math
import os
import pathlib
import socket
import struct
import time

from gecko_jax.fileio import as_path, open_log, output_error, write_text

_CRC_TABLE = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _CRC_TABLE.append(_c)


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
    crc = crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, wire: int) -> bytes:
    return _varint((number << 3) | wire)


def _bytes_field(number: int, payload: bytes) -> bytes:
    return _field(number, 2) + _varint(len(payload)) + payload


SESSION_START = 1  # SessionLog.START


def encode_event(wall_time: float, step: int, *, scalars: dict | None = None, file_version: str | None = None,
                 session_status: int | None = None) -> bytes:
    """Serialised ``tensorflow.Event`` proto with scalar summaries (or a ``session_log`` with ``session_status``)."""
    out = _field(1, 1) + struct.pack("<d", wall_time) + _field(2, 0) + _varint(step)
    if file_version is not None:
        out += _bytes_field(3, file_version.encode())
    if session_status is not None:
        out += _bytes_field(7, _field(1, 0) + _varint(session_status))
    if scalars:
        values = b"".join(
            _bytes_field(1, _bytes_field(1, tag.encode()) + _field(2, 5) + struct.pack("<f", float(v)))
            for tag, v in scalars.items())
        out += _bytes_field(5, values)
    return out


def frame_record(payload: bytes) -> bytes:
    header = struct.pack("<Q", len(payload))
    return header + struct.pack("<I", masked_crc(header)) + payload + struct.pack("<I", masked_crc(payload))


def read_records(path: str | pathlib.Path) -> list[bytes]:
    """Payloads of a TFRecord file, checking both CRCs (for tests and debugging)."""
    data = as_path(path).read_bytes()
    out, pos = [], 0
    while pos < len(data):
        header = data[pos:pos + 8]
        (n,) = struct.unpack("<Q", header)
        if struct.unpack("<I", data[pos + 8:pos + 12])[0] != masked_crc(header):
            raise ValueError(f"{path}: bad length CRC at byte {pos}")
        payload = data[pos + 12:pos + 12 + n]
        if struct.unpack("<I", data[pos + 12 + n:pos + 16 + n])[0] != masked_crc(payload):
            raise ValueError(f"{path}: bad payload CRC at byte {pos}")
        out.append(payload)
        pos += 16 + n
    return out


class EventWriter:
    """Append scalar events to ``events.out.tfevents.<time>.<host>`` in ``logdir`` (local or remote)."""

    def __init__(self, logdir: str | pathlib.Path):
        self.logdir = as_path(logdir)
        self.path = self.logdir / f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}"
        try:
            self.logdir.mkdir(parents=True, exist_ok=True)
            self._f = open_log(self.path, "ab")
        except OSError as e:
            raise output_error(self.path, e) from None
        self._write(frame_record(encode_event(time.time(), 0, file_version="brain.Event:2")))

    def scalars(self, step: int, values: dict) -> None:
        self._write(frame_record(encode_event(time.time(), step, scalars=values)))

    def restart(self, step: int) -> None:
        """A ``SessionLog.START`` at ``step``: TensorBoard drops the events of earlier files at steps >= ``step``
        (written after the checkpoint a resumed run restarts from), as it does for TensorFlow's restarts."""
        self._write(frame_record(encode_event(time.time(), step, session_status=SESSION_START)))

    def _write(self, record: bytes) -> None:
        try:
            self._f.write(record)
            self._f.flush()
        except OSError as e:
            raise output_error(self.path, e) from None

    def close(self) -> None:
        self._f.close()


def rewind_metrics(path: str | pathlib.Path, step: int, *, keep_evals_at_step: bool = True) -> int:
    """Cut ``metrics.jsonl`` back to a resumed run's checkpoint ``step``, so no step appears twice.

    Keeps the records at steps ``<= step`` (without the records at ``step`` that hold no ``loss`` when
    ``keep_evals_at_step=False``: the final evaluation of a finished run, or the step-0 records of a run that starts
    again from step 0, which the rerun writes again) and drops a torn last line. The file is rewritten atomically.
    Returns the number of records dropped.
    """
    path = as_path(path)
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_bytes().decode("utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
            s = int(rec["step"])
        except (ValueError, KeyError, TypeError):  # a torn last line (killed mid-write)
            dropped += 1
            continue
        if s < step or (s == step and (keep_evals_at_step or "loss" in rec)):
            kept.append(line + "\n")
        else:
            dropped += 1
    if dropped:
        write_text(path, "".join(kept))
    return dropped


class MetricsWriter:
    """``metrics.jsonl`` plus TensorBoard events under ``workdir/tb``; only process 0 writes.

    ``restart_step``: a resumed run's first new step; TensorBoard then drops older events from that step on (see
    :meth:`EventWriter.restart`). ``metrics.jsonl`` is cut back by :func:`rewind_metrics` before this opens it.
    """

    def __init__(self, workdir: str | pathlib.Path, *, enabled: bool = True, restart_step: int | None = None):
        self.enabled = enabled
        self.path = as_path(workdir) / "metrics.jsonl"
        if enabled:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._jsonl = open_log(self.path, "a")
            except OSError as e:
                raise output_error(self.path, e) from None
            self._events = EventWriter(as_path(workdir) / "tb")
            if restart_step is not None:
                self._events.restart(restart_step)

    def write(self, step: int, values: dict) -> None:
        if not self.enabled:
            return
        clean = {k: (float(v) if isinstance(v, (int, float)) or hasattr(v, "item") else v) for k, v in values.items()}
        try:  # one write of a whole line: a kill leaves at most a torn last line, which rewind_metrics drops
            self._jsonl.write(json.dumps({"step": int(step), **clean}) + "\n")
            self._jsonl.flush()
        except OSError as e:
            raise output_error(self.path, e) from None
        numeric = {k: v for k, v in clean.items() if isinstance(v, float) and math.isfinite(v)}
        if numeric:
            self._events.scalars(int(step), numeric)

    def close(self) -> None:
        if self.enabled:
            self._jsonl.close()
            self._events.close()
