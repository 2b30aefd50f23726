"""Multi-process (multi-host) runs: start-up, each process's share of the input, host copies of sharded arrays.

One process per host (TPU VM worker, GPU node), each driving its local devices, the way TPU pods and ``torchrun``
style launchers start programs. ``jax.distributed.initialize`` joins them into one runtime; after that every jitted
function sees the global device mesh and every process runs the same program on its own rows of the batch.

Input: each process reads and tokenises only its contiguous share of each global batch
(``BatchStream.batch(b, process_index=, process_count=)``). Its texts fix its own length bucket (or packed row
count), so before the rows become one global array the processes agree on the widest with one small all-gather of
integers per step, and pad up to it: the global batch is then exactly the one a single process would have built.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np

# gather(ints[k]) -> ints[process_count, k]: every process's vector (a collective: all processes call it)
Gather = Callable[[np.ndarray], np.ndarray]


def initialize(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None,
               *, timeout_s: int = 300) -> None:
    """``jax.distributed.initialize`` before any other JAX call (it fixes the process's view of the devices).

    With no arguments the cluster is detected as JAX does it (Cloud TPU VMs, SLURM, Open MPI, Kubernetes, and the
    ``JAX_COORDINATOR_ADDRESS``/``JAX_NUM_PROCESSES``/``JAX_PROCESS_ID`` environment variables). On CPU the
    cross-process collectives go through gloo (also JAX's default today; set explicitly because the CPU backend
    has no other cross-process implementation).
    """
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id,
                               initialization_timeout=timeout_s)
    # One tiny collective while the processes are still in step (they just met in initialize): it checks the
    # collective path at start-up, and on CPU it sets up gloo's connections now; set up later, at the first train
    # step, they would time out after 30 s whenever one process compiles that much slower than another.
    seen = allgather_ints(np.array([jax.process_index()]))
    if sorted(seen[:, 0].tolist()) != list(range(jax.process_count())):
        raise RuntimeError(f"jax.distributed: processes report ranks {seen[:, 0].tolist()}")


def allgather_ints(values: np.ndarray) -> np.ndarray:
    """Every process's int vector: ``[process_count, k]`` (a collective)."""
    from jax.experimental import multihost_utils

    out = multihost_utils.process_allgather(np.asarray(values, np.int32))
    return np.asarray(out).reshape(jax.process_count(), -1)


def local_batch(stream: Any, b: int, *, pad_id: int = 0, gather: Gather | None = None,
                process_index: int | None = None, process_count: int | None = None) -> dict:
    """This process's rows of global batch ``b``, padded to the widths every process agrees on.

    ``gather``, ``process_index`` and ``process_count`` default to the running JAX processes; tests pass their own
    to simulate several processes in one.
    """
    p = jax.process_index() if process_index is None else process_index
    n = jax.process_count() if process_count is None else process_count
    local = stream.batch(b, process_index=p, process_count=n)
    if n == 1:
        return local
    return agree_widths(local, gather or allgather_ints, pad_id=pad_id, process_count=n)


def _token_dicts(batch: dict, prefix: str = "") -> list[tuple[str, dict]]:
    """``(name, dict)`` of every token batch (a dict with ``input_ids``) in ``batch``, in a fixed order."""
    out = []
    for key in sorted(batch):
        value = batch[key]
        if isinstance(value, dict):
            if "input_ids" in value:
                out.append((prefix + key, value))
            else:
                out.extend(_token_dicts(value, prefix + key + "/"))
    return out


def agree_widths(batch: dict, gather: Gather, *, pad_id: int, process_count: int) -> dict:
    """Pad every token batch of ``batch`` to the largest width (bucketed rows) or row count (packed rows, which
    carry ``segment_ids``) over the processes; the other leaves are already the same shape everywhere."""
    found = _token_dicts(batch)
    if not found:
        return batch
    packed = ["segment_ids" in tokens for _, tokens in found]
    agreed = np.asarray(gather(token_widths(batch))).max(axis=0)
    padded = {}
    for (name, tokens), is_packed, size in zip(found, packed, agreed):
        padded[name] = _pad_rows(tokens, int(size), pad_id, process_count) if is_packed else \
            _pad_width(tokens, int(size), pad_id)
    return _replace(batch, padded)


def token_widths(batch: dict) -> np.ndarray:
    """What the processes must agree on, one int per token batch: its width (bucketed rows) or its row count
    (packed rows)."""
    return np.array([t["input_ids"].shape[0 if "segment_ids" in t else 1] for _, t in _token_dicts(batch)],
                    np.int32)


def _pad_width(tokens: dict, width: int, pad_id: int) -> dict:
    def pad(key, x):
        extra = width - x.shape[1]
        return np.pad(x, ((0, 0), (0, extra)), constant_values=pad_id if key == "input_ids" else 0)

    return {k: pad(k, v) if np.ndim(v) == 2 else v for k, v in tokens.items()}


def _pad_rows(tokens: dict, rows: int, pad_id: int, process_count: int) -> dict:
    """Extra all-padding rows for a packed batch: padding tokens belong to segment ``global text count``."""
    fill = {"input_ids": pad_id, "segment_ids": len(tokens["lengths"]) * process_count}

    def pad(key, x):
        return np.pad(x, ((0, rows - x.shape[0]), (0, 0)), constant_values=fill.get(key, 0))

    return {k: pad(k, v) if np.ndim(v) == 2 else v for k, v in tokens.items()}


def _replace(batch: dict, padded: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in batch.items():
        name = prefix + key
        if name in padded:
            out[key] = padded[name]
        elif isinstance(value, dict):
            out[key] = _replace(value, padded, name + "/")
        else:
            out[key] = value
    return out


def to_host(tree: Any) -> Any:
    """Numpy copies of (possibly sharded, possibly multi-process) arrays, the same on every process.

    Arrays whose data this process holds in full are copied directly; others (parameters sharded over processes
    by FSDP rules) are all-gathered, so every process must call this together.
    """
    leaves = jax.tree.leaves(tree)
    if all(getattr(x, "is_fully_addressable", True) or getattr(x, "is_fully_replicated", False) for x in leaves):
        return jax.tree.map(np.asarray, tree)
    from jax.experimental import multihost_utils

    return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))
