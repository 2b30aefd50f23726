"""Train state, optimizer, mesh and the jitted, sharded train step.

Device layout (DESIGN.md): one ``Mesh`` with axes ``data x fsdp x model``. The global batch is one array sharded on
its first axis over ``data`` and ``fsdp`` together, so in-batch and same-tower negatives span every device without
hand-written gathers: XLA inserts the all-gathers the similarity matrix needs and the all-reduce (or, for sharded
parameters, reduce-scatter) of the gradients. Parameters and optimizer state are replicated by default;
``sharding.rules`` (regex on the state path -> ``PartitionSpec``, or ``"fsdp"``) split them over the ``fsdp`` axis
(ZeRO-3 style: each device keeps 1/fsdp of the weights and Adam moments, XLA gathers a layer's weights where it is
used). The ``model`` axis is there for tensor-parallel rules; the batch is replicated over it.

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

from gecko_jax.errors import ConfigError
from gecko_jax.train.config import OptimizerConfig, TrainConfig

DATA_AXIS, FSDP_AXIS, MODEL_AXIS = "data", "fsdp", "model"
BATCH_AXES = (DATA_AXIS, FSDP_AXIS)  # the batch's rows are split over these; the model axis shares them

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


def make_mesh(num_devices: int | None = None, devices: Sequence[jax.Device] | None = None, *, fsdp: int = 1,
              model: int = 1) -> Mesh:
    """A ``data x fsdp x model`` mesh over the first ``num_devices`` devices (all by default).

    ``data`` takes whatever ``fsdp * model`` leaves. Devices are laid out by ``mesh_utils.create_device_mesh``
    (TPU: the physical torus; elsewhere process-major order, so an fsdp group of at most a host's device count stays
    within one host).
    """
    devices = list(devices if devices is not None else jax.devices())
    if num_devices is not None:
        if num_devices > len(devices):
            raise ValueError(f"num_devices={num_devices} but only {len(devices)} device(s) are visible")
        devices = devices[:num_devices]
    if len(devices) % (fsdp * model):
        raise ConfigError(f"config fields 'sharding.fsdp' x 'sharding.model' = {fsdp} x {model}: expected a divisor "
                          f"of the device count ({len(devices)})")
    shape = (len(devices) // (fsdp * model), fsdp, model)
    try:
        from jax.experimental import mesh_utils

        grid = mesh_utils.create_device_mesh(shape, devices, allow_split_physical_axes=True)
    except (ValueError, NotImplementedError, AssertionError):
        grid = np.array(devices).reshape(shape)
    return Mesh(grid, (DATA_AXIS, FSDP_AXIS, MODEL_AXIS))


def mesh_from_config(config: TrainConfig) -> Mesh:
    return make_mesh(config.num_devices, fsdp=config.sharding.fsdp, model=config.sharding.model)


def batch_devices(mesh: Mesh) -> int:
    """How many devices the batch's rows are split over (``data x fsdp``)."""
    return int(np.prod([mesh.shape[a] for a in BATCH_AXES if a in mesh.shape]))


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


def state_shardings(abstract_state: Any, mesh: Mesh, rules: Sequence[tuple[str, P | str]] = (), *,
                    min_shard_size: int = 0) -> Any:
    """NamedSharding per leaf: the first rule whose regex matches the leaf's path (``re.search``), else replicated.

    A rule's spec is a ``PartitionSpec`` (one entry per leading dimension; a rule with more entries than the leaf
    has dimensions passes the leaf on to the next rule, so ``.*`` never hits the step counter), ``"replicated"``,
    or ``"fsdp"``: the largest dimension that divides by the ``fsdp`` axis size is split over it (big_vision's fsdp
    strategy); leaves under ``min_shard_size`` elements, or with no such dimension, stay replicated. Optimizer
    moments mirror parameter paths (``opt_state/.../mu/backbone/...``), so one rule shards a parameter and its
    moments alike.

    Raises:
      ConfigError: a PartitionSpec names a dimension whose size does not divide by its mesh axes' size.
    """
    compiled = [(re.compile(pattern), spec) for pattern, spec in rules]

    def pick(path, leaf):
        name = _path_str(path)
        shape = tuple(getattr(leaf, "shape", ()))
        for (pattern, spec), (source, _) in zip(compiled, rules):
            if not pattern.search(name):
                continue
            if spec == "replicated":
                break
            if spec == "fsdp":
                return NamedSharding(mesh, _fsdp_spec(shape, mesh.shape.get(FSDP_AXIS, 1), min_shard_size))
            if len(spec) > len(shape):
                continue
            _check_divides(spec, shape, mesh, source, name)
            return NamedSharding(mesh, spec)
        return NamedSharding(mesh, P())

    return jax.tree_util.tree_map_with_path(pick, abstract_state)


def _fsdp_spec(shape: tuple, size: int, min_size: int) -> P:
    if size == 1 or int(np.prod(shape, dtype=np.int64)) < max(min_size, 1):
        return P()
    for dim in sorted(range(len(shape)), key=lambda d: (-shape[d], d)):
        if shape[dim] % size == 0:
            return P(*([None] * dim + [FSDP_AXIS]))
    return P()


def _check_divides(spec: P, shape: tuple, mesh: Mesh, rule: str, name: str) -> None:
    for dim, axes in enumerate(spec):
        if axes is None:
            continue
        axes = axes if isinstance(axes, tuple) else (axes,)
        size = int(np.prod([mesh.shape[a] for a in axes]))
        if shape[dim] % size:
            raise ConfigError(f"config field 'sharding.rules': rule {rule!r} splits dimension {dim} of {name} "
                              f"(shape {shape}) over {axes} ({size} devices), which does not divide it")


def batch_sharding(mesh: Mesh) -> NamedSharding:
    axes = tuple(a for a in BATCH_AXES if a in mesh.shape)
    return NamedSharding(mesh, P(axes))


def global_batch(local_batch: dict, mesh: Mesh) -> dict:
    """Assemble this process's rows into global arrays sharded over ``data`` (multi-host safe)."""
    sharding = batch_sharding(mesh)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch)


def create_state(config: TrainConfig, mesh: Mesh, task=None, *, params: Any = None,
                 rules: Sequence[tuple[str, P | str]] | None = None) -> TrainState:
    """A fresh state, initialised by one jitted function compiled straight into its shardings.

    Args:
      config: the run config (optimizer, steps and seed are read).
      mesh: device mesh with a ``data`` axis.
      task: the trainer task (``init_params(rng)``, ``init_frozen(params)``); built from ``config`` when None.
      params: optional starting parameters (e.g. a pretrained encoder); random init when None.
      rules: sharding rules (regex -> PartitionSpec or "fsdp") for :func:`state_shardings`; None: the config's
        (``config.sharding``), so every caller gets the same layout.

    Returns:
      A :class:`TrainState` at step 0 and data position 0 whose leaves carry their final shardings.
    """
    if task is None:
        from gecko_jax.train.tasks import build_task

        task = build_task(config)
    init = _init_fn(config, task)
    key = jax.random.PRNGKey(config.seed)
    _, shardings = state_layout(config, mesh, task, params=params, rules=rules)
    if params is not None:  # straight into the parameters' own layout (also from host arrays on several hosts)
        params = put_global(params, shardings.params)
    given_sh = None if params is None else shardings.params
    return jax.jit(init, in_shardings=(NamedSharding(mesh, P()), given_sh), out_shardings=shardings)(key, params)


def _init_fn(config: TrainConfig, task) -> Callable:
    tx, _ = make_optimizer(config.optimizer, config.steps)

    def init(rng, given):
        p_rng, s_rng = jax.random.split(rng)
        p = task.init_params(p_rng) if given is None else given
        return TrainState(step=jnp.zeros((), jnp.int32), params=p, opt_state=tx.init(p), rng=s_rng,
                          data_position=jnp.zeros((), jnp.int32), frozen=task.init_frozen(p))

    return init


def state_layout(config: TrainConfig, mesh: Mesh, task, *, params: Any = None,
                 rules: Sequence[tuple[str, P | str]] | None = None) -> tuple[Any, Any]:
    """``(abstract state, shardings)`` without allocating anything: what :func:`create_state` would build, for
    planning memory (``bench/fsdp_memory.py``). ``rules`` None: the config's."""
    abstract = jax.eval_shape(_init_fn(config, task), jax.random.PRNGKey(config.seed), params)
    if rules is None:
        rules = config.sharding.partition_rules()
    return abstract, state_shardings(abstract, mesh, rules, min_shard_size=config.sharding.min_shard_size)


def put_global(tree: Any, shardings: Any) -> Any:
    """Host (or device) arrays, the same value on every process, as global arrays with ``shardings``."""
    def put(x, sharding):
        if isinstance(x, jax.Array) and x.sharding == sharding:
            return x
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return jax.jit(lambda a: a, out_shardings=sharding)(x)
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(put, tree, shardings)


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
