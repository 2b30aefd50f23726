"""Deterministic stand-ins for an LLM: an in-process backend and an OpenAI-compatible HTTP server with fault injection.

Both give identical answers for identical inputs (the server wraps :class:`FakeLLM`), so tests can check that the
HTTP path reproduces the in-process path, that retries leave no trace in the output, and that a resumed run equals an
uninterrupted one. Only the standard library is used; the server binds 127.0.0.1.

Fake language model: text is split into tokens ``\\s*\\S+`` (leading whitespace attached); see :func:`fake_logprobs`.
Query likelihood then rewards passages that contain the query's words, which is enough to exercise every stage.
"""
from __future__ import annotations

import hashlib
import http.server
import json
import random
import re
import threading
import time
from collections import Counter
from typing import Any, Iterator, Sequence

from .protocol import PromptOrMessages, Usage, messages_to_text
from .gender_rules import rewrite_rules
from .prompts import TASK_PREFIX

_TOK = re.compile(r"\s*\S+")
_ALNUM = re.compile(r"[a-z0-9]+")
_FAKE_TASKS = ["has the answer to the query.", "allows you to check whether the query is true or not.",
               "might show up as a search result.", "is semantically similar to the query.",
               "summarises the study the query refers to."]


def _h(*parts: str) -> int:
    return int.from_bytes(hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest(), "little")


def fake_tokens(text: str) -> list[tuple[int, str]]:
    return [(m.start(), m.group(0)) for m in _TOK.finditer(text)]


def fake_logprobs(text: str) -> tuple[list[str], list[float | None], list[int]]:
    """OpenAI-style echo log-probs of ``text``: tokens, token log-probs (None for the first), text offsets.

    A token scores -0.5 when all its words occur in tokens starting within the previous 1,500 characters, else
    -2.5; minus a jitter in [0, 0.1) hashed from the token and the 64 characters before it. One pass, O(len(text)).
    """
    toks = fake_tokens(text)
    last_seen: dict[str, int] = {}
    lps: list[float | None] = []
    for i, (off, tok) in enumerate(toks):
        words = _ALNUM.findall(tok.lower())
        if i == 0:
            lps.append(None)
        else:
            known = bool(words) and all(last_seen.get(w, -10**9) >= off - 1500 for w in words)
            lps.append((-0.5 if known else -2.5) - (_h(text[max(0, off - 64):off], tok) % 1000) / 1e4)
        for w in words:
            last_seen[w] = off
    return [t for _, t in toks], lps, [o for o, _ in toks]


FAKE_ANSWER_TOKENS = ("Yes", "No", "0", "1", "2", "3", "Maybe", "The")
"""The answer tokens the fake chat endpoint lists under ``top_logprobs``."""


def fake_score(prompt: str, continuation: str) -> float:
    """Summed fake log-probs of the continuation's tokens (see :func:`fake_logprobs`)."""
    toks, lps, offs = fake_logprobs(prompt + continuation)
    mine = [lp for lp, o in zip(lps, offs) if o >= len(prompt)]
    if not mine or any(lp is None for lp in mine):
        raise ValueError("continuation has no token of its own (or is the first token)")
    return sum(mine)


def _token_id(tok: str) -> int:
    return _h("tok", tok) % 200_000


def fake_prompt_logprobs(text: str) -> list[dict | None]:
    """vLLM-style ``prompt_logprobs`` of ``text``: ``None`` for the first token, then one dict per token
    ``{token_id: {"logprob", "rank", "decoded_token"}}``; a token that is not the fake model's favourite (log-prob
    below -1) is listed with rank 2 beside a rank-1 alternative, as vLLM does with ``prompt_logprobs=1``."""
    toks, lps, _ = fake_logprobs(text)
    out: list[dict | None] = []
    for tok, lp in zip(toks, lps):
        if lp is None:
            out.append(None)
            continue
        entry = {str(_token_id(tok)): {"logprob": lp, "rank": 1 if lp > -1 else 2, "decoded_token": tok}}
        if lp <= -1:
            alt = " the" if tok != " the" else " a"
            entry[str(_token_id(alt))] = {"logprob": -0.25, "rank": 1, "decoded_token": alt}
        out.append(entry)
    return out


FAKE_CHAT_TEMPLATE = "<|user|>\n{content}<|end|>\n<|assistant|>\n"
"""How the fake server renders one user message for ``prompt_logprobs`` on its chat endpoint."""


class FakeLLM:
    """Deterministic backend. Recognises the prompts of :mod:`data_gen.prompts` by their last line.

    * query generation -> ``" <task>\\nQuery: <first long words of the passage>"``; a ``garbage_every``-th passage
      (by hash) gets an unparseable answer instead, to exercise failure recording;
    * fairness rewrites -> the rule-based swapper's output;
    * anything else -> ``""``.

    Args:
      garbage_every: 0 disables unparseable answers; k makes about 1 in k query-generation answers garbage.
      model: model name reported (part of cache keys).
    """

    name = "fake"

    def __init__(self, *, garbage_every: int = 0, model: str = "fake-llm-v1", usage: Usage | None = None):
        self.garbage_every = garbage_every
        self.model = model
        self.usage = usage or Usage()

    def cache_identity(self) -> dict[str, Any]:
        return {"backend": self.name, "model": self.model, "garbage_every": self.garbage_every}

    def _complete(self, prompt: str) -> str:
        if prompt.endswith("Task: " + TASK_PREFIX):
            passage = prompt[prompt.rfind("\nPassage: ") + len("\nPassage: "):].split("\nTask:")[0]
            h = _h(passage)
            if self.garbage_every and h % self.garbage_every == 0:
                return " I am not sure what to write here"
            words = [w for w in _ALNUM.findall(passage.lower()) if len(w) > 3][h % 3: h % 3 + 6]
            return f" {_FAKE_TASKS[h % len(_FAKE_TASKS)]}\nQuery: {' '.join(words) or 'something'}"
        for label, group in (("Male:", "male"), ("Female:", "female"), ("Neutral:", "neutral")):
            if prompt.endswith("\n" + label):
                src = prompt[prompt.rfind("\nSentence: ") + len("\nSentence: "):].split("\n")[0]
                return " " + rewrite_rules(src, group)
        return ""

    def generate(self, prompt_or_messages: PromptOrMessages, **params: Any) -> str:
        prompt = prompt_or_messages if isinstance(prompt_or_messages, str) else messages_to_text(prompt_or_messages)
        text = self._complete(prompt)
        for s in params.get("stop") or []:
            if s and s in text:
                text = text[: text.index(s)]
        self.usage.add(requests=1, prompt_tokens=len(fake_tokens(prompt)), completion_tokens=len(fake_tokens(text)))
        return text

    def score(self, prompt: str, continuation: str) -> float:
        if not continuation:
            raise ValueError("continuation: expected a non-empty string")
        value = fake_score(prompt, continuation)
        self.usage.add(requests=1, prompt_tokens=len(fake_tokens(prompt + continuation)))
        return value

    def top_logprobs(self, prompt_or_messages: PromptOrMessages, k: int = 20) -> list[tuple[str, float]]:
        """The first answer token's ``k`` best candidates, as a chat endpoint's ``top_logprobs`` would list them.

        Each candidate ``t`` of :data:`FAKE_ANSWER_TOKENS` scores ``score(text, " " + t)`` (``text``: the prompt or
        the flattened messages), so a label's chat log-prob equals its completion-path score: the two routes give
        equal records.
        """
        text = prompt_or_messages if isinstance(prompt_or_messages, str) else messages_to_text(prompt_or_messages)
        pairs = [(t, fake_score(text, " " + t)) for t in FAKE_ANSWER_TOKENS]
        pairs.sort(key=lambda p: (-p[1], p[0]))
        self.usage.add(requests=1, prompt_tokens=len(fake_tokens(text)), completion_tokens=1)
        return pairs[:k]


class FakeOpenAIServer:
    """An OpenAI-compatible server on 127.0.0.1 backed by :class:`FakeLLM`, with injected faults.

    Each request fails with probability ``failure_rate`` (seeded), as one of ``modes``: ``"500"``, ``"429"`` (with
    ``Retry-After: retry_after``), ``"timeout"`` (answers only after ``timeout_sleep`` s, past the client's timeout)
    or ``"garbage"`` (200 with a body that is not JSON). No request body fails more than ``max_consecutive_failures``
    times in a row, so a client with enough retries always gets through. ``slots`` requests are served at once, each
    taking ``latency`` seconds (a server with parallel slots).

    What it offers, to test the scoring routes of :mod:`data_gen.scoring`: ``completions=False`` answers 404 on
    ``/v1/completions`` (a chat-only API); ``echo_logprobs=False`` returns no prompt log-probs for ``echo``;
    ``chat_logprobs=False`` ignores ``logprobs``/``top_logprobs`` on chat; ``prompt_logprobs=True`` adds vLLM's
    ``prompt_logprobs`` (per choice on completions, top-level on chat, after a fake chat template).

    Counters: ``attempts`` (all requests), ``served`` (Counter of successful answers by sha256 of the body),
    ``faults`` (Counter by mode), ``incomplete`` (requests whose body was cut off, e.g. by a client killed while
    sending: not answered, not counted in ``attempts``).

    Example:
      >>> with FakeOpenAIServer(failure_rate=0.3) as srv:  # doctest: +SKIP
      ...     llm = OpenAICompatLLM(srv.base_url, "fake-llm-v1")
    """

    def __init__(self, *, failure_rate: float = 0.0, modes: Sequence[str] = ("500", "429", "timeout", "garbage"),
                 retry_after: str = "1", timeout_sleep: float = 1.5, max_consecutive_failures: int = 3,
                 latency: float = 0.0, slots: int = 64, seed: int = 0, llm: FakeLLM | None = None,
                 completions: bool = True, echo_logprobs: bool = True, chat_logprobs: bool = True,
                 prompt_logprobs: bool = False):
        self.llm = llm or FakeLLM()
        self.completions, self.echo_logprobs = completions, echo_logprobs
        self.chat_logprobs, self.prompt_logprobs = chat_logprobs, prompt_logprobs
        self.failure_rate, self.modes = failure_rate, tuple(modes)
        self.retry_after, self.timeout_sleep = retry_after, timeout_sleep
        self.max_consecutive_failures = max_consecutive_failures
        self.latency = latency
        self._slots = threading.BoundedSemaphore(slots)
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._consecutive: Counter = Counter()
        self.attempts = 0
        self.served: Counter = Counter()
        self.incomplete = 0
        self.faults: Counter = Counter()
        self.auth_headers: list[str] = []
        srv = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output quiet
                pass

            def _send(self, code: int, body: bytes, headers: dict | None = None):
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n)
                if len(raw) < n:  # the client went away mid-request (killed): nothing reached the API
                    with srv._lock:
                        srv.incomplete += 1
                    self.close_connection = True
                    return
                with srv._slots:
                    srv._handle(self, raw)

        class Server(http.server.ThreadingHTTPServer):
            request_queue_size = 256  # the default backlog (5) refuses connections from a concurrent client

        self._httpd = Server(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def _decide_fault(self, key: str) -> str | None:
        with self._lock:
            self.attempts += 1
            if (self.failure_rate > 0 and self._consecutive[key] < self.max_consecutive_failures
                    and self._rng.random() < self.failure_rate):
                mode = self._rng.choice(self.modes)
                self._consecutive[key] += 1
                self.faults[mode] += 1
                return mode
            self._consecutive[key] = 0
            return None

    def _handle(self, h, raw: bytes) -> None:
        key = hashlib.sha256(raw).hexdigest()
        self.auth_headers.append(h.headers.get("Authorization") or "")
        fault = self._decide_fault(key)
        if self.latency:
            time.sleep(self.latency)
        if fault == "500":
            return h._send(500, b'{"error": {"message": "injected internal error"}}')
        if fault == "429":
            return h._send(429, b'{"error": {"message": "injected rate limit"}}', {"Retry-After": self.retry_after})
        if fault == "garbage":
            return h._send(200, b'{"choices": [{"text": "trunc')
        if fault == "timeout":
            time.sleep(self.timeout_sleep)
        try:
            body = json.loads(raw)
        except json.JSONDecodeError:
            return h._send(400, b'{"error": {"message": "request body is not JSON"}}')
        path = h.path
        if path not in ("/v1/completions", "/v1/chat/completions") or (path == "/v1/completions"
                                                                      and not self.completions):
            return h._send(404, b'{"error": {"message": "unknown path"}}')
        if path.endswith("/chat/completions"):
            msgs = body.get("messages") or []
            prompt_text = messages_to_text(msgs)
            want_top = body.get("logprobs") and self.chat_logprobs
            if want_top:
                top = self.llm.top_logprobs(msgs, int(body.get("top_logprobs") or 1))
                text = top[0][0]
                logprobs = {"content": [{"token": text, "logprob": top[0][1],
                                         "top_logprobs": [{"token": t, "logprob": v} for t, v in top]}]}
            else:
                text = self.llm.generate(msgs, stop=body.get("stop"))
                logprobs = None
            out = {"object": "chat.completion", "model": body.get("model"),
                   "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                "finish_reason": "stop", "logprobs": logprobs}]}
            if body.get("prompt_logprobs") is not None and self.prompt_logprobs:
                out["prompt_logprobs"] = fake_prompt_logprobs(FAKE_CHAT_TEMPLATE.format(content=prompt_text))
        else:
            prompt_text = body.get("prompt", "")
            text = self.llm.generate(prompt_text, stop=body.get("stop"))
            if body.get("max_tokens") == 1:
                text = text[:1]
            choice: dict[str, Any] = {"index": 0, "text": (prompt_text + text) if body.get("echo") else text,
                                      "finish_reason": "stop", "logprobs": None}
            if body.get("logprobs") is not None and (self.echo_logprobs or not body.get("echo")):
                shown = choice["text"]
                toks, lps, offs = fake_logprobs(shown)
                choice["logprobs"] = {"tokens": toks, "token_logprobs": lps, "text_offset": offs,
                                      "top_logprobs": None}
            if body.get("prompt_logprobs") is not None and self.prompt_logprobs:
                choice["prompt_logprobs"] = fake_prompt_logprobs(prompt_text)
            out = {"object": "text_completion", "model": body.get("model"), "choices": [choice]}
        out["usage"] = {"prompt_tokens": len(fake_tokens(prompt_text)), "completion_tokens": len(fake_tokens(text)),
                        "total_tokens": len(fake_tokens(prompt_text)) + len(fake_tokens(text))}
        if fault != "timeout":
            with self._lock:
                self.served[key] += 1
        h._send(200, json.dumps(out).encode())

    def start(self) -> "FakeOpenAIServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> "FakeOpenAIServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


_SYLLABLES = ("ba", "ko", "mi", "ne", "ru", "sa", "te", "vi", "do", "pa", "zu", "le", "fo", "gi", "ha", "ju", "ra",
              "to", "ni", "se")


def synthetic_corpus(n: int, *, seed: int = 0, vocab: int = 20_000, topics: int = 2_000,
                     words: tuple[int, int] = (60, 100)) -> Iterator[Passage]:
    """``n`` deterministic synthetic passages for benchmarks and tests at any scale (no download, no licence).

    Pseudo-words from syllables; each passage draws about half its words from one of ``topics`` topic word lists
    and the rest from a Zipf-like background, so passages of a topic are near neighbours (retrieval has structure)
    and frequent words are shared (an ANN index is not handed well-separated clusters). Streamed in chunks.
    """
    import numpy as np

    from .corpus import Passage as _Passage

    rng = np.random.default_rng(seed)
    syl = np.array(_SYLLABLES)
    lex, seen = [], set()
    while len(lex) < vocab:
        w = "".join(syl[rng.integers(0, len(syl), rng.integers(2, 5))])
        if w not in seen:
            seen.add(w)
            lex.append(w)
    lex = np.array(lex)
    zipf = 1.0 / np.arange(1, vocab + 1) ** 1.05
    cdf = np.cumsum(zipf / zipf.sum())
    cdf[-1] = 1.0
    topic_words = np.searchsorted(cdf, rng.random((topics, 40)))
    topic_words = (topic_words + rng.integers(0, vocab, size=(topics, 40))) % vocab  # topical words are rarer
    chunk = 4096
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        t = rng.integers(0, topics, m)
        lens = rng.integers(words[0], words[1] + 1, m)
        own_n, bg_n = lens // 2, lens - lens // 2
        own = topic_words[np.repeat(t, own_n), rng.integers(0, 40, int(own_n.sum()))]
        bg = np.searchsorted(cdf, rng.random(int(bg_n.sum())))
        oo, bo = np.concatenate([[0], np.cumsum(own_n)]), np.concatenate([[0], np.cumsum(bg_n)])
        keys = rng.random(int(lens.sum()))
        ko = np.concatenate([[0], np.cumsum(lens)])
        for i in range(m):
            ws = np.concatenate([own[oo[i]:oo[i + 1]], bg[bo[i]:bo[i + 1]]])[np.argsort(keys[ko[i]:ko[i + 1]])]
            text = " ".join(lex[ws].tolist()).capitalize() + "."
            tw = topic_words[t[i]]
            yield _Passage(id=f"syn{start + i:08d}", title=f"{lex[tw[0]].capitalize()} {lex[tw[1]]}", text=text)
