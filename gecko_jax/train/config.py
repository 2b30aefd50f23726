"""Typed training configs: one dataclass per concern, validated in ``__post_init__``, loaded from JSON.

A config file is a JSON object with the fields of :class:`TrainConfig`; nested sections (``model``, ``data``,
``optimizer``, ``loss``, ``checkpoint``) are objects with the fields of their dataclasses. ``--set a.b=value``
overrides any field (``value`` is parsed as JSON, falling back to a plain string). Unknown keys are errors that name
the key and the section, so a typo never silently trains with a default.

Swappable parts are chosen by name from registries (``OPTIMIZERS``, ``SCHEDULES``, ``CONTRASTIVE_LOSSES``,
``CLASSIFIER_LOSSES``) so a config only ever names things the code can build.
"""
from __future__ import annotations

import dataclasses
import json
import numbers
import pathlib
import re
from typing import Any

from gecko_jax.errors import ConfigError

# Registries: name -> short description. The builders live in state.py / contrastive.py / classifier.py and key off
# the same names; a test checks the two stay in sync.
OPTIMIZERS = {"adamw": "optax.adamw (decoupled weight decay)", "adam": "optax.adam", "sgd": "optax.sgd (momentum)"}
SCHEDULES = {
    "constant": "constant after linear warm-up",
    "warmup_cosine": "linear warm-up then cosine decay to end_lr_ratio * learning_rate",
    "warmup_linear": "linear warm-up then linear decay to end_lr_ratio * learning_rate",
}
CONTRASTIVE_LOSSES = {"gecko": "losses.gecko_contrastive (in-batch + hard + same-tower negatives)"}
CLASSIFIER_LOSSES = {
    "ce": "softmax cross-entropy",
    "smoothed_ce": "losses.smoothed_cross_entropy with mass `smoothing_p` on the observed label",
    "gamblers": "losses.gamblers with a fixed (`payoff`) or automatic (`payoff_method`) payoff, NLL warm-up",
    "forward_ce": "losses.forward_corrected_cross_entropy through the transition matrix `transition`",
}
# smoothing_p by name: p*(r) at the assumed noise rate, or the noise-rate-agnostic (K + 2) / (3K).
SMOOTHING_RULES = ("optimal", "agnostic")
TRANSITIONS = ("symmetric", "pairflip")
TRAINERS = ("contrastive", "classifier")


def _check(cond: bool, field: str, expected: str, got: Any) -> None:
    if not cond:
        raise ConfigError(f"config field {field!r}: expected {expected}, got {got!r}")


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


# annotation (as written, with `from __future__ import annotations`) -> (test, what the message says is expected)
_TYPES = {
    "int": (_is_int, "an integer"),
    "float": (_is_number, "a number"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "tuple": (lambda v: isinstance(v, (list, tuple)), "a list"),
    "list": (lambda v: isinstance(v, (list, tuple)), "a list"),
    "dict": (lambda v: isinstance(v, dict), "an object"),
}


def _check_types(obj, section: str, items: dict[str, tuple] | None = None) -> None:
    """Check every field of a config dataclass against its annotation before any value is used, so "32" or 3.5
    for an integer field is a :class:`ConfigError` naming the field, not a TypeError or a silent float.

    ``items`` gives element types of list fields: ``{field: (test, expected)}``.
    """
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        kinds = [k.strip() for k in str(f.type).split("|")]
        if value is None and "None" in kinds:
            continue
        checks = [_TYPES[k] for k in kinds if k in _TYPES]
        if not checks:
            continue  # nested sections are checked by their own dataclass
        name = f"{section}.{f.name}" if section else f.name
        if not any(test(value) for test, _ in checks):
            expected = " or ".join([e for _, e in checks] + (["null"] if "None" in kinds else []))
            raise ConfigError(f"config field {name!r}: expected {expected}, got {value!r} "
                              f"({type(value).__name__})")
        if items and f.name in items:
            test, expected = items[f.name]
            for k, v in enumerate(value):
                if not test(v):
                    raise ConfigError(f"config field '{name}[{k}]': expected {expected}, got {v!r} "
                                      f"({type(v).__name__})")


@dataclasses.dataclass
class DatasetSpec:
    """One JSONL file of a mixture."""

    path: str  # JSONL file: {id, task?, query, positive, negative?} (contrastive) or {id, text, label} (classifier)
    weight: float = 1.0  # sampling weight of this dataset in the mixture (normalised over datasets)
    task: str | None = None  # task string for Gecko formatting when records carry none
    symmetric: bool = False  # format documents like queries (STS, classification, clustering tasks)
    name: str | None = None  # source name in per-source metrics (default: the file name without extension)
    hard_negatives: int | None = None  # hard negatives per query for this dataset (None: data.hard_negatives)

    def __post_init__(self):
        _check_types(self, "data.datasets[]")
        _check(isinstance(self.path, str) and self.path != "", "data.datasets[].path", "a non-empty path", self.path)
        _check(self.weight > 0, "data.datasets[].weight", "a positive number", self.weight)
        _check(self.hard_negatives is None or (isinstance(self.hard_negatives, int) and self.hard_negatives >= 0),
               "data.datasets[].hard_negatives", "null or an integer >= 0", self.hard_negatives)
        if self.name is None:
            self.name = pathlib.Path(self.path).stem


@dataclasses.dataclass
class DataConfig:
    datasets: list = dataclasses.field(default_factory=list)  # list of DatasetSpec (or dicts) forming the mixture
    source: str = "jsonl"  # "jsonl" (files above); classifier also: "digits" (scikit-learn) or "tfds_local:<name>"
    batch_size: int = 32  # global batch size (all devices, all processes); must divide by the device count
    max_length: int = 128  # token cap per text
    buckets: tuple = (32, 64, 128, 256, 512)  # padded lengths; each batch is padded to the smallest that fits
    pack_length: int | None = None  # contrastive: pack texts several to a row of this many tokens (>= max_length)
    hard_negatives: int = 0  # hard negatives per query taken from the `negative` field (0: none)
    gecko_format: bool = True  # apply Gecko's "task: ... | query: ..." / "title: ... | text: ..." formatting
    seed: int = 0  # seed of the data order (independent of the model seed)
    debias_path: str | None = None  # JSONL of {id, groups: [text, ...], neutral} tuples for the debiasing term
    num_classes: int = 0  # classifier: number of classes (0: infer from the data)
    noise_type: str = "none"  # classifier: synthetic label noise on the training split: "none", "symmetric", "pairflip"
    noise_rate: float = 0.0  # classifier: label noise rate in [0, 1)
    subset: int | None = None  # classifier: keep a seeded random subset of this many training rows
    eval_path: str | None = None  # classifier with jsonl: held-out {id, text, label} file for the eval hook

    def __post_init__(self):
        _check_types(self, "data", {"buckets": _TYPES["int"]})
        self.datasets = [d if isinstance(d, DatasetSpec)
                         else DatasetSpec(**_only_fields(DatasetSpec, d, "data.datasets[]")) for d in self.datasets]
        self.buckets = tuple(int(b) for b in self.buckets)
        _check(self.source in ("jsonl", "digits") or self.source.startswith("tfds_local:"), "data.source",
               "'jsonl', 'digits' or 'tfds_local:<mnist|cifar10|sst2|mr>'", self.source)
        _check(self.noise_type in ("none", "symmetric", "pairflip"), "data.noise_type",
               "'none', 'symmetric' or 'pairflip'", self.noise_type)
        _check(0.0 <= self.noise_rate < 1.0, "data.noise_rate", "a rate in [0, 1)", self.noise_rate)
        _check(self.batch_size > 0, "data.batch_size", "a positive integer", self.batch_size)
        _check(self.max_length > 0, "data.max_length", "a positive integer", self.max_length)
        _check(len(self.buckets) > 0 and list(self.buckets) == sorted(self.buckets), "data.buckets",
               "a non-empty increasing list of lengths", self.buckets)
        _check(self.pack_length is None or (isinstance(self.pack_length, int) and self.pack_length >= self.max_length),
               "data.pack_length", f"null (no packing) or an int >= data.max_length={self.max_length}",
               self.pack_length)
        _check(self.hard_negatives >= 0, "data.hard_negatives", "an integer >= 0", self.hard_negatives)
        _check(self.num_classes >= 0, "data.num_classes", "an integer >= 0", self.num_classes)


@dataclasses.dataclass
class ModelConfig:
    pretrained: str | None = None  # encoder folder or known name ("all-MiniLM-L6-v2"); None: random init
    tiny: dict | None = None  # random tiny encoder: overrides for EncoderConfig.tiny (used when pretrained is None)
    tokenizer: str | None = None  # tokenizer folder/name; defaults to `pretrained`
    dropout: float | None = None  # override the encoder's dropout rates (None: keep the checkpoint's)
    dtype: str | None = None  # encoder compute dtype ("bfloat16" on GPU/TPU); params stay float32. None: float32
    # attention kernel (EncoderConfig.attention_impl): "dense", "xla", "cudnn" or "auto" (cuDNN flash attention on a
    # CUDA GPU when it applies, dense elsewhere). None: "auto". Fused kernels need model.dropout 0 (else dense).
    attention_impl: str | None = None
    # classifier trainer: "text_head" (encoder + linear), "mlp", "linear" (over the inputs as they come, e.g. frozen
    # sentence embeddings) or "cnn:<name>" (gecko_jax.models.cnn)
    classifier: str = "text_head"
    hidden: tuple = (256,)  # classifier "mlp": hidden widths

    def __post_init__(self):
        _check_types(self, "model", {"hidden": _TYPES["int"]})
        self.hidden = tuple(int(h) for h in self.hidden)
        _check(self.classifier in ("text_head", "mlp", "linear") or self.classifier.startswith("cnn:"),
               "model.classifier", "'text_head', 'mlp', 'linear' or 'cnn:<name>'", self.classifier)
        _check(self.dropout is None or 0.0 <= self.dropout < 1.0, "model.dropout", "a rate in [0, 1)", self.dropout)
        _check(self.dtype in (None, "float32", "bfloat16"), "model.dtype", "null, 'float32' or 'bfloat16'", self.dtype)
        _check(self.attention_impl in (None, "dense", "xla", "cudnn", "auto"), "model.attention_impl",
               "null, 'dense', 'xla', 'cudnn' or 'auto'", self.attention_impl)


@dataclasses.dataclass
class OptimizerConfig:
    name: str = "adamw"  # key of OPTIMIZERS
    learning_rate: float = 2e-5  # peak learning rate
    schedule: str = "warmup_linear"  # key of SCHEDULES
    warmup_steps: int = 0  # linear warm-up from 0 to learning_rate
    end_lr_ratio: float = 0.0  # final learning rate as a fraction of the peak (decaying schedules)
    weight_decay: float = 0.01  # adamw only
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8  # Adam epsilon
    momentum: float = 0.9  # sgd only
    clip_norm: float | None = 1.0  # global-norm gradient clipping; None disables
    # Parameter path prefixes kept fixed ("backbone/embed_tokens": Gemma's 168M-row-parameter token table): no
    # update and no optimizer state; their gradients are never used, so XLA drops them. Empty: train everything.
    frozen: tuple = ()

    def __post_init__(self):
        _check_types(self, "optimizer", {"frozen": _TYPES["str"]})
        self.frozen = tuple(self.frozen)
        _check(all(f and not f.startswith("/") for f in self.frozen), "optimizer.frozen",
               "a list of parameter path prefixes such as 'backbone/embed_tokens'", self.frozen)
        _check(self.name in OPTIMIZERS, "optimizer.name", f"one of {sorted(OPTIMIZERS)}", self.name)
        _check(self.schedule in SCHEDULES, "optimizer.schedule", f"one of {sorted(SCHEDULES)}", self.schedule)
        _check(self.learning_rate > 0, "optimizer.learning_rate", "a positive number", self.learning_rate)
        _check(self.warmup_steps >= 0, "optimizer.warmup_steps", "an integer >= 0", self.warmup_steps)
        _check(0.0 <= self.end_lr_ratio <= 1.0, "optimizer.end_lr_ratio", "a number in [0, 1]", self.end_lr_ratio)
        _check(self.clip_norm is None or self.clip_norm > 0, "optimizer.clip_norm", "a positive number or null",
               self.clip_norm)


@dataclasses.dataclass
class LossConfig:
    name: str = "gecko"  # contrastive: "gecko"; classifier: "ce", "smoothed_ce", "gamblers"
    temperature: float = 0.05  # contrastive softmax temperature
    same_tower: bool = True  # contrastive: other queries in the batch are negatives too (Gecko)
    matryoshka_dims: tuple = ()  # e.g. (384, 256): sum of the loss at each truncated, renormalised dimension
    matryoshka_weights: tuple | None = None  # per-dimension weights (default all 1)
    debias_weight: float = 0.0  # weight of the content-conditional debiasing term (needs data.debias_path)
    debias_rho: str = "abs"  # penalty on each distance gap: "abs", "square" or "huber"
    debias_gamma: float = 1.0  # RBF kernel width of the debiasing term
    debias_beta: float = 1.0  # weight of the representation-preservation part of the debiasing term
    contrastive_weight: float = 1.0  # weight of the contrastive term (0 with debiasing: debias-only training)
    smoothing_p: float | str = 0.9  # smoothed_ce: mass on the observed label, or "optimal" (p*(r)) / "agnostic"
    # smoothing_p "optimal" and forward_ce: the noise rate assumed (None: data.noise_rate, the true synthetic rate)
    assumed_noise_rate: float | None = None
    # forward_ce: "symmetric" / "pairflip" channel at the assumed rate, or an explicit [K, K] row-stochastic matrix
    # (T[i][j] = P(observed j | clean i)); None: the channel of data.noise_type
    transition: str | list | None = None
    payoff: float | None = None  # gamblers: fixed payoff o in (1, m]; None: automatic (payoff_method)
    payoff_method: str = "euc"  # gamblers with payoff None: losses.auto_payoff method
    nll_warmup_epochs: int = 0  # gamblers: plain cross-entropy on the m class logits for this many epochs first

    def __post_init__(self):
        _check_types(self, "loss", {"matryoshka_dims": _TYPES["int"], "matryoshka_weights": _TYPES["float"]})
        self.matryoshka_dims = tuple(int(d) for d in self.matryoshka_dims)
        if self.matryoshka_weights is not None:
            self.matryoshka_weights = tuple(float(w) for w in self.matryoshka_weights)
            _check(len(self.matryoshka_weights) == len(self.matryoshka_dims), "loss.matryoshka_weights",
                   f"{len(self.matryoshka_dims)} weights (one per matryoshka_dims entry)", self.matryoshka_weights)
        _check(self.name in CONTRASTIVE_LOSSES or self.name in CLASSIFIER_LOSSES, "loss.name",
               f"one of {sorted(CONTRASTIVE_LOSSES) + sorted(CLASSIFIER_LOSSES)}", self.name)
        _check(self.temperature > 0, "loss.temperature", "a positive number", self.temperature)
        _check(all(d > 0 for d in self.matryoshka_dims), "loss.matryoshka_dims", "positive dimensions",
               self.matryoshka_dims)
        _check(self.smoothing_p in SMOOTHING_RULES or (isinstance(self.smoothing_p, (int, float))
                                                        and 0.0 < self.smoothing_p <= 1.0),
               "loss.smoothing_p", f"a probability in (0, 1] or one of {SMOOTHING_RULES}", self.smoothing_p)
        _check(self.assumed_noise_rate is None or 0.0 <= self.assumed_noise_rate < 1.0, "loss.assumed_noise_rate",
               "null or a rate in [0, 1)", self.assumed_noise_rate)
        _check(self.transition is None or self.transition in TRANSITIONS or isinstance(self.transition, list),
               "loss.transition", f"null, one of {TRANSITIONS} or a [K, K] list of rows", self.transition)
        _check(self.payoff is None or self.payoff > 1.0, "loss.payoff", "a number > 1 or null (automatic)",
               self.payoff)
        _check(self.debias_rho in ("abs", "square", "huber"), "loss.debias_rho", "'abs', 'square' or 'huber'",
               self.debias_rho)
        _check(self.debias_gamma > 0, "loss.debias_gamma", "a positive number", self.debias_gamma)
        _check(self.nll_warmup_epochs >= 0, "loss.nll_warmup_epochs", "an integer >= 0", self.nll_warmup_epochs)
        _check(self.debias_weight >= 0 and self.contrastive_weight >= 0, "loss.debias_weight/contrastive_weight",
               "non-negative weights", (self.debias_weight, self.contrastive_weight))


@dataclasses.dataclass
class CheckpointConfig:
    every_steps: int = 1000  # save every K steps (and always at the end and on SIGTERM)
    keep: int = 3  # keep the N most recent checkpoints
    init_checkpoint: str | None = None  # orbax checkpoint folder to start from when the workdir has none (params only)
    export: bool = True  # contrastive: write the final encoder with Embedder.save_pretrained to workdir/export

    def __post_init__(self):
        _check_types(self, "checkpoint")
        _check(self.every_steps > 0, "checkpoint.every_steps", "a positive integer", self.every_steps)
        _check(self.keep > 0, "checkpoint.keep", "a positive integer", self.keep)


MESH_AXES = ("data", "fsdp", "model")
SPEC_KEYWORDS = ("fsdp", "replicated")


@dataclasses.dataclass
class ShardingConfig:
    """Device mesh ``data x fsdp x model`` and where each parameter / optimizer-state leaf lives (big_vision style:
    regex rules on the state path, first match wins; anything unmatched is replicated)."""

    fsdp: int = 1  # size of the 'fsdp' mesh axis: params and optimizer state are split over it (1: replicated)
    model: int = 1  # size of the 'model' mesh axis (tensor parallelism): only explicit rules use it
    # [[regex, spec], ...] on state paths ("params/backbone/layer_0/attention/query/kernel", "opt_state/.../mu/...":
    # a rule on a parameter path shards its Adam moments alike). spec: "fsdp" (the largest dimension that divides
    # by the fsdp size), "replicated", or a list with one entry per leading dimension: null, an axis name, or a list
    # of axis names. Empty: [[".*", "fsdp"]] when fsdp > 1, else everything replicated.
    rules: list = dataclasses.field(default_factory=list)
    min_shard_size: int = 16384  # leaves with fewer elements stay replicated under "fsdp" (biases, norms)

    def __post_init__(self):
        _check_types(self, "sharding", {"rules": _TYPES["list"]})
        _check(self.fsdp >= 1, "sharding.fsdp", "a positive integer", self.fsdp)
        _check(self.model >= 1, "sharding.model", "a positive integer", self.model)
        _check(self.min_shard_size >= 0, "sharding.min_shard_size", "an integer >= 0", self.min_shard_size)
        for k, rule in enumerate(self.rules):
            field = f"sharding.rules[{k}]"
            _check(len(rule) == 2 and isinstance(rule[0], str), field, "[regex, spec]", rule)
            try:
                re.compile(rule[0])
            except re.error as e:
                raise ConfigError(f"config field {field!r}: bad regex {rule[0]!r} ({e})") from None
            spec = rule[1]
            if isinstance(spec, str):
                _check(spec in SPEC_KEYWORDS, field, f"a spec {SPEC_KEYWORDS} or a list of axes", spec)
                continue
            _check(isinstance(spec, (list, tuple)), field, "a spec: 'fsdp', 'replicated' or a list of axes", spec)
            for entry in spec:
                names = entry if isinstance(entry, (list, tuple)) else [entry]
                _check(all(n is None or n in MESH_AXES for n in names), field,
                       f"spec entries null, one of {MESH_AXES} or a list of them", spec)

    def partition_rules(self) -> list:
        """``[(regex, spec)]`` for :func:`gecko_jax.train.state.state_shardings` (specs as PartitionSpec)."""
        from jax.sharding import PartitionSpec

        rules = self.rules or ([[".*", "fsdp"]] if self.fsdp > 1 else [])
        out = []
        for pattern, spec in rules:
            if not isinstance(spec, str):
                spec = PartitionSpec(*[tuple(e) if isinstance(e, (list, tuple)) else e for e in spec])
            out.append((pattern, spec))
        return out


@dataclasses.dataclass
class TrainConfig:
    trainer: str = "contrastive"  # "contrastive" (dual encoder) or "classifier"
    description: str = ""  # free text: what the run is for (JSON has no comments)
    steps: int = 1000  # total optimizer steps
    seed: int = 0  # model init / dropout seed
    log_every: int = 10  # steps between metric records
    grad_cache_chunk: int = 0  # contrastive: embed in chunks of this many rows (GradCache); 0 disables
    num_devices: int | None = None  # devices of the mesh (None: all); split as data x sharding.fsdp x sharding.model
    distributed: bool = False  # CLI: call jax.distributed.initialize() first (multi-host); in Python, call it yourself
    progress: bool = True  # tqdm progress bar
    eval_every: int = 0  # steps between eval-hook calls (0: only at the end)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    checkpoint: CheckpointConfig = dataclasses.field(default_factory=CheckpointConfig)
    sharding: ShardingConfig = dataclasses.field(default_factory=ShardingConfig)

    def __post_init__(self):
        for name, cls in _SECTIONS.items():
            value = getattr(self, name)
            if isinstance(value, dict):
                setattr(self, name, cls(**_only_fields(cls, value, name)))
            elif not isinstance(value, cls):
                raise ConfigError(f"config section {name!r}: expected an object, got {value!r}")
        _check_types(self, "")
        _check(self.trainer in TRAINERS, "trainer", f"one of {TRAINERS}", self.trainer)
        _check(self.steps > 0, "steps", "a positive integer", self.steps)
        _check(self.log_every > 0, "log_every", "a positive integer", self.log_every)
        _check(self.grad_cache_chunk >= 0, "grad_cache_chunk", "an integer >= 0", self.grad_cache_chunk)
        if self.grad_cache_chunk:
            _check(self.trainer == "contrastive", "grad_cache_chunk", "0 for the classifier trainer",
                   self.grad_cache_chunk)
            _check(self.data.pack_length is None, "grad_cache_chunk",
                   "0 when data.pack_length is set (packed rows do not split into gradient-cache chunks)",
                   self.grad_cache_chunk)
            _check(self.data.batch_size % self.grad_cache_chunk == 0, "grad_cache_chunk",
                   f"a divisor of data.batch_size={self.data.batch_size}", self.grad_cache_chunk)
        losses = CONTRASTIVE_LOSSES if self.trainer == "contrastive" else CLASSIFIER_LOSSES
        _check(self.loss.name in losses, "loss.name", f"one of {sorted(losses)} for trainer {self.trainer!r}",
               self.loss.name)
        if self.loss.debias_weight > 0:
            _check(self.data.debias_path is not None, "data.debias_path", "a JSONL file when loss.debias_weight > 0",
                   self.data.debias_path)
        if self.data.pack_length is not None:
            _check(self.trainer == "contrastive", "data.pack_length", "null for the classifier trainer",
                   self.data.pack_length)
        if self.trainer == "contrastive":
            _check(self.data.source == "jsonl", "data.source", "'jsonl' for the contrastive trainer", self.data.source)
            _check(self.loss.contrastive_weight > 0 or self.loss.debias_weight > 0, "loss.contrastive_weight",
                   "a positive weight (or loss.debias_weight > 0)", self.loss.contrastive_weight)
        needs_files = self.data.source == "jsonl" and not (self.trainer == "contrastive"
                                                           and self.loss.contrastive_weight == 0)
        _check(not needs_files or len(self.data.datasets) > 0, "data.datasets", "at least one dataset",
               self.data.datasets)

    def check_devices(self, num_devices: int, num_processes: int = 1) -> None:
        """Check the batch layout against the mesh; called once the devices are known.

        ``num_devices``: the devices the batch is split over (``data x fsdp``; the ``model`` axis shares rows).
        """
        b = self.data.batch_size
        _check(b % num_devices == 0, "data.batch_size", f"a multiple of the device count ({num_devices})", b)
        _check(b % num_processes == 0, "data.batch_size", f"a multiple of the process count ({num_processes})", b)
        if self.grad_cache_chunk:
            _check(self.grad_cache_chunk % num_devices == 0, "grad_cache_chunk",
                   f"a multiple of the device count ({num_devices})", self.grad_cache_chunk)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_SECTIONS = {"model": ModelConfig, "data": DataConfig, "optimizer": OptimizerConfig, "loss": LossConfig,
             "checkpoint": CheckpointConfig, "sharding": ShardingConfig}


def _only_fields(cls, values: dict, where: str) -> dict:
    if not isinstance(values, dict):
        raise ConfigError(f"config section {where!r}: expected an object, got {values!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"config section {where!r}: unknown field(s) {unknown}; known: {sorted(names)}")
    return values


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_overrides(raw: dict, overrides: list[str] | None) -> dict:
    """Apply ``key.sub=value`` overrides to a raw (dict) config; values are JSON or plain strings."""
    raw = json.loads(json.dumps(raw))
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value (e.g. optimizer.learning_rate=1e-4)")
        key, value = item.split("=", 1)
        node = raw
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {p!r} is not a section")
        node[parts[-1]] = _parse_value(value)
    return raw


def from_dict(raw: dict) -> TrainConfig:
    return TrainConfig(**_only_fields(TrainConfig, raw, "<top level>"))


def load_config(path: str | pathlib.Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read a JSON config file, apply ``--set`` overrides and validate; errors name the file."""
    from gecko_jax.fileio import read_text

    path = pathlib.Path(path)
    try:
        raw = json.loads(read_text(path, error=ConfigError))
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}:1: expected a JSON object of config fields, got {type(raw).__name__}")
    try:
        return from_dict(apply_overrides(raw, overrides))
    except (ConfigError, TypeError) as e:
        raise ConfigError(f"{path}: {e}") from None
