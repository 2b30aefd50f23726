r"""Dual-encoder contrastive trainer task: Gecko pre-finetuning / fine-tuning, Matryoshka and debiasing as options.

One shared encoder embeds every tower of the batch (``query``, ``positive``, hard ``negative`` rows and, with
debiasing, ``groups`` and ``neutral``). The loss is a function of those embeddings only, which is the seam gradient
caching cuts at (``gecko_jax.train.gradcache``):

.. math::
    L = w_c \cdot \mathrm{mean}_i\, \mathrm{MRL}(\ell^{\mathrm{gecko}})_i
        + w_d \cdot \mathrm{mean}_i\, \ell^{\mathrm{CCD}}_i

Pre-finetuning is ``data.hard_negatives=0, loss.same_tower=false``; fine-tuning keeps both on (Gecko eq. 3).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gecko_jax import losses, runtime
from gecko_jax.data.batching import BatchStream, FairTupleSource, PairSource, TokenizeFn
from gecko_jax.train.config import TrainConfig
from gecko_jax.train.encoders import load_encoder
from gecko_jax.train.gradcache import GradCachedLoss, tower_key

# Fixed tower order: tower i draws its dropout key as fold_in(rng, i) in both the plain and the cached loss.
TOWERS = ("query", "positive", "negative", "groups", "neutral")


class JointStream:
    """The pair stream plus, when debiasing, a tuple stream drawn at the same batch index.

    ``names``: one name per pair source (``data.datasets[].name``); :meth:`source_name` says which source global
    batch ``b`` came from (the mixture draws one source per batch), for per-source metrics.
    """

    def __init__(self, pairs: BatchStream | None, tuples: BatchStream | None = None, names=None):
        self.pairs, self.tuples = pairs, tuples
        self.names = list(names) if names is not None else None

    def source_name(self, b: int) -> str | None:
        if self.pairs is None or not self.names or len(self.names) < 2:
            return None
        return self.names[self.pairs.locate(b)[0]]

    def batch(self, b: int, **kw) -> dict:
        out = {}
        for stream in (self.pairs, self.tuples):
            if stream is not None:
                out.update(stream.batch(b, **kw))
        return out


@dataclasses.dataclass
class ContrastiveTask:
    """Everything the engine needs for contrastive training.

    Attributes:
      config: the run config.
      module: a linen encoder, ``apply({"params": p}, input_ids, attention_mask, token_type_ids, deterministic=,
        rngs=) -> [n, D]``.
      stream: deterministic batches (``stream.batch(b)``).
      pretrained: starting params (pretrained encoder) or None for random init.
      encoder_config / tokenizer: what ``export`` needs to write an Embedder folder (optional).
    """

    config: TrainConfig
    module: nn.Module
    stream: Any
    pretrained: Any = None
    encoder_config: Any = None
    tokenizer: Any = None

    # ------------------------------------------------------------------------------------------------ model
    def embed(self, params, tokens: dict, rng, deterministic: bool) -> jax.Array:
        rngs = {"dropout": rng} if rng is not None else None
        if "segment_ids" in tokens:  # packed rows (data.pack_length): one embedding per text, in text order
            return self.module.apply({"params": params}, tokens["input_ids"], tokens["packed_ids"],
                                     tokens["position_ids"], tokens["segment_ids"],
                                     num_segments=tokens["lengths"].shape[0], deterministic=deterministic,
                                     rngs=rngs, method="encode_segments")
        return self.module.apply({"params": params}, tokens["input_ids"], tokens["attention_mask"],
                                 tokens.get("token_type_ids"), deterministic=deterministic, rngs=rngs)

    def step_flops(self, batch: dict) -> float | None:
        """Useful FLOPs of one training step on ``batch`` (host arrays): forward + backward over every tower's real
        tokens (:func:`gecko_jax.runtime.config_flops`); None for an architecture it cannot count."""
        if runtime.config_flops(self.encoder_config, ()) is None:
            return None
        lengths = []
        for tokens in batch.values():
            if isinstance(tokens, dict) and "input_ids" in tokens:
                if "segment_ids" in tokens:
                    lengths.extend(int(n) for n in np.asarray(tokens["lengths"]).reshape(-1))
                else:
                    lengths.extend(int(n) for n in np.asarray(tokens["attention_mask"]).sum(axis=-1).reshape(-1))
        return runtime.config_flops(self.encoder_config, lengths, training=True)

    def init_params(self, rng):
        ids = jnp.ones((2, 8), jnp.int32)
        return self.module.init({"params": rng, "dropout": rng}, ids, ids, jnp.zeros_like(ids))["params"]

    def init_frozen(self, params):
        # The debiasing anchor compares against the encoder we started from (PAPERS.md 2.2, f_0).
        return {"reference": params} if self.config.loss.debias_weight > 0 else {}

    # ------------------------------------------------------------------------------------------------ loss
    @property
    def deterministic(self) -> bool:
        return False  # dropout on while training; a config sets model.dropout=0 for deterministic runs

    def emb_loss(self, embs: dict, batch: dict, step, frozen) -> tuple[jax.Array, dict]:
        """Loss of the embeddings ``{tower: [rows, D]}`` (the function gradient caching differentiates)."""
        cfg = self.config.loss
        total, metrics = 0.0, {}
        if cfg.contrastive_weight > 0:
            where = batch["where"]
            count = jnp.maximum(jnp.sum(where), 1)
            fn = losses.gecko_contrastive
            if cfg.matryoshka_dims:
                fn = losses.matryoshka(fn, dims=cfg.matryoshka_dims, weights=cfg.matryoshka_weights)
            kwargs = dict(temperature=cfg.temperature, same_tower=cfg.same_tower, ids=batch["ids"], where=where)
            negatives = None
            if "negative" in embs:
                b = embs["query"].shape[0]
                negatives = embs["negative"].reshape(b, -1, embs["negative"].shape[-1])
                kwargs["negative_ids"] = batch["negative_ids"]
            per = fn(embs["query"], embs["positive"], negatives=negatives, **kwargs)
            contrastive = jnp.sum(per) / count
            metrics["contrastive_loss"] = contrastive
            total = total + cfg.contrastive_weight * contrastive
        if cfg.debias_weight > 0:
            b = embs["neutral"].shape[0]
            groups = embs["groups"].reshape(b, -1, embs["groups"].shape[-1])
            ref = jax.lax.stop_gradient(self.embed(frozen["reference"], batch["neutral"], None, True))
            per = losses.content_conditional_debiasing(groups, embs["neutral"], ref, rho=cfg.debias_rho,
                                                       beta=cfg.debias_beta, gamma=cfg.debias_gamma)
            debias = jnp.mean(per)
            metrics["debias_loss"] = debias
            total = total + cfg.debias_weight * debias
        return total, metrics

    def embed_towers(self, params, batch, rng) -> dict:
        """``{tower: [rows, D]}`` for every tower in ``batch``; a ``packed`` batch (``data.pack_length``) holds
        queries, positives and hard negatives in one token batch, embedded in one call and split here."""
        embs = {t: self.embed(params, batch[t], tower_key(rng, i), self.deterministic)
                for i, t in enumerate(TOWERS) if t in batch}
        if "packed" in batch:
            b = batch["ids"].shape[0]
            e = self.embed(params, batch["packed"], tower_key(rng, len(TOWERS)), self.deterministic)
            embs["query"], embs["positive"] = e[:b], e[b:2 * b]
            if "negative_ids" in batch:
                embs["negative"] = e[2 * b:]
        return embs

    def loss_fn(self, params, batch, rng, step, frozen):
        """Plain (full-batch) loss: every tower embedded in one call."""
        return self.emb_loss(self.embed_towers(params, batch, rng), batch, step, frozen)

    def step_loss(self) -> Callable:
        """The loss ``make_step`` trains with: gradient-cached when ``grad_cache_chunk`` is set."""
        chunk = self.config.grad_cache_chunk
        if not chunk:
            return self.loss_fn
        return GradCachedLoss(self.embed, self.emb_loss, TOWERS, self.config.data.batch_size // chunk,
                              deterministic=self.deterministic)

    # ------------------------------------------------------------------------------------------------ reporting
    def negatives_per_query(self) -> int | None:
        """Denominator terms besides the own positive (Gecko eq. 3: in-batch positives, own hard negatives,
        same-tower queries), before id masking removes duplicates."""
        if self.config.loss.contrastive_weight == 0:
            return None
        b = self.config.data.batch_size
        n = (b - 1) + self.config.data.hard_negatives
        return n + (b - 1 if self.config.loss.same_tower else 0)

    def export(self, params, directory) -> str | None:
        if self.encoder_config is None or self.tokenizer is None:
            return None
        from gecko_jax.embedder import Embedder

        host = jax.tree.map(np.asarray, params)
        length, tokenizer = self.serving_max_length(), self.tokenizer
        if length is not None and length != tokenizer.max_length and tokenizer.source_dir is not None:
            from gecko_jax.data.tokenize import Tokenizer

            tokenizer = Tokenizer.from_pretrained(tokenizer.source_dir, max_length=length)
        return str(Embedder.from_params(self.encoder_config, host, tokenizer, max_length=length)
                   .save_pretrained(directory))

    def serving_max_length(self) -> int | None:
        """Token cap the exported model serves with: the pretrained model's own (``max_seq_length`` of its
        sentence-transformers layout, e.g. 256 for all-MiniLM-L6-v2), not ``data.max_length``, which only caps the
        training texts. Without a pretrained folder: the tokenizer's (``data.max_length``)."""
        pretrained = self.config.model.pretrained
        if pretrained is not None:
            from gecko_jax.embedder import resolve_model_path
            from gecko_jax.models import read_st_layout

            try:
                length = read_st_layout(resolve_model_path(pretrained)).max_seq_length
            except (OSError, ValueError):
                length = None
            if length:
                return int(length)
        return None


def build_contrastive(config: TrainConfig, *, module: nn.Module | None = None, tokenize: TokenizeFn | None = None,
                      pretrained: Any = None, encoder_config: Any = None, tokenizer: Any = None) -> ContrastiveTask:
    """A :class:`ContrastiveTask` from config; ``module``/``tokenize`` override the configured encoder/tokenizer."""
    from gecko_jax.data.batching import bucket_tokenizer, pack_tokenizer
    from gecko_jax.data.jsonl import read_fair_tuples, read_pairs

    if module is None:
        encoder_config, pretrained, tokenizer, module = load_encoder(config)
    if tokenize is None:
        if tokenizer is None:
            raise ValueError("config field 'model.tokenizer': needed to tokenise text (or pass tokenize=)")
        if config.data.pack_length:
            # each process packs its own texts into rows that split evenly over its devices
            tokenize = pack_tokenizer(tokenizer, config.data.max_length, config.data.pack_length,
                                      row_multiple=(config.num_devices or jax.device_count()) // jax.process_count())
        else:
            tokenize = bucket_tokenizer(tokenizer, config.data.max_length, config.data.buckets)
    d = config.data
    pairs = tuples = None
    if config.loss.contrastive_weight > 0:
        sources = []
        for s in d.datasets:  # a dataset may set its own hard-negative count (e.g. STS pairs: in-batch only)
            h = d.hard_negatives if s.hard_negatives is None else s.hard_negatives
            sources.append(PairSource(read_pairs(s.path, min_negatives=h), tokenize, hard_negatives=h, task=s.task,
                                      symmetric=s.symmetric, gecko_format=d.gecko_format,
                                      pack_towers=bool(d.pack_length)))
        pairs = BatchStream(sources, d.batch_size, weights=[s.weight for s in d.datasets], seed=d.seed)
    if config.loss.debias_weight > 0:
        tuples = BatchStream([FairTupleSource(read_fair_tuples(d.debias_path), tokenize)], d.batch_size,
                             seed=d.seed + 1)
    return ContrastiveTask(config, module, JointStream(pairs, tuples, names=[s.name for s in d.datasets]),
                           pretrained, encoder_config, tokenizer)
