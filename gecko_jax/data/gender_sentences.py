"""Sentences that mention gender, from the local corpora, split by source sentence (the fairness experiment's data).

Sources (found by :mod:`gecko_jax.datasets`): STS-B train+dev sentences (the STS-B test split is kept for utility
evaluation), SST-2 train, MR, AG News test descriptions, SciFact abstracts (split into sentences). A sentence is kept
when it contains a word of the gender pairs of ``seat/bias_attribute_words.json``, has 6-40 words and is not a
duplicate (case/space-insensitive). The split is a hash of the normalised text (train 80 / val 10 / test 10), so it
is deterministic and independent of corpus order; the same text never lands in two splits.
"""
from __future__ import annotations

import csv
import hashlib
import json
import random
import re
from pathlib import Path

from data_gen.fair import gender_words_in

from gecko_jax.datasets import DataRoot

WORD_RE = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?")
SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def gender_words(path: Path) -> frozenset:
    """Lower-cased gender words (both columns) from a bias_attribute_words.json file."""
    try:
        pairs = json.loads(path.read_text(encoding="utf-8"))["gender"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: expected JSON with a 'gender' list of [male, female] pairs ({e})") from None
    return frozenset(w.lower() for pair in pairs for w in pair)


def _stsb(root):
    for split in ("train", "dev"):
        with open(root / "stsb" / f"sts-{split}.csv", encoding="utf-8") as f:
            for i, line in enumerate(f):
                cols = line.rstrip("\n").split("\t")
                for j in (5, 6):
                    if len(cols) > j:
                        yield f"stsb-{split}-{i}-{j}", cols[j]


def _sst2(root):
    with open(root / "sst2_senteval" / "sentiment-train", encoding="utf-8") as f:
        for i, line in enumerate(f):
            yield f"sst2-{i}", line.rsplit("\t", 1)[0].strip()


def _mr(root):
    for pol in ("pos", "neg"):
        with open(root / "mr" / f"rt-polarity.{pol}", encoding="latin-1") as f:
            for i, line in enumerate(f):
                yield f"mr-{pol}-{i}", line.strip()


def _ag(root):
    with open(root / "ag_news" / "test.csv", encoding="utf-8", newline="") as f:
        for i, row in enumerate(csv.reader(f)):
            if len(row) >= 3:
                desc = row[2].replace("\\", " ")
                for k, s in enumerate(SENTENCE_BREAK.split(desc)):
                    yield f"ag-{i}-{k}", s


def _scifact(root):
    with open(root / "scifact" / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            doc = json.loads(line)
            abstract = doc.get("abstract") or SENTENCE_BREAK.split(doc.get("text") or "")
            for k, s in enumerate(abstract):
                yield f"scifact-{doc['_id']}-{k}", s


SOURCES = {"stsb": _stsb, "sst2": _sst2, "mr": _mr, "ag_news": _ag, "scifact": _scifact}


def split_of(text: str, val: float = 0.1, test: float = 0.1) -> str:
    """Deterministic split of one normalised source sentence."""
    h = int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "test" if h < test else "val" if h < test + val else "train"


def extract(data_root=None, words_path: Path | None = None, *, min_words: int = 6,
            max_words: int = 40) -> list[dict]:
    """``[{id, text, corpus, split, gender_words}]`` sentences that mention gender, deduplicated."""
    data_root = DataRoot(data_root)
    words = gender_words(words_path or data_root / "seat" / "bias_attribute_words.json")
    seen, out = set(), []
    for corpus, fn in SOURCES.items():
        for rid, text in fn(data_root):
            text = " ".join(text.split())
            toks = [t.lower() for t in WORD_RE.findall(text)]
            hit = sorted(set(toks) & words)
            if not hit or not min_words <= len(toks) <= max_words:
                continue
            key = text.lower()
            if key in seen:
                continue
            seen.add(key)
            out.append({"id": rid, "text": text, "corpus": corpus, "split": split_of(key), "gender_words": hit})
    return out


def llm_input(rows: list[dict], n: int, seed: int = 0, split: str = "train") -> list[dict]:
    """Sentences for the (slow) LLM augmentation: ``split`` (train), 30-110 characters, words of one gender only (a
    sentence with both cannot be rewritten into a single group), shuffled with ``seed``; the first ``n``."""
    pool = []
    for r in rows:
        if r["split"] != split or not 30 <= len(r["text"]) <= 110:
            continue
        male, female = gender_words_in(r["text"])
        if bool(male) != bool(female):
            pool.append({"id": r["id"], "text": r["text"]})
    random.Random(seed).shuffle(pool)
    return pool[:n]
