"""Orbax checkpoints of the whole :class:`~gecko_jax.train.state.TrainState`, and the resume order.

Checkpoints are atomic (orbax writes to a temporary folder and renames it on commit, so a kill mid-save leaves the
previous checkpoint intact), keep the newest ``keep``, and are written every ``every_steps`` steps, at the end of
training and on SIGTERM (preemption). A checkpoint holds params, optimizer state, step, RNG key, data position and
frozen arrays: everything needed for a bit-exact continuation.

Resuming restores the newest checkpoint that restores cleanly. A damaged one (a data file truncated or deleted
after the commit: a full disk, a bad copy, a crash of the storage) is skipped with one line on stderr naming the step
and the reason, and moved to ``<checkpoints>_damaged/<step>`` so that the run can write that step again; when no
checkpoint restores, :class:`~gecko_jax.errors.RestoreError` says so and nothing is moved. With several processes a
step counts as restored only when every process restored its shards, so all of them resume from the same step
(process 0 moves the damaged ones, on a local disk or a bucket, while the others wait).
"""
from __future__ import annotations

import contextlib
import logging
import os
import pathlib
import sys
from typing import Any

import jax
import orbax.checkpoint as ocp
from jax.sharding import SingleDeviceSharding

from gecko_jax.errors import RestoreError
from gecko_jax.fileio import as_path, is_remote, write_failure, write_text
from gecko_jax.train.state import TrainState, put_global

_FIELDS = ("step", "params", "opt_state", "rng", "data_position", "frozen")


def _as_dict(state: TrainState) -> dict:
    return {f: getattr(state, f) for f in _FIELDS}


def _abstract(tree: Any) -> Any:
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


class Checkpointer:
    """Orbax ``CheckpointManager`` over ``directory`` for train states."""

    def __init__(self, directory: str | pathlib.Path, *, every_steps: int, keep: int):
        self.directory = _absolute(directory)  # a local folder or a URI (gs://...): orbax reads both via epath
        self.every_steps = every_steps
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, save_interval_steps=every_steps, create=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options)
        _filter_orbax_noise()

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state: TrainState, *, force: bool = False) -> bool:
        """Save when ``step`` is due (every ``every_steps``) or ``force``; returns whether a save started."""
        if step in self.manager.all_steps():
            return False
        with self._write_errors():
            return self.manager.save(step, args=ocp.args.StandardSave(_as_dict(state)), force=force)

    @contextlib.contextmanager
    def _write_errors(self):
        """A full disk (or a permission, quota, size limit) while orbax writes in the background surfaces at the
        next save or wait as a tensorstore error: raise it as a one-line OutputError naming the checkpoint."""
        try:
            yield
        except Exception as e:  # noqa: BLE001
            out = write_failure(f"checkpoints in {self.directory}", e)  # (the step that failed may be earlier)
            if out is None:
                raise
            raise out from e

    def restore(self, like: TrainState, step: int | None = None) -> TrainState:
        """Restore into the structure, dtypes and shardings of ``like`` (a freshly created state).

        With ``step=None``: the newest checkpoint that restores; damaged newer ones are reported on stderr and set
        aside (module docstring). Raises :class:`RestoreError` when none restores (or ``step`` does not).
        """
        steps = sorted(self.all_steps(), reverse=True) if step is None else [step]
        failed = []
        for s in steps:
            why = None
            try:
                with _quiet_orbax():
                    restored = self.manager.restore(s, args=ocp.args.StandardRestore(_abstract(_as_dict(like))))
            except Exception as e:  # noqa: BLE001 (tensorstore/orbax raise many types; the reason is reported)
                why = failure_reason(e)
            # several processes read their own shards: a step counts only when every process restored it, so
            # they all resume from the same step
            if not _everyone(why is None):
                failed.append((s, why or "another process could not restore it"))
                continue
            self._set_aside(failed)
            return like.replace(**{f: restored[f] for f in _FIELDS})
        for s, why in failed:
            _say(f"gecko-jax: checkpoint step {s} in {self.directory} does not restore: {why}")
        tried = ", ".join(str(s) for s, _ in failed) or "none"
        raise RestoreError(f"no checkpoint in {self.directory} restores (tried steps {tried}); move that folder "
                           "away to train from the start, or put back an intact copy")

    def _set_aside(self, failed: list[tuple[int, str]]) -> None:
        """Move damaged checkpoints out of the manager's folder (so their steps can be saved again)."""
        if not failed:
            return
        aside = self.directory.parent / f"{self.directory.name}_damaged"
        targets = []
        for s, _ in failed:
            target = aside / str(s)
            n = 1
            while target.exists():
                target, n = aside / f"{s}.{n}", n + 1
            targets.append(target)
        # several processes: all pick the names before process 0 moves anything, and none reloads before it is done
        _barrier("gecko_jax_set_aside_names")
        for (s, why), target in zip(failed, targets):
            if jax.process_index() == 0:
                aside.mkdir(parents=True, exist_ok=True)
                if is_remote(target):  # object stores: a copy then a delete (there are no folders to rename)
                    # epath's rename wants the target's folder to exist; on a bucket a prefix exists once an
                    # object is under it
                    write_text(aside / "README.txt", "checkpoints gecko-jax could not restore (set aside on resume)\n")
                    (self.directory / str(s)).rename(target)
                else:
                    os.rename(self.directory / str(s), target)
            _say(f"gecko-jax: skipped damaged checkpoint step {s} in {self.directory} ({why}); moved it to {target}")
        _barrier("gecko_jax_set_aside_moved")
        self.manager.reload()

    def wait(self) -> None:
        with self._write_errors():
            self.manager.wait_until_finished()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self.manager.close()


def failure_reason(error: BaseException, limit: int = 240) -> str:
    """One line on why a restore failed: the innermost cause's message (tensorstore's says which file and how)."""
    while error.__cause__ is not None or (error.__context__ is not None and not error.__suppress_context__):
        error = error.__cause__ or error.__context__
    text = " ".join((str(error).strip() or type(error).__name__).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _everyone(flag: bool) -> bool:
    """Whether ``flag`` holds on every process."""
    if jax.process_count() == 1:
        return flag
    import numpy as np
    from jax.experimental import multihost_utils

    return bool(np.all(multihost_utils.process_allgather(np.asarray([int(flag)], dtype=np.int32))))


def _barrier(name: str) -> None:
    """Wait for every process (nothing to wait for in a one-process run)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _say(line: str) -> None:
    if jax.process_index() == 0:
        print(line, file=sys.stderr, flush=True)


def _is_orbax_debris(exc_type, exc, obj=None) -> bool:
    """What a failed orbax read or write leaves behind: tensorstore I/O still in flight when orbax's event loop
    closed reports "Event loop is closed", and its coroutines, collected later, "Exception ignored in
    <coroutine ...>"."""
    if exc_type is RuntimeError and str(exc) == "Event loop is closed":
        return True
    code = getattr(obj, "cr_code", None)
    return code is not None and "orbax" in code.co_filename


class _WriteFailureLog(logging.Filter):
    """Orbax's background save thread logs a failed write (full disk, ...) at ERROR with its whole traceback; the
    same error is raised at the next save or wait, where ``Checkpointer`` reports it in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        try:
            text = record.getMessage() + (str(record.exc_info[1]) if record.exc_info else "")
        except Exception:  # noqa: BLE001 (a record that cannot render is not ours to judge)
            return True
        return write_failure("", RuntimeError(text)) is None


def _filter_orbax_noise() -> None:
    """Drop (only) orbax's debris from the process's error hooks and its logged write failures; the caller reports
    each failure in one line. Installed once; anything else still reaches the previous hooks and handlers."""
    absl = logging.getLogger("absl")
    if not any(isinstance(f, _WriteFailureLog) for f in absl.filters):
        absl.addFilter(_WriteFailureLog())
    if getattr(sys.unraisablehook, "_gecko_restore_filter", False):
        return
    previous_unraisable, previous_except = sys.unraisablehook, sys.excepthook

    def unraisable(info):
        if not _is_orbax_debris(info.exc_type, info.exc_value, info.object):
            previous_unraisable(info)

    def excepthook(exc_type, exc, tb):
        if not _is_orbax_debris(exc_type, exc):
            previous_except(exc_type, exc, tb)

    unraisable._gecko_restore_filter = True
    sys.unraisablehook, sys.excepthook = unraisable, excepthook


@contextlib.contextmanager
def _quiet_orbax():
    """Orbax logs a failed read at ERROR level with the whole tensorstore spec; the caller reports one line."""
    loggers = [logging.getLogger(n) for n in ("absl", "orbax", "jax._src.distributed")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    except BaseException:
        _filter_orbax_noise()
        raise
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def restore_params(directory: str | pathlib.Path, like_params: Any, step: int | None = None) -> Any:
    """Only the params of a train-state checkpoint (an explicit init checkpoint: fresh optimizer, step 0).

    ``directory`` is either a checkpoint manager's folder (newest step, or ``step``) or one step's folder.
    """
    directory = _absolute(directory)
    if not directory.exists():
        raise FileNotFoundError(f"init checkpoint {directory} does not exist "
                                "(config field 'checkpoint.init_checkpoint')")
    if (directory / "default").is_dir() or (directory / "_CHECKPOINT_METADATA").is_file():
        item = directory / "default" if (directory / "default").is_dir() else directory
    else:
        manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(read_only=True))
        step = manager.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"init checkpoint {directory} holds no checkpoint steps")
        item = directory / str(step) / "default"
    # Whatever mesh (devices, processes) wrote it: every array comes back whole on this process's first device,
    # then takes like_params' layout (the devices that wrote it need not exist here).
    try:
        with _quiet_orbax():
            checkpointer = ocp.StandardCheckpointer()
            saved = checkpointer.metadata(item).item_metadata
            saved = getattr(saved, "tree", saved)
            here = SingleDeviceSharding(jax.local_devices()[0])
            target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=here), saved)
            restored = checkpointer.restore(item, target)
    except Exception as e:  # noqa: BLE001
        raise RestoreError(f"init checkpoint {item} (config field 'checkpoint.init_checkpoint') does not restore: "
                           f"{failure_reason(e)}") from e
    return put_global(_match(like_params, restored["params"]), jax.tree.map(lambda x: x.sharding, like_params))


def _absolute(directory):
    """A local folder as an absolute ``pathlib.Path``; a URI (``gs://bucket/...``) as an ``epath.Path``."""
    path = as_path(directory)
    return path if is_remote(path) else path.absolute()


def _match(like: Any, restored: Any) -> Any:
    """``restored`` (nested dicts from a checkpoint) in the tree structure of ``like``."""
    flat_like, treedef = jax.tree_util.tree_flatten_with_path(like)
    out = []
    for path, _ in flat_like:
        node = restored
        for k in path:
            node = node[getattr(k, "key", getattr(k, "name", getattr(k, "idx", None)))]
        out.append(node)
    return jax.tree_util.tree_unflatten(treedef, out)
