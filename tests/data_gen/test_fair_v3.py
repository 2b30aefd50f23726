"""Fair-rewrite prompt v3 (retrieved demos, prefix, one line), LLM-output checks and the v3 augmenter loop.

No Gemma here: a scripted fake LLM stands in (the Gemma numbers are in experiments/fairness/README.md).
"""
from __future__ import annotations

import json

import pytest

from data_gen import CachedLLM, FairAugmenter, SqliteCache
from data_gen.fair import (check_rewrite, content_diff, gender_prefix, load_gender_lexicon, pair_keys, rewrite_rules,
                           source_group)
from data_gen.llm import Usage
from data_gen.prompts import FAIR_V3_BANK, fair_rewrite_prompt_v3, fair_v3_demos, parse_rewrite


def _pk(w):
    return pair_keys(w)


def test_demos_share_the_source_gender_words_best_last():
    demos = fair_v3_demos("The queen thanked her daughter.", "female", "male", k=3, pair_key=_pk)
    assert len(demos) == 3
    src, tgt = demos[-1]  # most similar last: queen / her / daughter
    assert src == "The queen and her daughter arrived by train." and tgt == "The king and his son arrived by train."
    # direction: each demo goes from the source's gender to the target, sources are bank female versions
    female = {f for _, f, _ in FAIR_V3_BANK}
    male = {m for m, _, _ in FAIR_V3_BANK}
    assert all(s in female and t in male for s, t in demos)
    neutral = fair_v3_demos("A man sat down.", "male", "neutral", k=2, pair_key=_pk)
    assert neutral[-1] == (FAIR_V3_BANK[0][0], FAIR_V3_BANK[0][2])
    # a later attempt keeps the best demo and shows other ones
    v1 = fair_v3_demos("The queen thanked her daughter.", "female", "male", k=3, variant=1, pair_key=_pk)
    assert v1[-1] == demos[-1] and set(v1[:-1]).isdisjoint(demos[:-1])
    # mixed sources: male demos for female/neutral targets, female demos for the male target
    assert all(s in male for s, _ in fair_v3_demos("He met his wife.", "mixed", "female", pair_key=_pk))
    assert all(s in female for s, _ in fair_v3_demos("He met his wife.", "mixed", "male", pair_key=_pk))
    with pytest.raises(ValueError):
        fair_v3_demos("A man sat.", "male", "male")


def test_bank_is_consistent_with_the_validator():
    for m, f, n in FAIR_V3_BANK:
        assert check_rewrite(m, f, "female") == [] and check_rewrite(f, m, "male") == []
        assert check_rewrite(m, n, "neutral") == [], (m, n)


def test_prompt_v3_shape_and_prefix():
    p = fair_rewrite_prompt_v3("A  man is  riding a horse.", "male", "female", pair_key=_pk)
    assert p.endswith("\nSentence: A man is riding a horse.\nFemale:") and p.count("Sentence:") == 5
    q = fair_rewrite_prompt_v3("the film follows a man and his dog", "male", "neutral", pair_key=_pk,
                               prefix=gender_prefix("the film follows a man and his dog"))
    assert q.endswith("\nNeutral: the film follows a")


def test_check_rewrite_rejects_copies_and_changed_content():
    src = "offers us the sense that lilia wants to break free of her old life"
    assert check_rewrite(src, "offers us the sense that lilia wants to break free of his old life", "male") == []
    assert check_rewrite(src, "offers us the sense that lilia wants to break free of their old life", "neutral") == []
    copy = check_rewrite(src, src, "male")
    assert copy[0] == "copy of the source" and any("female words" in e for e in copy)
    cut = check_rewrite(src, "lilia wants to break free of their old life", "neutral")
    assert any(e.startswith("content changed") for e in cut)
    more = check_rewrite("A man is riding.", "A woman is riding a red horse in the rain.", "female")
    assert any(e.startswith("content changed") for e in more)
    assert check_rewrite("Mr. Smith and his son met.", "Mx. Smith and their child met.", "neutral") == []
    assert content_diff("A man is riding a horse.", "Someone is riding a horse.") == ([], [])
    assert source_group("He met his wife.") == "mixed" and source_group("A dog.") is None
    assert gender_prefix("Meet  Mr. Smith now") == "Meet" and gender_prefix("He ran.") == ""


class _Scripted:
    """Fake completion model for v3 prompts: the rule swap of the prompt's source, except that a source with
    "stubborn" in it is copied unless the prompt gives a prefix. Records every call's prompt and params."""

    name, model = "scripted", "scripted-v1"

    def __init__(self):
        self.usage = Usage()
        self.calls = []

    def generate(self, prompt, **params):
        self.calls.append((prompt, params))
        self.usage.add(requests=1)
        body, last = prompt.rsplit("\n", 1)
        src = body.rsplit("\nSentence: ", 1)[1]
        label, _, prefix = last.partition(":")
        prefix = prefix.strip()
        want = rewrite_rules(src, label.lower())
        if "stubborn" in src and not prefix:
            return " " + src
        assert want.startswith(prefix)
        return want[len(prefix):] if prefix else " " + want


def test_augmenter_v3_keeps_source_group_retries_and_bans(tmp_path):
    items = [("a", "A woman rides a horse."), ("b", "the stubborn man fixed his old car ."),
             ("c", "A red car is parked."), ("d", "She thanked her brother.")]
    fake = _Scripted()
    lex = load_gender_lexicon()
    aug = FairAugmenter(CachedLLM(fake, SqliteCache(tmp_path / "c.sqlite")), prompt="v3", attempts=2, prefix_from=1,
                        ban_tokens=lambda words: {len(w) * 1000 + i for i, w in enumerate(words)}, progress=False)
    s = aug.run(items, tmp_path / "t.jsonl")
    recs = {r["id"]: r for r in map(json.loads, open(tmp_path / "t.jsonl.log.jsonl"))}
    # one-gender sources: 2 generations (other gender + neutral), the source is its own group's version
    assert recs["a"]["ok"] and recs["a"]["groups"]["female"] == "A woman rides a horse."
    assert recs["a"]["groups"]["male"] == "A man rides a horse." and recs["a"]["attempts"] == {"male": 1, "neutral": 1}
    # the copy is rejected, the second attempt (with the prefix "the stubborn") is kept
    assert recs["b"]["ok"] and recs["b"]["attempts"] == {"female": 2, "neutral": 2}
    assert recs["b"]["neutral"] == "the stubborn person fixed their old car ."
    # no gender words: no call; mixed source: all three groups generated
    assert "source" in recs["c"]["errors"] and recs["c"]["prompt_version"] == "fair-v3"
    assert recs["d"]["ok"] and set(recs["d"]["attempts"]) == {"male", "female", "neutral"}
    assert fake.usage.requests == 2 + 4 + 0 + 3 == len(fake.calls) and (s.ok, s.failed) == (3, 1)
    for prompt, params in fake.calls:
        assert params["stop"] == ["\n"] and params["temperature"] == 0.0
        assert params["max_tokens"] <= 96
        group = prompt.rsplit("\n", 1)[1].split(":")[0].lower()
        banned = lex.all if group == "neutral" else (lex.female if group == "male" else lex.male)
        assert len(params["logit_bias"]) == len(banned) and set(params["logit_bias"].values()) == {-100.0}
    # re-run: every accepted generation is cached, nothing is asked again
    n = len(fake.calls)
    FairAugmenter(CachedLLM(fake, SqliteCache(tmp_path / "c.sqlite")), prompt="v3", attempts=2, prefix_from=1,
                  ban_tokens=lambda words: {len(w) * 1000 + i for i, w in enumerate(words)},
                  progress=False).run(items, tmp_path / "t2.jsonl")
    assert len(fake.calls) - n == 2  # only the two rejected copies of "b" (attempt 1: never cached)


def test_augmenter_v3_single_attempt_records_the_copy(tmp_path):
    fake = _Scripted()
    aug = FairAugmenter(fake, prompt="v3", attempts=1, progress=False)
    aug.run([("b", "the stubborn man fixed his old car .")], tmp_path / "t.jsonl")
    rec = json.loads(open(tmp_path / "t.jsonl.log.jsonl").readline())
    assert not rec["ok"] and rec["errors"]["female"][0] == "copy of the source"
    assert "logit_bias" not in fake.calls[0][1] and len(fake.calls) == 2
    with pytest.raises(ValueError):
        FairAugmenter(fake, prompt="v9")
    assert parse_rewrite(" A man.") == "A man."
