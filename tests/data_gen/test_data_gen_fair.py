"""Fairness augmentation: rule-based swapper, validation, LLM augmenter with failures and resume, CLI."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from data_gen import CachedLLM, FairAugmenter, FakeLLM, SqliteCache, load_texts, rewrite_rules, validate_rewrite
from data_gen.fair import gender_words_in, load_gender_lexicon

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("src,group,want", [
    ("A young girl sits with a bicycle behind her.", "male", "A young boy sits with a bicycle behind him."),
    ("A young girl sits with a bicycle behind her.", "neutral", "A young child sits with a bicycle behind them."),
    ("He said his wife gave her a book.", "female", "She said her wife gave her a book."),
    ("He said his wife gave her a book.", "male", "He said his husband gave him a book."),
    ("She is reading her mail.", "neutral", "They are reading their mail."),
    ("Mr. Smith and his sons met the Queen.", "female", "Mrs. Smith and her daughters met the Queen."),
    ("The MAN waved at the women.", "neutral", "The PERSON waved at the people."),
    ("A dog runs on the beach.", "female", "A dog runs on the beach."),
])
def test_rule_swapper(src, group, want):
    assert rewrite_rules(src, group) == want


def test_lexicon_is_the_bundled_seat_list():
    lex = load_gender_lexicon()
    raw = json.loads((REPO.parent / "shared" / "data" / "seat" / "bias_attribute_words.json").read_text()) \
        if (REPO.parent / "shared" / "data" / "seat").is_dir() else None
    bundled = json.loads((REPO / "data_gen" / "assets" / "gender_words.json").read_text())["gender"]
    if raw is not None:
        assert bundled == raw["gender"]
    assert {"he", "him", "his", "man", "king"} <= lex.male and {"she", "her", "woman", "queen"} <= lex.female
    assert not lex.male & lex.female


def test_validation_catches_each_failure():
    src = "The man fixed his bike."
    assert validate_rewrite(src, "The woman fixed her bike.", "female") == []
    assert validate_rewrite(src, "", "female") == ["empty"]
    assert any("length ratio" in e for e in validate_rewrite(src, "The woman fixed her bike " * 5, "female"))
    assert any("male words in the female" in e for e in validate_rewrite(src, "The woman fixed his bike.", "female"))
    assert any("no female words" in e for e in validate_rewrite(src, "The person fixed the bike.", "female"))
    assert any("gendered words in the neutral" in e for e in validate_rewrite(src, "The man fixed a bike.", "neutral"))
    assert any("script" in e for e in validate_rewrite(src, "Мужчина починил свой велосипед.", "male"))
    assert gender_words_in("Mr. Smith met her.") == ({"mr."}, {"her"})


class _Flaky(FakeLLM):
    """Returns a two-line answer for neutral rewrites of every third text: a parse failure."""

    def generate(self, prompt_or_messages, **params):
        text = super().generate(prompt_or_messages, **params)
        if prompt_or_messages.endswith("Neutral:") and zlib.crc32(prompt_or_messages[-60:].encode()) % 3 == 0:
            return text + "\nSentence: extra"
        return text


def test_augmenter_records_failures_and_resumes(tmp_path):
    items = load_texts(REPO / "data_gen" / "assets" / "fair_demo.jsonl")[:24]
    items.append(("nogender", "A red car is parked near the river."))
    fake = _Flaky()
    aug = FairAugmenter(CachedLLM(fake, SqliteCache(tmp_path / "c.sqlite")), concurrency=4, progress=False)
    s = aug.run(items, tmp_path / "fair.jsonl")
    good = [json.loads(l) for l in open(tmp_path / "fair.jsonl")]
    bad = [json.loads(l) for l in open(tmp_path / "fair.jsonl.failures.jsonl")]
    assert s.ok == len(good) and s.failed == len(bad) and s.ok + s.failed == 25
    assert fake.usage.requests == 3 * 25
    by_id = {r["id"]: r for r in bad}
    assert "nogender" in by_id and "source" in by_id["nogender"]["errors"]
    assert any("parse" in e[0] for r in bad for e in r["errors"].values())
    for r in good:
        assert set(r) >= {"id", "neutral", "groups", "source"} and set(r["groups"]) == {"male", "female"}
        assert validate_rewrite(r["source"], r["groups"]["male"], "male") == []
        assert validate_rewrite(r["source"], r["neutral"], "neutral") == []
    # Re-run: nothing left to do, no LLM calls; with retry_failed only the failures are asked again (they were
    # never cached), and the parse failures come back the same.
    s2 = aug.run(items, tmp_path / "fair.jsonl")
    assert fake.usage.requests == 75 and (s2.ok, s2.failed) == (s.ok, s.failed)
    aug.retry_failed = True
    aug.run(items, tmp_path / "fair.jsonl")
    cached = sum(1 for r in bad for g in ("male", "female", "neutral") if g not in r["errors"])
    assert fake.usage.requests - 75 == 3 * len(bad) - cached > 0


def test_cli_rules_baseline(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    p = subprocess.run([sys.executable, "-m", "data_gen.cli", "augment-fair", "--method", "rules", "--out",
                        str(tmp_path / "t.jsonl"), "--no-progress"], capture_output=True, text=True, env=env,
                       cwd=REPO, timeout=120)
    assert p.returncode == 0, p.stderr
    rep = json.loads(p.stdout)
    good = [json.loads(l) for l in open(tmp_path / "t.jsonl")]
    assert rep["inputs"] == 200 and rep["ok"] == len(good) >= 150
    for r in good:
        m, f = r["groups"]["male"], r["groups"]["female"]
        assert m != f and r["method"] == "rules"
        assert validate_rewrite(r["source"], f, "female") == validate_rewrite(r["source"], m, "male") == []


def test_cli_llm_prompt_versions(tmp_path):
    """`--prompt` reaches the augmenter: v3 (default) and v2 records say which prompt made them."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    for version, expected in (([], "fair-v3"), (["--prompt", "v2"], None)):
        out = tmp_path / f"t{len(version)}.jsonl"
        p = subprocess.run([sys.executable, "-m", "data_gen.cli", "augment-fair", "--llm", "fake", "--limit", "3",
                            "--out", str(out), "--no-progress", *version], capture_output=True, text=True, env=env,
                           cwd=REPO, timeout=120)
        assert p.returncode == 0, p.stderr
        recs = [json.loads(line) for line in open(out)]
        assert recs and all(r["method"] == "llm" for r in recs)
        versions = {r.get("prompt_version") for r in recs}
        assert (versions == {expected}) if expected else ("fair-v3" not in versions)
