"""FRet step 2 scoring routes: query likelihood (QL) and relevance classification (RC) through whatever the LLM offers.

A :class:`ScoringPlan` says how each score is obtained; :func:`plan_scoring` chooses it once per run from the
server's capabilities (probed by :meth:`~data_gen.llm.CachedLLM.capabilities`):

==========================  ==========================================================  ============================
route                        request                                                      offered by
==========================  ==========================================================  ============================
``score``                    ``/v1/completions`` with ``echo, logprobs`` (or an           vLLM, llama.cpp servers,
                             in-process model's ``score``)                                the embedded Gemma
``prompt_logprobs``          ``/v1/completions`` with vLLM's ``prompt_logprobs``          vLLM
``prompt_logprobs_chat``     ``/v1/chat/completions`` with ``prompt_logprobs``            vLLM (chat template applied)
``chat_logprobs`` (RC only)  ``/v1/chat/completions`` with ``logprobs, top_logprobs``     OpenAI, Gemini, vLLM, ...
==========================  ==========================================================  ============================

QL needs the log-probs of prompt tokens, which hosted chat APIs do not return; without such a route the plan is
``rc_only``: candidates are ranked by RC alone and every record says so (``scoring.mode``). RC always works where
chat answers carry ``top_logprobs``: the label's log-prob is read off the first answer token.

RC labels: ``binary`` (RC = log P("Yes"), the default and FRet's reading) or ``graded`` (expected relevance over
0-3 labels, Zhuang et al. 2023; :func:`~data_gen.prompts.relevance_prompt_graded`).
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

from .llm import FatalLLMError, LLMError
from .prompts import (RC_GRADED_LABELS, RC_GRADED_VERSION, passage_text, query_likelihood_prompt, relevance_prompt,
                      relevance_prompt_graded)

log = logging.getLogger(__name__)

QL_ROUTES = ("score", "prompt_logprobs", "prompt_logprobs_chat")
RC_ROUTES = ("score", "prompt_logprobs", "prompt_logprobs_chat", "chat_logprobs")
RC_LABELS = ("binary", "graded")
RC_BINARY_VERSION = "rc-yesno-v1"

_ROUTE_TEXT = {
    "score": "the backend's score() (/v1/completions echo log-probs on a server)",
    "prompt_logprobs": "/v1/completions prompt_logprobs (vLLM)",
    "prompt_logprobs_chat": "/v1/chat/completions prompt_logprobs (vLLM, chat template applied)",
    "chat_logprobs": "/v1/chat/completions top_logprobs of the answer token",
    None: "unavailable: candidates are ranked by RC alone (rc_only)",
}


@dataclass(frozen=True)
class ScoringPlan:
    """How step 2 obtains its scores.

    Attributes:
      generate: step 1's route: ``"completions"`` (the few-shot prompt continued) or ``"chat"`` (the same prompt
        as a user message after an instruction: chat-only APIs).
      ql: a route of :data:`QL_ROUTES`, or None when the server cannot give prompt log-probs (``rc_only``).
      rc: a route of :data:`RC_ROUTES` (a prompt-log-prob route scores the label as a continuation).
      rc_labels: ``"binary"`` or ``"graded"``.
      top_logprobs: how many answer tokens a chat RC call asks for (the OpenAI maximum is 20).
    """

    ql: str | None = "score"
    rc: str = "score"
    rc_labels: str = "binary"
    top_logprobs: int = 20
    generate: str = "completions"

    def __post_init__(self):
        if self.generate not in ("completions", "chat"):
            raise ValueError(f"generate: expected 'completions' or 'chat', got {self.generate!r}")
        if self.ql is not None and self.ql not in QL_ROUTES:
            raise ValueError(f"ql: expected one of {QL_ROUTES} or None, got {self.ql!r}")
        if self.rc not in RC_ROUTES:
            raise ValueError(f"rc: expected one of {RC_ROUTES}, got {self.rc!r}")
        if self.rc_labels not in RC_LABELS:
            raise ValueError(f"rc_labels: expected one of {RC_LABELS}, got {self.rc_labels!r}")
        if not 1 <= self.top_logprobs <= 20:
            raise ValueError(f"top_logprobs: expected 1..20, got {self.top_logprobs}")

    @property
    def mode(self) -> str:
        return "ql+rc" if self.ql else "rc_only"

    def provenance(self) -> dict[str, Any]:
        """What every record carries under ``scoring``; part of the scores' staleness check."""
        return {"mode": self.mode, "ql": self.ql, "rc": self.rc, "rc_labels": self.rc_labels,
                "rc_prompt": RC_GRADED_VERSION if self.rc_labels == "graded" else RC_BINARY_VERSION,
                "generate": self.generate}

    def describe(self) -> str:
        gen = "/v1/chat/completions" if self.generate == "chat" else "completion prompts"
        return f"generation via {gen}; QL via {_ROUTE_TEXT[self.ql]}; RC ({self.rc_labels}) via {_ROUTE_TEXT[self.rc]}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_scoring(llm, *, rc_labels: str = "binary", ql: str = "auto", rc: str = "auto",
                 top_logprobs: int = 20) -> ScoringPlan:
    """Choose the scoring routes for ``llm`` (a :class:`~data_gen.llm.CachedLLM`), probing the server once.

    ``ql``/``rc`` ``"auto"`` prefer, for QL: completion echo log-probs, then vLLM ``prompt_logprobs`` on
    completions, then on chat, else none (``rc_only``); for RC: the same completion route as QL when there is one
    (so a server offering both gives exactly the records of the completions path), else the chat answer's
    ``top_logprobs``, else chat ``prompt_logprobs``. An
    explicit route is used as given (``ql="none"`` forces ``rc_only``). In-process backends (no probe) use
    ``score`` for both.

    Raises:
      FatalLLMError: the server offers no route for RC (neither completion log-probs nor chat ``top_logprobs``).
    """
    caps = llm.capabilities() if hasattr(llm, "capabilities") else None
    if caps is None:  # an in-process model: score() always works
        caps = {"completions": True, "completions_echo": True}
    if ql == "auto":
        ql_route = ("score" if caps.get("completions_echo") else
                    "prompt_logprobs" if caps.get("completions_prompt_logprobs") else
                    "prompt_logprobs_chat" if caps.get("chat_prompt_logprobs") else None)
    else:
        ql_route = None if ql == "none" else ql
    if rc == "auto":
        if caps.get("completions_echo"):
            rc_route = "score"
        elif caps.get("completions_prompt_logprobs"):
            rc_route = "prompt_logprobs"
        elif caps.get("chat_top_logprobs"):
            rc_route = "chat_logprobs"
        elif caps.get("chat_prompt_logprobs"):
            rc_route = "prompt_logprobs_chat"
        else:
            raise FatalLLMError(
                f"LLM {llm.name}:{llm.model}: the server returns neither prompt log-probs on /v1/completions nor "
                f"top_logprobs on /v1/chat/completions, so FRet step 2 cannot score (capabilities: {caps})")
    else:
        rc_route = rc
    plan = ScoringPlan(ql=ql_route, rc=rc_route, rc_labels=rc_labels, top_logprobs=top_logprobs,
                       generate="completions" if caps.get("completions", True) else "chat")
    log.info("scoring: %s", plan.describe())
    return plan


# ---- per-candidate calls ----------------------------------------------------------------------------------------

def label_value(top: Sequence[tuple[str, float]], label: str) -> float | None:
    """log P(label) from an answer token's ``top_logprobs``: the variants equal to ``label`` after stripping
    spaces, case-insensitive, summed (``"Yes"``, ``" yes"``, ...); None when none is listed."""
    want = label.strip().casefold()
    lps = [lp for tok, lp in top if tok.strip().casefold() == want]
    if not lps:
        return None
    m = max(lps)
    return m + math.log(sum(math.exp(lp - m) for lp in lps))


def expected_relevance(logprobs: Sequence[float | None]) -> float:
    """:math:`\\sum_k k\\, p_k` with :math:`p = \\mathrm{softmax}(\\ell)` over the labels 0..K listed (None: absent)."""
    present = [(k, lp) for k, lp in enumerate(logprobs) if lp is not None]
    if not present:
        raise ValueError("expected_relevance: no label has a log-prob")
    m = max(lp for _, lp in present)
    w = [(k, math.exp(lp - m)) for k, lp in present]
    z = sum(x for _, x in w)
    return sum(k * x for k, x in w) / z


def _binary_from_top(top: Sequence[tuple[str, float]]) -> float:
    v = label_value(top, "Yes")
    # Not among the top-k: its log-prob is at most the k-th one's, the tightest value the answer allows.
    return v if v is not None else min(lp for _, lp in top)


def _graded_from_top(top: Sequence[tuple[str, float]]) -> float:
    lps = [label_value(top, lab) for lab in RC_GRADED_LABELS]
    if all(v is None for v in lps):
        raise LLMError(f"none of the labels {'/'.join(RC_GRADED_LABELS)} is among the answer's top "
                       f"{len(top)} tokens ({', '.join(repr(t) for t, _ in top[:5])}, ...)")
    return expected_relevance(lps)


@dataclass(frozen=True)
class Call:
    """One LLM call of step 2: candidate ``k`` of seed ``seed``; ``kind`` ``"ql"`` or ``"rc"``; ``part``: the label
    index for a graded RC scored label by label, else 0."""

    seed: str
    k: int
    kind: str
    part: int = 0


def calls_for(plan: ScoringPlan, seed: str, n_candidates: int) -> list[Call]:
    """Every call for one seed, grouped by kind (a local model keeps the shared prompt prefix warm)."""
    out: list[Call] = []
    if plan.ql:
        out += [Call(seed, k, "ql") for k in range(n_candidates)]
    parts = len(RC_GRADED_LABELS) if (plan.rc_labels == "graded" and plan.rc != "chat_logprobs") else 1
    out += [Call(seed, k, "rc", j) for k in range(n_candidates) for j in range(parts)]
    return out


def run_call(llm, plan: ScoringPlan, call: Call, query: str, text: str) -> float:
    """The value of one call: a QL log-prob, an RC label log-prob (graded, label by label) or a finished RC value
    (from one chat answer). ``text`` is the candidate passage as it appears in prompts."""
    if call.kind == "ql":
        prompt, lead = query_likelihood_prompt(text)
        return llm.score(prompt, lead + query, via=plan.ql)
    if plan.rc_labels == "binary":
        prompt, label = relevance_prompt(query, text)
        if plan.rc != "chat_logprobs":
            return llm.score(prompt, label, via=plan.rc)
        return _binary_from_top(llm.top_logprobs(prompt, plan.top_logprobs))
    prompt, labels = relevance_prompt_graded(query, text)
    if plan.rc != "chat_logprobs":
        return llm.score(prompt, labels[call.part], via=plan.rc)
    return _graded_from_top(llm.top_logprobs(prompt, plan.top_logprobs))


class ScoreAssembler:
    """Turns step-2 inputs (a seed's candidates) into calls and their results back into one scores record.

    Both engines use it: the local pipeline streams the calls of many seeds through one thread pool, a Beam worker
    those of a batch of seeds. ``add`` returns the finished record when the seed's last call has come back.

    Args:
      llm: a :class:`~data_gen.llm.CachedLLM`.
      plan: the :class:`ScoringPlan`.
      max_passage_chars: passages are cut to this length inside prompts.
    """

    def __init__(self, llm, plan: ScoringPlan, max_passage_chars: int):
        self.llm, self.plan, self.max_chars = llm, plan, max_passage_chars
        self._open: dict[str, dict] = {}

    def start(self, nb: dict, passages: dict[str, Any]) -> list[tuple[Call, str, str]]:
        """Register seed ``nb`` (a neighbours record) and return its work items ``(call, query, passage text)``;
        ``passages`` maps candidate ids to objects with ``title`` and ``text``."""
        calls = calls_for(self.plan, nb["id"], len(nb["candidates"]))
        texts = [passage_text(passages[c["id"]].title, passages[c["id"]].text, self.max_chars)
                 for c in nb["candidates"]]
        self._open[nb["id"]] = {"nb": nb, "left": len(calls), "ql": {}, "rc": {}, "errors": []}
        return [(c, nb["query"], texts[c.k]) for c in calls]

    def call(self, item: tuple[Call, str, str]) -> tuple[str, Any]:
        call, query, text = item
        try:
            return "ok", run_call(self.llm, self.plan, call, query, text)
        except FatalLLMError:  # the server refuses every call: stop the run
            raise
        except LLMError as e:
            cid = self._open[call.seed]["nb"]["candidates"][call.k]["id"]
            return "error", f"{call.kind} score of {cid}: {e}"

    def add(self, item: tuple[Call, str, str], result: tuple[str, Any]) -> dict | None:
        call = item[0]
        acc = self._open[call.seed]
        status, val = result
        if status == "ok":
            acc[call.kind][(call.k, call.part)] = val
        else:
            acc["errors"].append(val)
        acc["left"] -= 1
        if acc["left"]:
            return None
        del self._open[call.seed]
        return self._finish(acc)

    def _finish(self, acc: dict) -> dict:
        nb = acc["nb"]
        base = {"id": nb["id"], "query": nb["query"], "scoring": self.plan.provenance()}
        if acc["errors"]:
            return {**base, "ok": False, "error_kind": "llm", "error": "; ".join(acc["errors"][:3]),
                    "candidates": nb["candidates"]}
        graded_parts = self.plan.rc_labels == "graded" and self.plan.rc != "chat_logprobs"
        cands = []
        for k, c in enumerate(nb["candidates"]):
            ql = acc["ql"][(k, 0)] if self.plan.ql else None
            if graded_parts:
                rc = expected_relevance([acc["rc"][(k, j)] for j in range(len(RC_GRADED_LABELS))])
            else:
                rc = acc["rc"][(k, 0)]
            cands.append(dict(c, ql=ql, rc=rc))
        return {**base, "ok": True, "task": nb["task"], "candidates": cands, "seed_in_topn": nb.get("seed_in_topn"),
                "retriever": nb.get("retriever")}
