"""Training engine: sharded jitted steps, gradient caching, orbax checkpoints with exact resume.

    from gecko_jax import train
    config = train.load_config("experiments/configs/gecko_finetune_minilm.json", ["steps=100"])
    result = train.train_and_evaluate(config, "runs/ft")          # resumes whatever runs/ft holds

    mesh = train.mesh_from_config(config)                         # data x fsdp x model (config.sharding)
    state = train.create_state(config, mesh)                      # init compiled into the rules' shardings
    step = train.make_step(task.step_loss(), config, mesh)        # jax.jit over NamedSharding, donates state
    state, metrics = step(state, train.global_batch(batch, mesh))

    # classifier grids (the noisy-label experiments): many runs in one vmapped program, early-stopping callbacks
    cfg = train.load_grid_config("experiments/gamblers/configs/mnist_stops_symmetric.json")
    result = train.train_grid(cfg, rules=[train.LStarStop(), train.NoisyValidationStop(patience=3)])

Submodules import lazily so ``gecko-jax --help`` does not pull in JAX.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "TrainConfig": "config", "ModelConfig": "config", "DataConfig": "config", "OptimizerConfig": "config",
    "LossConfig": "config", "CheckpointConfig": "config", "DatasetSpec": "config", "ConfigError": "config",
    "ShardingConfig": "config",
    "load_config": "config", "from_dict": "config", "apply_overrides": "config",
    "TrainState": "state", "create_state": "state", "make_step": "state", "make_mesh": "state",
    "make_optimizer": "state", "make_schedule": "state", "state_shardings": "state", "global_batch": "state",
    "TrainStep": "state", "state_layout": "state", "mesh_from_config": "state",
    "local_batch": "distributed",
    "GradCachedLoss": "gradcache",
    "Checkpointer": "checkpoint", "restore_params": "checkpoint",
    "MetricsWriter": "metrics", "EventWriter": "metrics",
    "train_and_evaluate": "loop", "initial_state": "loop", "NonFiniteLossError": "loop", "TrainResult": "loop",
    "build_task": "tasks", "load_encoder": "encoders",
    "ContrastiveTask": "contrastive", "build_contrastive": "contrastive",
    "ClassifierTask": "classifier", "TextClassifier": "classifier", "MLPClassifier": "classifier",
    "FieldAdapter": "classifier", "LinearHead": "classifier", "EncoderHead": "classifier",
    "per_example_loss": "classifier", "loss_hparam": "classifier",
    "train_grid": "grid", "GridResult": "grid",
    "GridConfig": "grid_config", "GridRun": "grid_config", "GridData": "grid_config", "load_grid_config": "grid_config",
    "grid_from_dict": "grid_config", "load_grid_data": "grid_data", "GridArrays": "grid_data",
    "LStarStop": "early_stopping", "NoisyValidationStop": "early_stopping",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"gecko_jax.train.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'gecko_jax.train' has no attribute {name!r}")
