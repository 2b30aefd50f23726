"""Deterministic, resumable batches from a weighted mixture of sources, padded to length buckets.

The order is a pure function of ``(seed, batch index)``, so a run resumes exactly by storing one integer (the next
batch index, ``TrainState.data_position``):

- **Mixture** (Gecko's fine-tuning mixture): each *global batch* is drawn from one source, chosen with probability
  proportional to its weight. One task per batch keeps in-batch and same-tower negatives meaningful (a query about
  code is a trivial negative for a query about medicine). Choices come in blocks of ``_BLOCK`` drawn from
  ``numpy.random.Generator(PCG64([seed, block]))``.
- **Within a source**: an endless stream of epochs, each a fresh permutation seeded by ``(seed, source, epoch)``.
  Training batches are taken consecutively from that stream and may straddle an epoch boundary, so there is no
  remainder to drop or pad and every batch has exactly ``batch_size`` rows (static shapes, one compile per bucket).
- **Finite passes** (evaluation) use :func:`epoch_batches`: the last batch is either dropped or padded with copies
  of the first rows and masked (``where`` = False), so every batch keeps the fixed size.
- **Per-process sharding** (multi-host): every process computes the same global *indices* (cheap), then reads and
  tokenises only its contiguous share of the rows. Its length bucket (or packed row count) is that of its own rows;
  :func:`gecko_jax.train.distributed.local_batch` pads every process to the widest (one small all-gather per step),
  so the assembled global batch (:func:`gecko_jax.train.state.global_batch`) equals the one-process batch.
"""
from __future__ import annotations

import zlib
from typing import Callable, Protocol, Sequence

import numpy as np

from gecko_jax.data.formatting import format_text
from gecko_jax.data.jsonl import FairTuple, LabelledText, PairRecord

_BLOCK = 1024

TokenizeFn = Callable[[Sequence[str]], dict]  # texts -> {input_ids, attention_mask, token_type_ids}: int32 [n, L]


class Source(Protocol):
    def __len__(self) -> int: ...

    def make_batch(self, indices: np.ndarray) -> dict: ...


def stable_id(text: str) -> int:
    """A process-independent 31-bit id for masking duplicates (Python's ``hash`` is salted per process)."""
    return zlib.crc32(text.encode("utf-8")) & 0x7FFFFFFF


def bucket_tokenizer(tokenizer, max_length: int, buckets: Sequence[int]) -> TokenizeFn:
    """Adapt a ``gecko_jax.data.tokenize.Tokenizer`` (``tok(texts, max_length=, buckets=)``) to a ``TokenizeFn``."""
    buckets = tuple(b for b in buckets if b <= max_length) or (max_length,)

    def tokenize(texts):
        out = tokenizer(list(texts), max_length=max_length, buckets=buckets)
        return {k: np.asarray(v, dtype=np.int32) for k, v in out.items()
                if k in ("input_ids", "attention_mask", "token_type_ids")}

    return tokenize


def pack_tokenizer(tokenizer, max_length: int, width: int, *, row_multiple: int = 1) -> TokenizeFn:
    """A ``TokenizeFn`` that packs texts several to a row of ``width`` tokens (``Tokenizer.pack``).

    The model then embeds segments instead of rows (``Encoder.encode_segments``): short texts stop paying for
    padding, and the row count (not the text count) sets the work per step. ``row_multiple``: the device count, so
    the rows shard evenly.
    """
    def tokenize(texts):
        return tokenizer.pack(list(texts), width=width, max_length=max_length, row_multiple=row_multiple)

    return tokenize


def _at(values: tuple, k: int):
    return values[k] if k < len(values) else None


class PairSource:
    """Query/positive(/hard negative) records as model-ready arrays, with Gecko formatting."""

    def __init__(self, records: Sequence[PairRecord], tokenize: TokenizeFn, *, hard_negatives: int = 0,
                 task: str | None = None, symmetric: bool = False, gecko_format: bool = True,
                 pack_towers: bool = False):
        self.records = list(records)
        self.tokenize = tokenize
        # pack_towers: one token batch ``packed`` holding queries, positives and negatives in that order (with a
        # packing ``tokenize``: one forward pass over rows filled from all three towers).
        self.pack_towers = pack_towers
        self.hard_negatives = hard_negatives
        self.task, self.symmetric, self.gecko_format = task, symmetric, gecko_format
        short = [r for r in self.records if len(r.negatives) < hard_negatives]
        if short:
            raise ValueError(f"record {short[0].id!r} has {len(short[0].negatives)} hard negatives, "
                             f"expected at least {hard_negatives} (data.hard_negatives)")

    def __len__(self) -> int:
        return len(self.records)

    def _task(self, r: PairRecord) -> str | None:
        return (r.task or self.task) if self.gecko_format else None

    def _symmetric(self, r: PairRecord) -> bool:
        return self.symmetric if r.symmetric is None else r.symmetric

    def make_batch(self, indices: np.ndarray) -> dict:
        recs = [self.records[i] for i in indices]
        queries = [format_text(r.query, kind="query", task=self._task(r)) for r in recs]
        positives = [format_text(r.positive, kind="document", task=self._task(r), title=r.positive_title,
                                 symmetric=self._symmetric(r)) for r in recs]
        batch = {
            # In-batch masks come from ids (STYLE.md 11): rows with the same positive text are not negatives.
            "ids": np.array([stable_id(r.positive_id or r.positive) for r in recs], np.int32),
            "where": np.ones(len(recs), bool),
        }
        h = self.hard_negatives
        negs = [format_text(n, kind="document", task=self._task(r), title=_at(r.negative_titles, k) or
                            r.negative_title, symmetric=self._symmetric(r))
                for r in recs for k, n in enumerate(r.negatives[:h])]  # [B*H], record-major
        if self.pack_towers:
            batch["packed"] = self.tokenize(queries + positives + negs)
        else:
            batch["query"], batch["positive"] = self.tokenize(queries), self.tokenize(positives)
            if h:
                batch["negative"] = self.tokenize(negs)
        if h:
            # A hard negative equal to the query's positive (same id) is a false negative: the loss drops it.
            batch["negative_ids"] = np.array([stable_id(_at(r.negative_ids, k) or n) for r in recs
                                              for k, n in enumerate(r.negatives[:h])], np.int32).reshape(len(recs), h)
        return batch

    def to_global(self, batch: dict, process_index: int, process_count: int) -> dict:
        """A process's packed batch with segment ids in the global text order (``queries + positives +
        negatives`` of the whole global batch), as ``Encoder.encode_segments`` numbers its outputs."""
        if "packed" not in batch:
            return batch
        rows = len(batch["ids"])
        towers = (rows, rows, rows * self.hard_negatives)
        return {**batch, "packed": packed_to_global(batch["packed"], towers, process_index, process_count)}


def packed_to_global(packed: dict, tower_sizes: Sequence[int], process_index: int, process_count: int) -> dict:
    """Renumber the ``segment_ids`` of one process's packed texts into the global text order.

    Locally the texts are towers of ``tower_sizes`` texts one after the other (padding is ``sum(tower_sizes)``);
    globally each tower holds ``process_count`` times as many, process ``p``'s from ``p * size`` on, and padding is
    the global text count. ``lengths`` keeps the local order: globally only its size (the text count) is used.
    """
    sizes = np.asarray(tower_sizes, np.int64)
    n = int(sizes.sum())
    if n != len(packed["lengths"]):
        raise ValueError(f"packed batch holds {len(packed['lengths'])} texts, towers {list(tower_sizes)} sum to {n}")
    local_start = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    global_start = local_start * process_count + process_index * sizes
    mapping = np.full(n + 1, n * process_count, np.int32)  # the last entry: padding
    for size, lo, hi in zip(sizes, local_start, global_start):
        mapping[lo:lo + size] = np.arange(hi, hi + size)
    return {**packed, "segment_ids": mapping[packed["segment_ids"]]}


class FairTupleSource:
    """Debiasing tuples: ``groups`` [B*G, L] (record-major) and ``neutral`` [B, L]."""

    def __init__(self, records: Sequence[FairTuple], tokenize: TokenizeFn):
        self.records = list(records)
        self.tokenize = tokenize
        self.num_groups = len(self.records[0].groups)

    def __len__(self) -> int:
        return len(self.records)

    def make_batch(self, indices: np.ndarray) -> dict:
        recs = [self.records[i] for i in indices]
        return {"groups": self.tokenize([g for r in recs for g in r.groups]),
                "neutral": self.tokenize([r.neutral for r in recs])}


class TextClassificationSource:
    def __init__(self, records: Sequence[LabelledText], tokenize: TokenizeFn):
        self.records = list(records)
        self.tokenize = tokenize

    def __len__(self) -> int:
        return len(self.records)

    def make_batch(self, indices: np.ndarray) -> dict:
        recs = [self.records[i] for i in indices]
        return {"text": self.tokenize([r.text for r in recs]), "label": np.array([r.label for r in recs], np.int32),
                "where": np.ones(len(recs), bool)}


class ArraySource:
    """In-memory arrays with a shared leading axis (images, features, labels)."""

    def __init__(self, arrays: dict):
        sizes = {k: len(v) for k, v in arrays.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"ArraySource: arrays must share their first dimension, got {sizes}")
        self.arrays = {k: np.asarray(v) for k, v in arrays.items()}
        self._n = next(iter(sizes.values()))

    def __len__(self) -> int:
        return self._n

    def make_batch(self, indices: np.ndarray) -> dict:
        out = {k: v[indices] for k, v in self.arrays.items()}
        out["where"] = np.ones(len(indices), bool)
        return out


def epoch_permutation(n: int, seed: int, source: int, epoch: int) -> np.ndarray:
    return np.random.Generator(np.random.PCG64([seed, source, epoch])).permutation(n)


def stream_indices(n: int, seed: int, source: int, start: int, count: int) -> np.ndarray:
    """Rows ``start .. start+count-1`` of the endless epoch-permuted stream over ``n`` items."""
    pos = np.arange(start, start + count)
    epochs = pos // n
    out = np.empty(count, np.int64)
    for e in np.unique(epochs):
        sel = epochs == e
        out[sel] = epoch_permutation(n, seed, source, int(e))[pos[sel] % n]
    return out


class BatchStream:
    """Global batch ``b`` of a weighted mixture: ``batch(b)`` is deterministic in ``(seed, b)`` (see module doc)."""

    def __init__(self, sources: Sequence[Source], batch_size: int, *, weights: Sequence[float] | None = None,
                 seed: int = 0):
        if not sources:
            raise ValueError("BatchStream needs at least one source")
        self.sources = list(sources)
        self.batch_size = batch_size
        w = np.ones(len(sources)) if weights is None else np.asarray(weights, np.float64)
        if w.shape != (len(sources),) or (w <= 0).any():
            raise ValueError(f"BatchStream: weights must be {len(sources)} positive numbers, got {weights!r}")
        self.probs = w / w.sum()
        self.seed = seed
        self._blocks: list[np.ndarray] = []  # choices per block
        self._counts: list[np.ndarray] = [np.zeros(len(sources), np.int64)]  # counts before each block

    def _block(self, k: int) -> np.ndarray:
        while len(self._blocks) <= k:
            j = len(self._blocks)
            rng = np.random.Generator(np.random.PCG64([self.seed, 0x6D6978, j]))
            choices = rng.choice(len(self.sources), size=_BLOCK, p=self.probs)
            self._blocks.append(choices)
            self._counts.append(self._counts[-1] + np.bincount(choices, minlength=len(self.sources)))
        return self._blocks[k]

    def locate(self, b: int) -> tuple[int, int]:
        """(source of batch ``b``, how many earlier batches came from that source)."""
        k, r = divmod(b, _BLOCK)
        choices = self._block(k)
        s = int(choices[r])
        return s, int(self._counts[k][s] + np.count_nonzero(choices[:r] == s))

    def global_indices(self, b: int) -> tuple[int, np.ndarray]:
        s, earlier = self.locate(b)
        n = len(self.sources[s])
        return s, stream_indices(n, self.seed, s, earlier * self.batch_size, self.batch_size)

    def batch(self, b: int, *, process_index: int = 0, process_count: int = 1) -> dict:
        """This process's rows of global batch ``b`` (all rows with one process); only those rows are read and
        tokenised. Token widths are those of the local rows (see the module docstring)."""
        s, idx = self.global_indices(b)
        if process_count == 1:
            return self.sources[s].make_batch(idx)
        if self.batch_size % process_count:
            raise ValueError(f"batch size {self.batch_size} does not divide over {process_count} processes")
        per = self.batch_size // process_count
        source = self.sources[s]
        local = source.make_batch(idx[process_index * per:(process_index + 1) * per])
        to_global = getattr(source, "to_global", None)  # process-local indices inside the batch -> global ones
        return local if to_global is None else to_global(local, process_index, process_count)


def process_slice(batch: dict, batch_size: int, process_index: int, process_count: int) -> dict:
    """Keep this process's contiguous share of every leaf (leaves have ``k * batch_size`` rows, record-major)."""
    if process_count == 1:
        return batch

    def cut(x):
        n = x.shape[0]
        per = n // process_count
        return x[process_index * per:(process_index + 1) * per]

    return {k: (process_slice(v, batch_size, process_index, process_count) if isinstance(v, dict) else cut(v))
            for k, v in batch.items()}


def epoch_batches(n: int, batch_size: int, *, remainder: str = "pad") -> list[tuple[np.ndarray, np.ndarray]]:
    """One pass over ``n`` items in order as ``(indices, valid)`` pairs of fixed length ``batch_size``.

    ``remainder="pad"`` fills the last batch with copies of the first rows marked invalid (use ``valid`` as the
    ``where`` mask, so padded rows count nowhere); ``"drop"`` leaves out the incomplete last batch.
    """
    if remainder not in ("pad", "drop"):
        raise ValueError(f"remainder must be 'pad' or 'drop', got {remainder!r}")
    out = []
    for start in range(0, n, batch_size):
        idx = np.arange(start, min(start + batch_size, n))
        valid = np.ones(batch_size, bool)
        if len(idx) < batch_size:
            if remainder == "drop":
                break
            valid[len(idx):] = False
            idx = np.concatenate([idx, np.arange(batch_size - len(idx)) % n])
        out.append((idx, valid))
    return out
