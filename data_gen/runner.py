"""Bounded-concurrency map with a progress bar: results are handed to a callback as they complete."""
from __future__ import annotations

import concurrent.futures as cf
import sys
from typing import Callable, Iterable, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def _bar(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is a dependency, but a progress bar is never worth a crash
        return None
    return tqdm(total=total, desc=desc, unit="rec", file=sys.stderr, dynamic_ncols=True)


def parallel_map(fn: Callable[[T], R], items: Iterable[T], *, concurrency: int, on_result: Callable[[T, R], None],
                 desc: str = "", progress: bool = True, total: int | None = None) -> int:
    """Run ``fn`` over ``items`` with at most ``concurrency`` calls in flight; ``on_result(item, result)`` per item.

    ``on_result`` runs in the calling thread (so it may append to a file without extra locking). At most
    ``2 * concurrency`` items are submitted ahead, so a million-item input does not become a million futures.
    Exceptions from ``fn`` or ``on_result`` propagate (the callers catch the expected ones inside ``fn`` and return a
    failure record); items not started yet are then cancelled.

    ``items`` may be a generator: it is consumed in the calling thread as work is submitted, never all at once.

    Returns the number of items processed.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency: expected >= 1, got {concurrency}")
    if total is None and hasattr(items, "__len__"):
        total = len(items)
    bar = _bar(total, desc, progress)
    done = 0
    try:
        if concurrency == 1:
            for it in items:
                on_result(it, fn(it))
                done += 1
                if bar is not None:
                    bar.update(1)
            return done
        ex = cf.ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="data_gen")
        try:
            pending: dict[cf.Future, T] = {}
            it_iter = iter(items)
            exhausted = False
            while True:
                while not exhausted and len(pending) < 2 * concurrency:
                    try:
                        it = next(it_iter)
                    except StopIteration:
                        exhausted = True
                        break
                    pending[ex.submit(fn, it)] = it
                if not pending:
                    break
                finished, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                for fut in finished:
                    it = pending.pop(fut)
                    on_result(it, fut.result())
                    done += 1
                    if bar is not None:
                        bar.update(1)
        except BaseException:
            # A fatal error (server refuses, disk full, Ctrl-C): start nothing more, let the calls in flight end.
            ex.shutdown(wait=True, cancel_futures=True)
            raise
        ex.shutdown(wait=True)
        return done
    finally:
        if bar is not None:
            bar.close()
