"""Train state, optimizer, mesh and the jitted, sharded train step.

Device layout (DESIGN.md): one ``Mesh`` with a ``data`` axis. The global batch is one array sharded on its first
axis over ``data``, so in-batch and same-tower negatives span every device without hand-written gathers: XLA
inserts the all-gathers the similarity matrix needs and the all-reduce of the gradients. Parameters and optimizer
state are replicated by default; :func:`state_shardings` takes ``rules`` (regex on the parameter path ->
``PartitionSpec``) as the seam for FSDP/tensor-parallel layouts later.

Users coming from ``pmap``: there is no per-device function and no ``replicate``/``unreplicate``; the step sees the
global batch, ``jax.lax.pmean`` of the gradients is implied by the sharding, and the state lives once (replicated).
"""
from __future__ import annotations

import functools

import re
from typing import Any, Callable, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from gecko_jax.train.config import OptimizerConfig, TrainConfig

DATA_AXIS = "data"

# loss_fn(params, batch, rng, step, frozen) -> (scalar loss, dict of scalar metrics)
LossFn = Callable[[Any, dict, jax.Array, jax.Array, Any], tuple[jax.Array, dict]]


@flax.struct.dataclass
class TrainState:
    """Everything a resumed run needs: the checkpoint is exactly this pytree."""

    step: jax.Array  # int32 scalar: optimizer steps taken
    params: Any  # trainable parameters
    opt_state: Any  # optax state
    rng: jax.Array  # uint32[2] raw PRNG key, split once per step (dropout)
    data_position: jax.Array  # int32 scalar: index of the next global batch in the data stream
    frozen: Any = flax.struct.field(default_factory=dict)  # non-trained arrays (e.g. reference encoder params)


def make_mesh(num_devices: int | None = None, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D ``data`` mesh over the first ``num_devices`` devices (all by default)."""
    devices = list(devices if devices is not None else jax.devices())
    if num_devices is not None:
        if num_devices > len(devices):
            raise ValueError(f"num_devices={num_devices} but only {len(devices)} device(s) are visible")
        devices = devices[:num_devices]
    return Mesh(np.array(devices), (DATA_AXIS,))


def make_schedule(cfg: OptimizerConfig, total_steps: int) -> optax.Schedule:
    lr, warm = cfg.learning_rate, cfg.warmup_steps
    end = lr * cfg.end_lr_ratio
    decay_steps = max(total_steps - warm, 1)
    if cfg.schedule == "constant":
        main = optax.constant_schedule(lr)
    elif cfg.schedule == "warmup_cosine":
        main = optax.cosine_decay_schedule(lr, decay_steps, alpha=cfg.end_lr_ratio)
    elif cfg.schedule == "warmup_linear":
        main = optax.linear_schedule(lr, end, decay_steps)
    else:  # config validation makes this unreachable; kept so a new registry name cannot fall through silently
        raise ValueError(f"unknown schedule {cfg.schedule!r}")
    if warm == 0:
        return main
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warm), main], [warm])


def make_optimizer(cfg: OptimizerConfig, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """Optimizer from config: clipping (global norm) then the named optimizer on the schedule."""
    schedule = make_schedule(cfg, total_steps)
    if cfg.name == "adamw":
        opt = optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay)
    elif cfg.name == "adam":
        opt = optax.adam(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
    elif cfg.name == "sgd":
        opt = optax.sgd(schedule, momentum=cfg.momentum)
    else:
        raise ValueError(f"unknown optimizer {cfg.name!r}")
    if cfg.clip_norm is not None:
        opt = optax.chain(optax.clip_by_global_norm(cfg.clip_norm), opt)
    if cfg.frozen:
        # Frozen leaves get zero updates and no state; clipping sees only the trained gradients.
        opt = optax.multi_transform({"train": opt, "frozen": optax.set_to_zero()},
                                    functools.partial(_frozen_labels, cfg.frozen))
    return opt, schedule


def _frozen_labels(prefixes, params):
    def label(path, _):
        name = _path_str(path)
        return "frozen" if any(name == p or name.startswith(p.rstrip("/") + "/") for p in prefixes) else "train"

    labels = jax.tree_util.tree_map_with_path(label, params)
    if prefixes and "frozen" not in jax.tree.leaves(labels):
        raise ValueError(f"optimizer.frozen={list(prefixes)} matches no parameter (paths look like "
                         f"{_path_str(jax.tree_util.tree_flatten_with_path(params)[0][0][0])!r})")
    return labels


def _path_str(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def state_shardings(abstract_state: Any, mesh: Mesh, rules: Sequence[tuple[str, P]] = ()) -> Any:
    """NamedSharding per leaf: the first rule whose regex matches the leaf's path, else replicated.

    Optimizer moments mirror parameter paths (``opt_state/.../mu/encoder/...``), so one rule shards a parameter
    and its moments alike.
    """
    compiled = [(re.compile(pattern), spec) for pattern, spec in rules]

    def pick(path, leaf):
        name = _path_str(path)
        for pattern, spec in compiled:
            if pattern.search(name) and len(spec) <= getattr(leaf, "ndim", 0):
                return NamedSharding(mesh, spec)
        return NamedSharding(mesh, P())

    return jax.tree_util.tree_map_with_path(pick, abstract_state)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA_AXIS))


def global_batch(local_batch: dict, mesh: Mesh) -> dict:
    """Assemble this process's rows into global arrays sharded over ``data`` (multi-host safe)."""
    sharding = batch_sharding(mesh)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch)


def create_state(config: TrainConfig, mesh: Mesh, task=None, *, params: Any = None,
                 rules: Sequence[tuple[str, P]] = ()) -> TrainState:
    """A fresh state, initialised by one jitted function compiled straight into its shardings.

    Args:
      config: the run config (optimizer, steps and seed are read).
      mesh: device mesh with a ``data`` axis.
      task: the trainer task (``init_params(rng)``, ``init_frozen(params)``); built from ``config`` when None.
      params: optional starting parameters (e.g. a pretrained encoder); random init when None.
      rules: sharding rules (regex -> PartitionSpec) for :func:`state_shardings`; replicated when empty.

    Returns:
      A :class:`TrainState` at step 0 and data position 0 whose leaves carry their final shardings.
    """
    if task is None:
        from gecko_jax.train.tasks import build_task

        task = build_task(config)
    tx, _ = make_optimizer(config.optimizer, config.steps)

    def init(rng, given):
        p_rng, s_rng = jax.random.split(rng)
        p = task.init_params(p_rng) if given is None else given
        return TrainState(step=jnp.zeros((), jnp.int32), params=p, opt_state=tx.init(p), rng=s_rng,
                          data_position=jnp.zeros((), jnp.int32), frozen=task.init_frozen(p))

    key = jax.random.PRNGKey(config.seed)
    abstract = jax.eval_shape(init, key, params)
    shardings = state_shardings(abstract, mesh, rules)
    given_sh = None if params is None else jax.tree.map(lambda _: NamedSharding(mesh, P()), params)
    return jax.jit(init, in_shardings=(NamedSharding(mesh, P()), given_sh), out_shardings=shardings)(key, params)


class TrainStep:
    """The jitted train step: ``state, metrics = step(state, batch)``.

    ``state`` is donated (its buffers are reused for the new state, so the caller must not touch the old one).
    ``trace_count`` counts traces, i.e. compilations: with fixed batch sizes and length buckets it grows once per
    distinct set of batch shapes.
    """

    def __init__(self, loss_fn: LossFn, config: TrainConfig, mesh: Mesh):
        self.mesh = mesh
        self.tx, self.schedule = make_optimizer(config.optimizer, config.steps)
        vg = getattr(loss_fn, "value_and_grad", None)
        self._value_and_grad = vg if vg is not None else jax.value_and_grad(loss_fn, has_aux=True)
        self.trace_count = 0
        self._jitted = None

    def _step(self, state: TrainState, batch: dict):
        self.trace_count += 1
        rng, key = jax.random.split(state.rng)
        (loss, aux), grads = self._value_and_grad(state.params, batch, key, state.step, state.frozen)
        updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), "lr": self.schedule(state.step), **aux}
        new = state.replace(step=state.step + 1, params=params, opt_state=opt_state, rng=rng,
                            data_position=state.data_position + 1)
        return new, metrics

    def _build(self, state: TrainState):
        shardings = jax.tree.map(lambda x: x.sharding, state)
        self._jitted = jax.jit(self._step, in_shardings=(shardings, batch_sharding(self.mesh)),
                               out_shardings=(shardings, NamedSharding(self.mesh, P())), donate_argnums=0)

    def __call__(self, state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        if self._jitted is None:
            self._build(state)
        return self._jitted(state, batch)


def make_step(loss_fn: LossFn, config: TrainConfig, mesh: Mesh) -> TrainStep:
    """Jitted train step over ``mesh``: batch sharded on axis 0 over ``data``, state donated and kept in place.

    ``loss_fn(params, batch, rng, step, frozen) -> (loss, metrics)``; an object with a ``value_and_grad`` method of
    the same signature (e.g. :class:`gecko_jax.train.gradcache.GradCachedLoss`) supplies its own gradients.
    The step also reports ``grad_norm`` (before clipping) and ``lr``.
    """
    return TrainStep(loss_fn, config, mesh)
