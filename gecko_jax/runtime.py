"""The machine under the code: CPU model and ISA, a quick f32 matmul peak, FLOP counts, XLA:CPU setup.

    from gecko_jax import runtime
    runtime.tune_malloc()                           # CLIs: re-exec once with glibc malloc tunables (see there)
    runtime.configure_cpu()                         # CLIs call this before jax starts (see configure_cpu)
    info = runtime.cpu_info()                        # {"model": "AMD EPYC ...", "isa": "AVX-512 (bf16)", ...}
    peak = runtime.matmul_peak_gflops()             # measured f32 matmul GFLOP/s of this box, ~1 s
    secs = runtime.estimate_encode_seconds(config, token_counts, peak)   # time to embed texts of those lengths
    before = runtime.flops_counted(); ...; runtime.flops_counted(since=before)   # useful FLOPs run meanwhile

Importing this module does not import jax, so :func:`configure_cpu` can still set flags that XLA reads once at
start-up. Everything here measures or counts; nothing is a test assertion (speed targets live in ``bench/``).
"""
from __future__ import annotations

import os
import platform
import sys
import threading
import time
from typing import Iterable, Mapping

# Flags set for XLA:CPU when the user has not set them, each measured to help (BENCHMARKS.md "Encode speed"), and
# the CPU flag (``/proc/cpuinfo``) each one needs. 512-bit vectors for XLA's own elementwise code (GELU, softmax,
# LayerNorm): +2-6% encode on AVX-512 (XLA prefers 256-bit by default); neutral, so not set, on AVX2-only CPUs.
CPU_XLA_FLAGS: Mapping[str, tuple[str, str]] = {
    "--xla_cpu_prefer_vector_width": ("512", "avx512f"),
}


def configure_cpu(*, force: bool = False) -> list[str]:
    """Set XLA:CPU flags (``CPU_XLA_FLAGS``) in ``XLA_FLAGS`` before JAX starts; returns the flags added.

    A flag the user already put in ``XLA_FLAGS`` is left as it is. Once jax has initialised its backends the flags
    would be ignored, so then nothing is changed (unless ``force``, for tests) and an empty list is returned. The
    ``gecko-jax`` command line calls this first thing; library users may call it before their first jax import.
    """
    if "jax" in sys.modules and not force:
        try:
            from jax._src import xla_bridge

            if xla_bridge._backends:  # backends exist: XLA has read its flags already
                return []
        except (ImportError, AttributeError):
            return []
    current = os.environ.get("XLA_FLAGS", "")
    present = {f.split("=", 1)[0] for f in current.split()}
    flags = set(cpu_info()["flags"])
    added = [f"{name}={value}" for name, (value, needs) in CPU_XLA_FLAGS.items()
             if name not in present and (not needs or needs in flags)]
    if added:
        os.environ["XLA_FLAGS"] = " ".join([current, *added]).strip()
    return added


# glibc malloc settings for XLA:CPU's per-call buffers: every execution allocates one temp buffer (451 MB for a packed
# MiniLM train step at batch 32, 4.4 GB for the recipe's pre-finetuning step of 80 x 128 tokens) and frees it at the
# end. By default glibc maps buffers above 32 MB afresh with mmap and unmaps them on free, so each call page-faults
# the whole buffer again (issue 21: 293 M minor faults, 1,038 s of system time in one main job). With these three,
# big buffers come from the main heap and stay there: train step -20% CPU, system time 5.4 -> 1.3 s, minor faults
# 2.0 M -> 0.4 M (BENCHMARKS.md). Only all three together do it (measured one by one), and only at process start
# (mallopt() caps the threshold at 32 MB). The threshold is 16 GB, above any temp buffer a CPU step here needs: at
# 4 GB the 4.4 GB pre-finetuning temp was still mapped afresh every step (9.0 M faults, 21 s system time in 12 steps;
# at 16 GB: 1.4 M and 5 s). The heap keeps the largest buffer once, since the trainer runs one CPU step at a time.
MALLOC_TUNABLES = ("glibc.malloc.mmap_threshold=17179869184:glibc.malloc.trim_threshold=34359738368:"
                   "glibc.malloc.arena_max=1")
_MALLOC_MARK = "GECKO_JAX_MALLOC"  # "tuned" once re-executed; set it to "system" to keep glibc's defaults


def tune_malloc() -> bool:
    """Re-execute this program once with :data:`MALLOC_TUNABLES` in ``GLIBC_TUNABLES`` (glibc reads them only at
    start-up). Returns False, doing nothing, when: not Linux/glibc; already done; ``GECKO_JAX_MALLOC=system``; the
    user set ``GLIBC_TUNABLES`` or any ``MALLOC_*`` variable; or pytest is running. Only the ``gecko-jax`` entry
    point and the bench scripts call it, as their first statement (it replaces the process: nothing before it runs
    twice except Python's start-up).
    """
    if (not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc" or os.environ.get(_MALLOC_MARK)
            or "GLIBC_TUNABLES" in os.environ or any(k.startswith("MALLOC_") for k in os.environ)
            or "pytest" in sys.modules or not getattr(sys, "orig_argv", None)):
        return False
    env = dict(os.environ, GLIBC_TUNABLES=MALLOC_TUNABLES, **{_MALLOC_MARK: "tuned"})
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, env)
    return True  # not reached


# ---------------------------------------------------------------------------------------------------- the machine

def cpu_info() -> dict:
    """CPU model, cores and vector ISA of this machine (Linux ``/proc/cpuinfo``; best effort elsewhere).

    Returns ``{"model", "cores" (schedulable CPUs), "isa" (e.g. "AVX-512 (+bf16)", "AVX2+FMA"), "flags"}``.
    """
    model, flags = "", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and not model:
                    model = value.strip()
                elif key == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    model = model or platform.processor() or platform.machine()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return {"model": model, "cores": cores, "isa": isa_name(flags), "flags": sorted(flags)}


def isa_name(flags: Iterable[str]) -> str:
    """Widest f32 vector ISA in a set of ``/proc/cpuinfo`` flags: "AVX-512 (+bf16) (+AMX)", "AVX2+FMA", ..."""
    flags = set(flags)
    if "avx512f" in flags:
        extra = "".join(f" +{name}" for flag, name in (("avx512_bf16", "bf16"), ("amx_tile", "AMX")) if flag in flags)
        return "AVX-512" + extra
    if "avx2" in flags:
        return "AVX2+FMA" if "fma" in flags else "AVX2"
    if "avx" in flags:
        return "AVX"
    return "SSE/other" if flags else "unknown"


def matmul_peak_gflops(*, seconds: float = 1.0) -> float:
    """Measured float32 matmul rate of this process on this box, GFLOP/s: the best of repeated 1024-square XLA
    matmuls and 2048-square numpy (BLAS) matmuls for about ``seconds``, with the threads each library uses.

    A ceiling for what an encoder can reach here (its matmuls are this shape's kin; the rest is overhead), so
    ``achieved / matmul_peak_gflops()`` reads "share of the machine". On a loaded machine it drops with the load.
    """
    import jax
    import jax.numpy as jnp
    import numpy as np

    rng = np.random.default_rng(0)
    a = jnp.asarray(rng.standard_normal((1024, 1024)), jnp.float32)
    mm = jax.jit(lambda x, y: x @ y)
    x = rng.standard_normal((2048, 2048)).astype(np.float32)
    best = 0.0
    for run, flops in ((lambda: mm(a, a).block_until_ready(), 2.0 * 1024 ** 3), (lambda: x @ x, 2.0 * 2048 ** 3)):
        run()  # compile / warm the BLAS threads
        end = time.perf_counter() + seconds / 2
        while True:
            t = time.perf_counter()
            run()
            now = time.perf_counter()
            best = max(best, flops / (now - t))
            if now > end:
                break
    return best / 1e9


# ---------------------------------------------------------------------------------------------------- FLOP counts

def encoder_flops(config, lengths: Iterable[int], *, training: bool = False) -> float:
    """Useful FLOPs to run a transformer encoder over texts of ``lengths`` tokens (padding never counted).

    Per text of ``t`` tokens: ``layers * (2 * (4 H^2 + 2 H F) * t + 4 * t^2 * H)``: the four projections and the
    feed-forward block as matmuls, plus attention's scores and weighted sum over the text itself. Embedding lookups,
    norms and activations are not FLOPs here (they are what keeps real code below the matmul peak). ``training``
    triples it (forward + backward), the usual 6N rule.
    """
    h, f, layers = config.hidden_size, config.intermediate_size, config.num_layers
    per_token = 2.0 * (4 * h * h + 2 * h * f)
    total = sum(layers * (per_token * t + 4.0 * t * t * h) for t in lengths)
    return 3.0 * total if training else total


# The process's tally of useful model FLOPs by kind ("encode", "train"): Embedder.encode and the training loop add
# what they run (encoder_flops over the real lengths), so a job can say what each of its stages computed and at
# what share of the machine's peak (the quickstart's results; bench/project_main_job.py projects them to another
# box). Host-side bookkeeping only: nothing traced or jitted reads it.
_FLOPS: dict[str, float] = {}
_FLOPS_LOCK = threading.Lock()


def count_flops(kind: str, flops: float) -> None:
    """Add ``flops`` useful FLOPs of ``kind`` to the process's tally."""
    with _FLOPS_LOCK:
        _FLOPS[kind] = _FLOPS.get(kind, 0.0) + float(flops)


def flops_counted(*, since: Mapping[str, float] | None = None) -> dict[str, float]:
    """The tally by kind (a copy); with ``since`` (an earlier result), what was added after it."""
    with _FLOPS_LOCK:
        now = dict(_FLOPS)
    if since is None:
        return now
    return {k: v - since.get(k, 0.0) for k, v in now.items() if v - since.get(k, 0.0) > 0}


# Families whose layers are the BERT block :func:`encoder_flops` counts (Gemma's gated MLP and grouped-query
# attention are not: no count rather than a wrong one).
BERT_LIKE = ("bert", "mpnet", "roberta", "xlm-roberta")


def config_flops(config, lengths: Iterable[int], *, training: bool = False) -> float | None:
    """:func:`encoder_flops` for a BERT-like ``config`` (:data:`BERT_LIKE`), else None."""
    if getattr(config, "model_type", None) not in BERT_LIKE:
        return None
    return encoder_flops(config, lengths, training=training)


def estimate_encode_seconds(config, lengths: Iterable[int], peak_gflops: float, *, efficiency: float = 0.6) -> float:
    """Rough wall time to embed texts of ``lengths`` tokens at ``efficiency`` x the measured matmul peak.

    ``efficiency`` defaults to a conservative share of peak that ``bench/encode.py`` measured for this package on
    long and short texts (BENCHMARKS.md); add compile time (~1 s per shape) for a first run.
    """
    if peak_gflops <= 0 or not 0 < efficiency <= 1:
        raise ValueError(f"need peak_gflops > 0 and 0 < efficiency <= 1, got {peak_gflops}, {efficiency}")
    return encoder_flops(config, lengths) / (peak_gflops * 1e9 * efficiency)


def machine_line() -> str:
    """One line naming the machine for benchmark output: model, ISA, cores, load, XLA_FLAGS, malloc setting."""
    info = cpu_info()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{info['model']} | {info['isa']} | {info['cores']} schedulable CPUs of {os.cpu_count()} | "
            f"load average {load:.1f} | XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r} | "
            f"malloc {os.environ.get(_MALLOC_MARK) or 'system'}")
