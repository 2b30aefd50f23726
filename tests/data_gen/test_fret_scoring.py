"""FRet step 2 through the routes a server offers: chat-only APIs (RC from top_logprobs, rc_only), vLLM
prompt_logprobs, graded labels; the probe runs once and is cached."""
from __future__ import annotations

import json
import math

import pytest

from data_gen import (CachedLLM, FakeLLM, FakeOpenAIServer, FRetConfig, FRetPipeline, OpenAICompatLLM,
                      SqliteCache, hashed_bow_embed, load_corpus, sample_seed_ids)
from data_gen.fake import FAKE_CHAT_TEMPLATE, fake_logprobs, fake_score
from data_gen.llm import FatalLLMError, sum_prompt_logprobs
from data_gen.prompts import passage_text, query_likelihood_prompt, relevance_prompt, relevance_prompt_graded
from data_gen.scoring import ScoringPlan, expected_relevance, label_value, plan_scoring
from tests.conftest import REPO

CFG = FRetConfig(neighbours=4, progress=False, concurrency=4)


@pytest.fixture(scope="module")
def corpus():
    c = load_corpus(REPO / "data_gen" / "assets" / "scifact_demo.jsonl")
    return {k: c[k] for k in list(c)[:40]}


@pytest.fixture(scope="module")
def seeds(corpus):
    return sample_seed_ids(iter(corpus), 6, seed=1)


def _run(llm, corpus, seeds, work, **kw):
    pipe = FRetPipeline(llm, hashed_bow_embed, corpus, workdir=work, config=kw.pop("config", CFG), **kw)
    s = pipe.run(seeds, work / "out.jsonl")
    return s, {r["id"]: r for r in map(json.loads, open(work / "out.jsonl"))}


def _http(srv, tmp_path, name="c.sqlite"):
    return CachedLLM(OpenAICompatLLM(srv.base_url, "fake-llm-v1", api_key_env=None, backoff_base=0.01),
                     SqliteCache(tmp_path / name))


def _without(recs, *keys):
    return {i: {k: v for k, v in r.items() if k not in keys} for i, r in recs.items()}


def test_chat_only_server_ranks_by_rc_alone(corpus, seeds, tmp_path):
    with FakeOpenAIServer(completions=False) as srv:
        llm = _http(srv, tmp_path)
        s, recs = _run(llm, corpus, seeds, tmp_path / "w")
        # 3 probes: /completions echo (404), /chat top_logprobs (ok), /chat prompt_logprobs (ignored: not offered)
        assert srv.attempts == 3 + len(seeds) * (1 + CFG.neighbours)
        # A second run with the same cache: the probe is not repeated, nothing else is asked either.
        s2, recs2 = _run(_http(srv, tmp_path), corpus, seeds, tmp_path / "w2")
        assert srv.attempts == 3 + len(seeds) * (1 + CFG.neighbours) and recs2 == recs
    assert s.records == len(seeds) and s.failures == 0
    assert s.scoring == {"mode": "rc_only", "ql": None, "rc": "chat_logprobs", "rc_labels": "binary",
                         "rc_prompt": "rc-yesno-v1", "generate": "chat"}
    fake = FakeLLM()
    for r in recs.values():
        assert r["scoring"]["mode"] == "rc_only" and r["fusion"]["weights"] == {"rc": 1.0}
        for c in r["candidates"]:
            assert c["ql"] is None and c["ql_rank"] is None
            p = corpus[c["id"]]
            prompt, label = relevance_prompt(r["query"], passage_text(p.title, p.text, CFG.max_passage_chars))
            assert c["rc"] == fake.score(prompt, label)  # the chat answer's log P("Yes")
        assert r["positive"]["id"] == r["candidates"][0]["id"] == max(r["candidates"], key=lambda c: (
            c["rc"], -c["retrieval_rank"]))["id"]


def test_server_with_both_gives_the_completions_records(corpus, seeds, tmp_path):
    _, ref = _run(CachedLLM(FakeLLM(), None), corpus, seeds, tmp_path / "ref")
    with FakeOpenAIServer() as srv:
        s, recs = _run(_http(srv, tmp_path), corpus, seeds, tmp_path / "http")
        assert srv.attempts == 1 + len(seeds) * (1 + 2 * CFG.neighbours)  # one probe: completions echo works
        # Forcing RC through the chat answer gives the same numbers on this server (its chat log-probs are the
        # completion log-probs of the label), so the same records.
        cfg = FRetConfig(neighbours=4, progress=False, concurrency=4, scoring_rc="chat_logprobs")
        s_chat, chat = _run(_http(srv, tmp_path, "c2.sqlite"), corpus, seeds, tmp_path / "chat", config=cfg)
    assert s.scoring["ql"] == "score" and s.scoring["rc"] == "score" and s.scoring["generate"] == "completions"
    assert _without(recs, "backend") == _without(ref, "backend")
    assert s_chat.scoring["rc"] == "chat_logprobs"
    assert _without(chat, "backend", "scoring") == _without(ref, "backend", "scoring")


def test_vllm_prompt_logprobs_equal_echo_logprobs(corpus, seeds, tmp_path):
    _, ref = _run(CachedLLM(FakeLLM(), None), corpus, seeds, tmp_path / "ref")
    with FakeOpenAIServer(echo_logprobs=False, prompt_logprobs=True) as srv:
        s, recs = _run(_http(srv, tmp_path), corpus, seeds, tmp_path / "w")
    assert s.scoring["ql"] == "prompt_logprobs" and s.scoring["mode"] == "ql+rc"
    assert s.scoring["rc"] == "prompt_logprobs" and s.scoring["generate"] == "completions"
    assert _without(recs, "backend", "scoring") == _without(ref, "backend", "scoring")


def test_vllm_chat_prompt_logprobs_skip_the_template(corpus, seeds, tmp_path):
    with FakeOpenAIServer(completions=False, prompt_logprobs=True) as srv:
        s, recs = _run(_http(srv, tmp_path), corpus, seeds, tmp_path / "w")
    assert s.scoring["ql"] == "prompt_logprobs_chat" and s.scoring["mode"] == "ql+rc"
    r = next(iter(recs.values()))
    c = r["candidates"][-1]
    p = corpus[c["id"]]
    prompt, lead = query_likelihood_prompt(passage_text(p.title, p.text, CFG.max_passage_chars))
    full = prompt + lead + r["query"]
    rendered = FAKE_CHAT_TEMPLATE.format(content=full)
    toks, lps, offs = fake_logprobs(rendered)
    start = rendered.index(full) + len(prompt)
    want = sum(lp for lp, o in zip(lps, offs) if start <= o < start + len(lead + r["query"]))
    assert c["ql"] == pytest.approx(want, abs=1e-12)


def test_server_without_any_scoring_route_is_fatal(corpus, seeds, tmp_path):
    with FakeOpenAIServer(completions=False, chat_logprobs=False) as srv:
        with pytest.raises(FatalLLMError, match="cannot score"):
            _run(_http(srv, tmp_path), corpus, seeds, tmp_path / "w")
        assert srv.served == {} or all(v == 1 for v in srv.served.values())
        assert srv.attempts == 3  # the probes only: no generation was paid for


def test_graded_labels_equal_on_both_routes(corpus, seeds, tmp_path):
    plans = [ScoringPlan(ql="score", rc=rc, rc_labels="graded") for rc in ("score", "chat_logprobs")]
    fake = FakeLLM()
    s1, by_score = _run(CachedLLM(fake, None), corpus, seeds, tmp_path / "a", scoring=plans[0])
    calls = fake.usage.requests
    assert calls == len(seeds) * (1 + CFG.neighbours * (1 + 4))  # QL + four labels per candidate
    s2, by_chat = _run(CachedLLM(FakeLLM(), None), corpus, seeds, tmp_path / "b", scoring=plans[1])
    assert _without(by_score, "scoring") == _without(by_chat, "scoring")
    assert s1.scoring["rc_prompt"] == "rc-graded-v1"
    r = next(iter(by_score.values()))
    c = r["candidates"][0]
    p = corpus[c["id"]]
    prompt, labels = relevance_prompt_graded(r["query"], passage_text(p.title, p.text, CFG.max_passage_chars))
    assert c["rc"] == pytest.approx(expected_relevance([fake_score(prompt, lab) for lab in labels]), abs=1e-12)
    assert all(0 <= c["rc"] <= 3 for r in by_score.values() for c in r["candidates"])


def test_label_value_and_expected_relevance():
    top = [("Yes", -0.2), (" yes", -2.0), ("No", -1.9), ("0", -5.0)]
    assert label_value(top, "Yes") == pytest.approx(math.log(math.exp(-0.2) + math.exp(-2.0)))
    assert label_value(top, "Maybe") is None
    # uniform over 0..3 -> 1.5; all mass on 3 -> 3; an absent label has no mass
    assert expected_relevance([0.0, 0.0, 0.0, 0.0]) == pytest.approx(1.5)
    assert expected_relevance([None, None, None, 0.0]) == 3.0
    assert expected_relevance([math.log(0.5), None, math.log(0.5), None]) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        expected_relevance([None, None])


def test_sum_prompt_logprobs_vllm_layout():
    # "Passage: x\nQuery: a b" as vLLM returns it: no entry for the first token, the prompt token ranked 2 beside
    # the rank-1 alternative where it is not the favourite, chat-template tokens after the text.
    full, prompt = "Passage: x\nQuery: a b", "Passage: x\nQuery:"
    toks = [("Passage", None), (":", -0.1), (" x", -1.0), ("\nQuery", -0.3), (":", -0.2), (" a", -2.0), (" b", -0.5),
            ("<|end|>", -0.01)]
    entries = [None] + [({"7": {"logprob": lp, "rank": 2, "decoded_token": t},
                          "9": {"logprob": -0.05, "rank": 1, "decoded_token": " the"}} if lp < -1 else
                         {"7": {"logprob": lp, "rank": 1, "decoded_token": t}}) for t, lp in toks[1:]]
    assert sum_prompt_logprobs(entries, full, len(prompt)) == pytest.approx(-2.5)
    assert sum_prompt_logprobs(entries[:-1], full, len(prompt)) == pytest.approx(-2.5)


def test_plan_for_an_in_process_backend_needs_no_probe():
    fake = FakeLLM()
    plan = plan_scoring(CachedLLM(fake, None), rc_labels="graded")
    assert plan == ScoringPlan(ql="score", rc="score", rc_labels="graded") and fake.usage.requests == 0
    assert plan_scoring(CachedLLM(fake, None), ql="none").mode == "rc_only"
