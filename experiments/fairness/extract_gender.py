"""Extract sentences that mention gender from the local corpora (:mod:`gecko_jax.data.gender_sentences`) and
write them, and optionally the LLM augmentation's input, as JSONL.

    python experiments/fairness/extract_gender.py --out runs/fairness/sentences.jsonl \
        --llm-input experiments/fairness/data/llm_input.jsonl      # then, in that folder (slow: ~30 s/sentence):
    gecko-data augment-fair --input experiments/fairness/data/llm_input.jsonl \
        --out runs/fairness/llm/llm_tuples.jsonl --method llm --threads 1
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gecko_jax.data.gender_sentences import (SOURCES, WORD_RE, extract, gender_words, llm_input,  # noqa: F401
                                             split_of)

ROOT = Path(__file__).resolve().parents[2]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-root", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "fairness" / "sentences.jsonl")
    ap.add_argument("--llm-input", type=Path, default=None, help="also write the LLM augmentation input here")
    ap.add_argument("--llm-n", type=int, default=300)
    ap.add_argument("--llm-split", default="train", choices=("train", "val", "test"))
    args = ap.parse_args(argv)
    rows = extract(args.data_root)
    if args.llm_input:
        args.llm_input.parent.mkdir(parents=True, exist_ok=True)
        with open(args.llm_input, "w", encoding="utf-8") as f:
            for r in llm_input(rows, args.llm_n, split=args.llm_split):
                f.write(json.dumps(r) + "\n")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    counts = {}
    for r in rows:
        counts.setdefault(r["corpus"], {}).setdefault(r["split"], 0)
        counts[r["corpus"]][r["split"]] += 1
    print(json.dumps({"out": str(args.out), "n": len(rows), "by_corpus": counts}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
