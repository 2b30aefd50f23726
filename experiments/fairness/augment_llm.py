"""LLM gender tuples with the embedded Gemma 3 270M (prompt v3), and their quality next to the rule-based swapper.

    python experiments/fairness/augment_llm.py --limit 80            # ~8 min on 2 shared cores
    python experiments/fairness/augment_llm.py --limit 80 --no-ban --attempts 1 --tag noban   # ablation

Input: the first ``--limit`` sentences of ``data/llm_input.jsonl`` (train split, one gender, 30-110 characters,
written by ``extract_gender.py --llm-input``). Output: ``data/llm_v3[_TAG]_tuples.log.jsonl`` (every record,
failures included; ``run.py`` reads it via ``llm_tuples``) and ``data/llm_v3[_TAG]_stats.json`` (failure rate,
reasons, length ratios, leftover gender words, attempts, seconds; the same statistics for the rule-based tuples
of the same sentences). Scratch (LLM cache, augmenter log) under ``runs/fairness/llm_v3[_TAG]/``: re-runs reuse
accepted generations.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import re
import shutil
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def _norm(text: str) -> str:
    return re.sub(r"\s+([.,!?;:'])", r"\1", " ".join((text or "").lower().split())).rstrip(" .")


def agreement_with_rules(llm_recs: list[dict], rule_recs: list[dict]) -> dict:
    """Share of LLM rewrites (valid tuples only) equal to the rule-based rewrite of the same sentence, per group,
    after lower-casing and ignoring spaces before punctuation and a final full stop; the source's own group (kept
    verbatim by both) is left out."""
    from data_gen.fair import source_group

    rules = {r["id"]: r for r in rule_recs}
    same, n = {"male": 0, "female": 0, "neutral": 0}, {"male": 0, "female": 0, "neutral": 0}
    for r in llm_recs:
        if not r.get("ok") or r["id"] not in rules:
            continue
        sg = source_group(r["source"])
        for g in same:
            if g == sg:
                continue
            get = (lambda t: t["neutral"]) if g == "neutral" else (lambda t, g=g: t["groups"][g])
            n[g] += 1
            same[g] += _norm(get(r)) == _norm(get(rules[r["id"]]))
    return {g: {"same": same[g], "of": n[g]} for g in same}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--input", type=pathlib.Path, default=HERE / "data" / "llm_input.jsonl")
    ap.add_argument("--limit", type=int, default=80)
    ap.add_argument("--attempts", type=int, default=2)
    ap.add_argument("--prefix-from", type=int, default=1, help="attempt (0-based) from which the words before the "
                    "first gender word are given; -1: never")
    ap.add_argument("--no-ban", action="store_true", help="no logit-bias ban of the forbidden gender words")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tag", default="")
    ap.add_argument("--stats-only", action="store_true", help="recompute the agreement with the rules in an "
                    "existing stats file from its log; no generation")
    args = ap.parse_args(argv)
    name = "llm_v3" + (f"_{args.tag}" if args.tag else "")
    if args.stats_only:
        from data_gen.fair import rule_based_tuple

        recs = [json.loads(line) for line in open(HERE / "data" / f"{name}_tuples.log.jsonl", encoding="utf-8")]
        path = HERE / "data" / f"{name}_stats.json"
        stats = json.loads(path.read_text())
        stats["same_as_rules"] = agreement_with_rules(recs, [rule_based_tuple(r["id"], r["source"]) for r in recs])
        path.write_text(json.dumps(stats, indent=1))
        print(json.dumps(stats["same_as_rules"]))
        return 0

    from data_gen.fair import FairAugmenter, augmentation_stats, llama_cpp_ban_fn, load_texts, rule_based_tuple
    from data_gen.llm import LLMSpec, make_llm

    work = ROOT / "runs" / "fairness" / name
    work.mkdir(parents=True, exist_ok=True)
    items = load_texts(args.input)[: args.limit]
    llm = make_llm(LLMSpec(llm="local", threads=args.threads, score_slots=1, cache=str(work / "cache.sqlite")))
    aug = FairAugmenter(llm, prompt="v3", attempts=args.attempts, progress=False,
                        prefix_from=None if args.prefix_from < 0 else args.prefix_from,
                        ban_tokens=None if args.no_ban else llama_cpp_ban_fn(llm))
    t0 = time.time()
    summary = aug.run(items, work / "llm_tuples.jsonl")
    secs = time.time() - t0
    recs = [json.loads(line) for line in open(work / "llm_tuples.jsonl.log.jsonl", encoding="utf-8")]
    want = {i for i, _ in items}
    recs = [r for r in recs if r["id"] in want]
    data = HERE / "data"
    shutil.copyfile(work / "llm_tuples.jsonl.log.jsonl", data / f"{name}_tuples.log.jsonl")
    rules = [rule_based_tuple(i, t) for i, t in items]
    by_attempt = {}
    for r in recs:
        for g, n in (r.get("attempts") or {}).items():
            key = f"{g}: attempt {n}" + (" ok" if g not in (r.get("errors") or {}) else " failed")
            by_attempt[key] = by_attempt.get(key, 0) + 1
    stats = {"llm": augmentation_stats(recs), "rules_same_sentences": augmentation_stats(rules),
             "generations_by_attempt": dict(sorted(by_attempt.items())), "usage": summary.usage,
             "same_as_rules": agreement_with_rules(recs, rules),
             "seconds": round(secs, 1), "seconds_per_sentence": round(secs / max(1, len(items)), 2),
             "config": {"limit": args.limit, "attempts": args.attempts, "prefix_from": args.prefix_from,
                        "ban": not args.no_ban, "threads": args.threads, "model": llm.model, "prompt": "v3"},
             "note": "seconds include only generations not already in the cache"}
    (data / f"{name}_stats.json").write_text(json.dumps(stats, indent=1))
    print(json.dumps(stats, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
