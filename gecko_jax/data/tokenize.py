"""Tokenisation from local files into static length buckets.

Batches are padded to the smallest bucket that holds their longest sequence (not to the longest sequence itself),
so a jitted encoder compiles once per bucket instead of once per batch. Masks travel with the ids.
"""
from __future__ import annotations

import bisect
import json
import os
import pathlib
from typing import Sequence

import numpy as np

DEFAULT_BUCKETS = (32, 64, 128, 256, 512)
# Files copied verbatim by save_pretrained, so that AutoTokenizer / sentence-transformers load the same tokenizer.
_AUX_FILES = ("tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "sentencepiece.bpe.model",
              "spiece.model", "merges.txt", "vocab.json", "added_tokens.json")


def check_texts(texts, name: str = "texts") -> list[str]:
    """``texts`` as a list of str; a single str becomes ``[str]``. TypeError naming the first bad item otherwise."""
    if isinstance(texts, str):
        return [texts]
    if texts is None:
        raise TypeError(f"{name} must be a str or a sequence of str, got None")
    if isinstance(texts, (bytes, bytearray)) or not hasattr(texts, "__iter__"):
        raise TypeError(f"{name} must be a str or a sequence of str, got {type(texts).__name__}")
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"{name}[{i}] is {type(t).__name__} ({t!r:.60}); expected str")
    return texts


class Tokenizer:
    """A Hugging Face ``tokenizers`` tokenizer with padding off and our own truncation, padded to length buckets.

    Args:
      backend: a ``tokenizers.Tokenizer`` (its baked-in padding/truncation settings are removed).
      max_length: longest sequence in tokens, special tokens included.
      source_dir: folder the tokenizer came from (its auxiliary files are copied by ``save_pretrained``).

    Example:
      >>> tok = Tokenizer.from_pretrained(folder, max_length=256)
      >>> batch = tok(["a short text", "another"])          # int32 [2, 32] each
      >>> batch["input_ids"].shape, batch["attention_mask"].sum(1)
    """

    def __init__(self, backend, *, max_length: int = 512, source_dir: str | os.PathLike | None = None):
        if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 2:
            raise ValueError(f"max_length must be an int >= 2 (room for the special tokens), got {max_length!r}")
        self.backend = backend
        # Padding is ours (buckets); some shipped tokenizer.json files pad to a fixed 128 and truncate at 128.
        self.backend.no_padding()
        self.backend.no_truncation()
        self.max_length = max_length
        self.source_dir = pathlib.Path(source_dir) if source_dir is not None else None
        self._truncation = None
        self.pad_token_id = self._special_id(("[PAD]", "<pad>"), default=0)

    def _special_id(self, candidates, default: int) -> int:
        for token in candidates:
            idx = self.backend.token_to_id(token)
            if idx is not None:
                return int(idx)
        return default

    @classmethod
    def from_pretrained(cls, path, max_length: int | None = None) -> "Tokenizer":
        """Load from a local folder: ``tokenizer.json`` directly, else through ``transformers.AutoTokenizer``.

        ``max_length`` defaults to the folder's ``model_max_length`` (capped at 512 when unset or huge).
        """
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"tokenizer path must be a str or os.PathLike, got {type(path).__name__}")
        folder = pathlib.Path(path)
        if not folder.is_dir():
            raise FileNotFoundError(f"tokenizer folder {folder} does not exist")
        cfg_file = folder / "tokenizer_config.json"
        model_max = None
        if cfg_file.is_file():
            model_max = json.loads(cfg_file.read_text()).get("model_max_length")
        if max_length is None:
            max_length = int(model_max) if isinstance(model_max, (int, float)) and 2 <= model_max <= 100_000 else 512
        if (folder / "tokenizer.json").is_file():
            from tokenizers import Tokenizer as _Backend

            backend = _Backend.from_file(str(folder / "tokenizer.json"))
        else:
            try:
                from transformers import AutoTokenizer

                hf = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
            except Exception as e:  # transformers raises several types for "no tokenizer here"
                raise FileNotFoundError(f"no usable tokenizer in {folder}: expected tokenizer.json (or files "
                                        f"AutoTokenizer can read locally, e.g. vocab.txt + tokenizer_config.json): "
                                        f"{e}") from None
            backend = getattr(hf, "backend_tokenizer", None)
            if backend is None:
                raise ValueError(f"{folder}: the tokenizer has no fast (Rust) backend; gecko_jax needs one")
        return cls(backend, max_length=int(max_length), source_dir=folder)

    def encode(self, texts: Sequence[str], *, max_length: int | None = None) -> list[list[int]]:
        """Token ids per text (special tokens added, truncated to ``max_length``), unpadded."""
        texts = check_texts(texts)
        limit = self._limit(max_length)
        # The Rust truncation accounts for the special tokens the post-processor adds, as Hugging Face does.
        if self._truncation != limit:
            self.backend.enable_truncation(max_length=limit)
            self._truncation = limit
        return [enc.ids for enc in self.backend.encode_batch(texts, add_special_tokens=True)]

    def _limit(self, max_length: int | None) -> int:
        limit = self.max_length if max_length is None else max_length
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 2:
            raise ValueError(f"max_length must be an int >= 2, got {limit!r}")
        return limit

    def bucket_for(self, n: int, buckets: Sequence[int] = DEFAULT_BUCKETS, *, max_length: int | None = None) -> int:
        """Smallest bucket ``>= n``; buckets above ``max_length`` are replaced by ``max_length`` itself."""
        limit = self._limit(max_length)
        usable = sorted({b for b in buckets if b < limit} | {limit})
        if n > limit:
            raise ValueError(f"sequence of {n} tokens exceeds max_length={limit}")
        return usable[bisect.bisect_left(usable, n)]

    def pad(self, ids: Sequence[Sequence[int]], length: int, *, rows: int | None = None) -> dict[str, np.ndarray]:
        """Right-pad id lists to ``int32[rows, length]`` arrays; extra rows (batch filler) are all padding."""
        rows = len(ids) if rows is None else rows
        input_ids = np.full((rows, length), self.pad_token_id, dtype=np.int32)
        mask = np.zeros((rows, length), dtype=np.int32)
        for i, seq in enumerate(ids):
            input_ids[i, :len(seq)] = seq
            mask[i, :len(seq)] = 1
        return {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": np.zeros_like(input_ids)}

    def pack(self, texts, *, width: int, max_length: int | None = None, row_multiple: int = 1,
             row_buckets: int = 8) -> dict[str, np.ndarray]:
        """Tokenise ``texts`` and pack them several to a row of ``width`` tokens (training-side packing).

        Rows come from :func:`pack_rows` (best-fit decreasing). The row count is padded up to one of
        ``row_buckets`` sizes, ``ceil(n * k / row_buckets)`` rounded up to ``row_multiple`` for ``k = 1 ..
        row_buckets``, so a jitted step compiles at most ``row_buckets`` times per tower and the rows split evenly
        over ``row_multiple`` devices. Extra rows are all padding.

        Returns ``int32`` arrays: ``input_ids``, ``packed_ids`` (1-based sequence number within its row, 0 for
        padding), ``position_ids`` (position within its own sequence), ``segment_ids`` (index of the text each token
        belongs to, ``n`` for padding), all ``[rows, width]``, and ``lengths`` ``[n]`` (tokens per text).
        """
        limit = self._limit(max_length)
        if not isinstance(width, int) or width < limit:
            raise ValueError(f"pack width must be an int >= max_length={limit} (every text must fit a row), "
                             f"got {width!r}")
        ids = self.encode(texts, max_length=limit)
        n = len(ids)
        lengths = np.fromiter((len(s) for s in ids), dtype=np.int32, count=n)
        order = np.argsort(-lengths, kind="stable")
        rows = [[int(order[m]) for m in members] for members in pack_rows(lengths[order], width)]
        fractions = (-(-n * k // row_buckets) for k in range(1, row_buckets + 1))  # ceil(n * k / row_buckets)
        sizes = sorted({-(-c // row_multiple) * row_multiple for c in fractions})
        num_rows = sizes[bisect.bisect_left(sizes, len(rows))] if n else row_multiple
        out = fill_rows(ids, rows, num_rows, width, self.pad_token_id)
        out["lengths"] = lengths
        return out

    def __call__(self, texts, *, max_length: int | None = None,
                 buckets: Sequence[int] = DEFAULT_BUCKETS) -> dict[str, np.ndarray]:
        """Tokenise ``texts`` into ``int32[B, L]`` ``input_ids``/``attention_mask``/``token_type_ids``.

        ``L`` is the smallest bucket holding the longest (truncated) sequence.
        """
        ids = self.encode(texts, max_length=max_length)
        longest = max((len(s) for s in ids), default=1)
        return self.pad(ids, self.bucket_for(longest, buckets, max_length=max_length))

    def save_pretrained(self, path) -> pathlib.Path:
        """Write ``tokenizer.json`` (padding/truncation off) plus the source folder's auxiliary files."""
        from gecko_jax.fileio import write_bytes, write_json, write_text

        out = pathlib.Path(path)
        # Saved without our per-call truncation: loaders (AutoTokenizer, sentence-transformers) set their own.
        self.backend.no_truncation()
        self._truncation = None
        write_text(out / "tokenizer.json", self.backend.to_str(pretty=True))  # each file atomic
        if self.source_dir is not None and self.source_dir.resolve() != out.resolve():
            for name in _AUX_FILES:
                if (self.source_dir / name).is_file():
                    write_bytes(out / name, (self.source_dir / name).read_bytes())
        cfg_file = out / "tokenizer_config.json"
        cfg = json.loads(cfg_file.read_text(encoding="utf-8")) if cfg_file.is_file() else {}
        cfg["model_max_length"] = self.max_length
        write_json(out / "tokenizer_config.json", cfg)
        return out


def pack_rows(lengths: np.ndarray, width: int) -> list[list[int]]:
    """Group sequences (``lengths`` sorted longest first, each at most ``width``) into rows of at most ``width``
    tokens.

    Best-fit decreasing: each sequence goes to the open row it fills most tightly, else opens a row. On
    sentence-length text the rows come out a few percent short of full, against 30-130% extra tokens for length
    buckets (BENCHMARKS.md). Returns positions into ``lengths``; at most ``width`` sequences per row.
    """
    return [members for _, members in pack_rows_tiered(lengths, (width,))]


def pack_rows_tiered(lengths: np.ndarray, widths: Sequence[int]) -> list[tuple[int, list[int]]]:
    """:func:`pack_rows` with rows of several widths: ``[(width, positions), ...]``.

    Best-fit decreasing over the open rows of every width (at most ``W`` sequences in a row of width ``W``); a
    sequence that fits none opens a row of the narrowest width that holds it. Longer sequences come first, so a
    100-token text opens a 128-token row and the short texts that follow fill its gap before they open rows of their
    own, which are then narrow: a row of width ``W`` pays ``W`` keys of attention per token, so 14-token sentences
    packed into 64-token rows cost half the attention of 128-token rows at the same padding (BENCHMARKS.md, "Narrow
    rows for short texts"). ``lengths`` sorted longest first, each at most ``max(widths)``.
    """
    widths = sorted({int(w) for w in widths})
    if not widths or widths[0] < 1:
        raise ValueError(f"widths must be positive ints, got {widths!r}")
    rows: list[tuple[int, list[int]]] = []
    open_rows: list[tuple[int, int]] = []  # (room left, row number), sorted
    for pos, length in enumerate(lengths):
        need = max(int(length), 1)  # an empty sequence still takes a slot
        k = bisect.bisect_left(open_rows, (need, -1))
        if k < len(open_rows):
            room, r = open_rows.pop(k)
            rows[r][1].append(pos)
        else:
            fits = [w for w in widths if w >= need]
            if not fits:
                raise ValueError(f"sequence {pos} has {need} tokens, more than the widest row ({widths[-1]})")
            room, r = fits[0], len(rows)
            rows.append((room, [pos]))
        room -= need
        if room > 0 and len(rows[r][1]) < rows[r][0]:
            bisect.insort(open_rows, (room, r))
    return rows


def fill_rows(ids: Sequence[Sequence[int]], rows: Sequence[Sequence[int]], num_rows: int, width: int,
              pad_id: int) -> dict[str, np.ndarray]:
    """Lay packed rows out as ``int32[num_rows, width]`` arrays; ``rows[r]`` lists the texts (indices into ``ids``)
    of row ``r``. Returns ``input_ids``, ``packed_ids`` (1-based slot in the row, 0 = padding), ``position_ids``
    (position within the text) and ``segment_ids`` (the text's index, ``len(ids)`` for padding)."""
    out = {"input_ids": np.full((num_rows, width), pad_id, np.int32),
           "packed_ids": np.zeros((num_rows, width), np.int32),
           "position_ids": np.zeros((num_rows, width), np.int32),
           "segment_ids": np.full((num_rows, width), len(ids), np.int32)}
    for r, members in enumerate(rows):
        col = 0
        for slot, i in enumerate(members):
            seq = ids[i]
            span = slice(col, col + len(seq))
            out["input_ids"][r, span] = seq
            out["packed_ids"][r, span] = slot + 1
            out["position_ids"][r, span] = np.arange(len(seq))
            out["segment_ids"][r, span] = i
            col += len(seq)
    return out

