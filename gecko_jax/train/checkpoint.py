"""Orbax checkpoints of the whole :class:`~gecko_jax.train.state.TrainState`, and the resume order.

Checkpoints are atomic (orbax writes to a temporary folder and renames it on commit, so a kill mid-save leaves the
previous checkpoint intact), keep the newest ``keep``, and are written every ``every_steps`` steps, at the end of
training and on SIGTERM (preemption). A checkpoint holds params, optimizer state, step, RNG key, data position and
frozen arrays: everything needed for a bit-exact continuation.
"""
from __future__ import annotations

import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp

from gecko_jax.train.state import TrainState

_FIELDS = ("step", "params", "opt_state", "rng", "data_position", "frozen")


def _as_dict(state: TrainState) -> dict:
    return {f: getattr(state, f) for f in _FIELDS}


def _abstract(tree: Any) -> Any:
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


class Checkpointer:
    """Orbax ``CheckpointManager`` over ``directory`` for train states."""

    def __init__(self, directory: str | pathlib.Path, *, every_steps: int, keep: int):
        self.directory = pathlib.Path(directory).absolute()
        self.every_steps = every_steps
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, save_interval_steps=every_steps, create=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state: TrainState, *, force: bool = False) -> bool:
        """Save when ``step`` is due (every ``every_steps``) or ``force``; returns whether a save started."""
        if step in self.manager.all_steps():
            return False
        return self.manager.save(step, args=ocp.args.StandardSave(_as_dict(state)), force=force)

    def restore(self, like: TrainState, step: int | None = None) -> TrainState:
        """Restore into the structure, dtypes and shardings of ``like`` (a freshly created state)."""
        step = self.latest_step() if step is None else step
        restored = self.manager.restore(step, args=ocp.args.StandardRestore(_abstract(_as_dict(like))))
        return like.replace(**{f: restored[f] for f in _FIELDS})

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def restore_params(directory: str | pathlib.Path, like_params: Any, step: int | None = None) -> Any:
    """Only the params of a train-state checkpoint (an explicit init checkpoint: fresh optimizer, step 0).

    ``directory`` is either a checkpoint manager's folder (newest step, or ``step``) or one step's folder.
    """
    directory = pathlib.Path(directory).absolute()
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
    # No target: the saved tree comes back as host arrays whatever mesh wrote it, then takes like_params' layout.
    restored = ocp.StandardCheckpointer().restore(item)
    return jax.tree.map(lambda ref, x: jax.device_put(x, ref.sharding), like_params,
                        _match(like_params, restored["params"]))


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
