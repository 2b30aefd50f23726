"""The multi-device test harness (tests/conftest.py ``run_multidevice``): retries only XLA:CPU's collective
deadlock, skips after that deadlock in every run, and returns any other failure so the test fails on it."""
from __future__ import annotations

import subprocess

import pytest
from train_helpers import root_conftest  # noqa: F401  (fixture)

XLA_ABORT = ("F1201 04:29:33.364833 rendezvous.cc:161] [id=1] Termination timeout for `collective permute "
             "RendezvousKey{...}` of 40 seconds exceeded. Expected 8 threads to join the rendezvous, but only 7 of "
             "them arrived on time.")


def _proc(returncode, stderr):
    return subprocess.CompletedProcess(["python"], returncode=returncode, stdout="", stderr=stderr)


def test_deadlock_signature(root_conftest):
    is_deadlock = root_conftest.is_collective_deadlock
    assert is_deadlock(_proc(-6, XLA_ABORT))                       # XLA's abort after its rendezvous timeout
    assert is_deadlock(_proc(-9, "timeout after 300s (suspected XLA:CPU collective deadlock)"))
    assert is_deadlock(_proc(1, "jaxlib.XlaRuntimeError: DEADLINE_EXCEEDED: collective timed out"))
    assert not is_deadlock(_proc(0, XLA_ABORT))
    # A Python failure fails the test even when a "may be stuck" warning was printed on the way.
    assert not is_deadlock(_proc(1, "rendezvous.cc:98] waiting ... Expected 8 threads to join the rendezvous\n"
                                    "AssertionError: losses differ"))
    assert not is_deadlock(_proc(-11, "Segmentation fault"))


def test_retries_a_deadlock_then_returns_the_next_result(root_conftest, monkeypatch):
    runs = iter([_proc(-6, XLA_ABORT), _proc(1, "AssertionError: losses differ")])
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: next(runs))
    before = root_conftest.MULTIDEVICE_RETRIES["count"]
    monkeypatch.setitem(root_conftest.MULTIDEVICE_RETRIES, "count", before)  # restored after the test, pass or fail
    proc = root_conftest.run_multidevice("pass", attempts=3)
    assert proc.returncode == 1 and "losses differ" in proc.stderr
    assert root_conftest.MULTIDEVICE_RETRIES["count"] == before + 1


def test_skips_when_every_run_deadlocked(root_conftest, monkeypatch):
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: calls.append(1) or _proc(-6, XLA_ABORT))
    monkeypatch.setitem(root_conftest.MULTIDEVICE_RETRIES, "count", root_conftest.MULTIDEVICE_RETRIES["count"])
    with pytest.raises(pytest.skip.Exception, match="3 runs in a row.*Termination timeout"):
        root_conftest.run_multidevice("pass", attempts=3)
    assert len(calls) == 3
