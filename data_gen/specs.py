"""Picklable recipes for the LLM client and the embedder, resolved where they are used.

The CLI builds its LLM and embedder from them; Beam workers receive the same recipes and build their own copies in
``DoFn.setup`` (one per worker process), so nothing heavy or unpicklable crosses process boundaries and
``gecko_jax`` (JAX) is imported only inside the process that embeds, only when ``--embedder gecko`` asks for it.
"""
from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .errors import InputError

EmbedFn = Callable[[Any], np.ndarray]


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

    def build(self):
        """The client: ``InputError`` for a bad option (before any request is made)."""
        from .cache import SqliteCache
        from .fake import FakeLLM
        from .limits import RateLimiter
        from .llm import CachedLLM, LlamaCppLLM, OpenAICompatLLM

        if self.llm == "openai":
            if not self.base_url:
                raise InputError("--llm openai needs --base-url (or $OPENAI_BASE_URL)")
            if not self.model:
                raise InputError("--llm openai needs --model (or $OPENAI_MODEL)")
            try:
                extra = json.loads(self.extra_body) if self.extra_body else None
            except json.JSONDecodeError as e:
                raise InputError(f"--extra-body: expected a JSON object, got {self.extra_body!r} ({e})") from None
            if extra is not None and not isinstance(extra, dict):
                raise InputError(f"--extra-body: expected a JSON object, got {type(extra).__name__}")
            try:
                inner = OpenAICompatLLM(self.base_url, self.model, api_key_env=self.api_key_env,
                                        timeout=self.timeout, max_attempts=self.max_attempts,
                                        backoff_base=self.backoff_base, limiter=RateLimiter(self.rpm, self.tpm),
                                        extra_body=extra, max_connection_failures=self.max_connection_failures)
            except ValueError as e:
                raise InputError(str(e)) from None
        elif self.llm == "local":
            try:
                inner = LlamaCppLLM(self.model_path, n_ctx=self.n_ctx, n_threads=self.threads)
            except (ImportError, FileNotFoundError) as e:  # the extra is not installed, or no such GGUF file
                raise InputError(str(e)) from None
        elif self.llm == "fake":
            inner = FakeLLM(garbage_every=self.fake_garbage_every)
        else:
            raise InputError(f"--llm: expected local, openai or fake, got {self.llm!r}")
        return CachedLLM(inner, SqliteCache(self.cache) if self.cache else None)


@dataclass(frozen=True)
class EmbedderSpec:
    """``kind``: ``hash`` (bag of words, no model), ``gecko`` (``gecko_jax.Embedder.from_pretrained(model)``) or
    ``module:function`` (any importable ``texts -> [n, d]`` function)."""

    kind: str = "hash"
    model: str = "all-MiniLM-L6-v2"
    options: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        if self.kind == "hash":
            return "hashed-bow-512"
        if self.kind == "gecko":
            return f"gecko_jax:{self.model}"
        return self.kind

    def build(self) -> tuple[EmbedFn, EmbedFn | None]:
        """``(document embed_fn, query embed_fn or None for the same)``."""
        if self.kind == "hash":
            from .retrieval import hashed_bow_embed
            return hashed_bow_embed, None
        if self.kind == "gecko":
            from gecko_jax import Embedder  # JAX is imported here, only in the process that embeds

            emb = Embedder.from_pretrained(self.model)
            return (lambda texts: emb.encode(list(texts), kind="document"),
                    lambda texts: emb.encode(list(texts), kind="query"))
        if ":" in self.kind:
            mod, fn = self.kind.split(":", 1)
            try:
                return getattr(importlib.import_module(mod), fn), None
            except (ImportError, AttributeError) as e:
                raise InputError(f"--embedder {self.kind}: cannot load it ({e})") from None
        raise InputError(f"--embedder: expected 'gecko', 'hash' or 'module:function', got {self.kind!r}")
